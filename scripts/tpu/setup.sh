#!/usr/bin/env bash
# Put jaxadapt on every worker of a TPU VM (a copy of this checkout, or a git clone) and install it there.
set -euo pipefail
usage() {
  cat <<'USAGE'
Usage: scripts/tpu/setup.sh --name NAME --zone ZONE [options]

  --repo URL        git clone URL on the workers (default: copy this checkout's tracked and untracked,
                    not ignored, files)
  --ref REF         branch, tag or commit to check out with --repo (default: the default branch)
  --project P       the GCP project (default: gcloud's)
  --dry-run         print the commands, run nothing

Every worker gets ~/jaxadapt, runs `bash scripts/setup.sh` (the .venv) and installs jax[tpu] into it.
USAGE
}
# shellcheck source=scripts/tpu/common.sh
. "$(dirname "$0")/common.sh"
REPO="" REF=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --repo) REPO=${2:?--repo needs a value}; shift 2 ;;
    --ref) REF=${2:?--ref needs a value}; shift 2 ;;
    *) shared_opt "$@" || die "unknown option $1 (see --help)"; shift "$SHIFT" ;;
  esac
done
gcloud_flags
[ -z "$REF" ] || [ -n "$REPO" ] || die "--ref needs --repo"
INSTALL='cd ~/jaxadapt && bash scripts/setup.sh && .venv/bin/python -m pip install -q -U "jax[tpu]" -e ".[gcs]"'
if [ -n "$REPO" ]; then
  FETCH="(test -d ~/jaxadapt/.git || git clone $(printf %q "$REPO") ~/jaxadapt) && git -C ~/jaxadapt fetch -q"
  if [ -n "$REF" ]; then FETCH="$FETCH && git -C ~/jaxadapt checkout -q $(printf %q "$REF")"; fi
else
  TARBALL=/tmp/jaxadapt-src-$$.tgz
  cd "$(dirname "$0")/../.."
  run bash -c "git ls-files -co --exclude-standard -z | tar czf $TARBALL --null -T -"
  run gcloud compute tpus tpu-vm scp "$TARBALL" "$NAME:jaxadapt-src.tgz" --worker=all "${GFLAGS[@]}"
  FETCH='mkdir -p ~/jaxadapt && tar xzf ~/jaxadapt-src.tgz -C ~/jaxadapt'
fi
run gcloud compute tpus tpu-vm ssh "$NAME" --worker=all "${GFLAGS[@]}" --command="$FETCH && $INSTALL"
