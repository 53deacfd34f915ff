#!/usr/bin/env bash
# Put jaxadapt on every worker of a TPU VM (a copy of this checkout, or a git ref) and install it there: Python 3.11
# through uv and jax[tpu] pinned to this project's JAX version (scripts/accel-venv.sh). Safe to run again.
set -euo pipefail
usage() {
  cat <<'USAGE'
Usage: scripts/tpu/setup.sh --name NAME --zone ZONE [options]

  --repo URL        git clone URL on the workers (default: copy this checkout's tracked and untracked,
                    not ignored, files)
  --ref REF         branch, tag or commit to check out with --repo (default: the remote's default branch);
                    fetched and checked out on every run, also where an earlier run cloned
  --jax-version V   the jax[tpu] version (default: the jax of this checkout's .venv; see scripts/accel-venv.sh)
  --with-tests      also install the test extra (pytest, torch: large) on the workers
  --internal-ips    reach the workers by their internal IPs (VMs created with create.sh --internal-ips)
  --project P       the GCP project (default: gcloud's)
  --dry-run         print the commands, run nothing

Every worker gets ~/jaxadapt with its .venv (Python 3.11, jax[tpu]==V, jaxadapt[gcs]); no torch unless --with-tests.
USAGE
}
# shellcheck source=scripts/tpu/common.sh
. "$(dirname "$0")/common.sh"
REPO="" REF="" JAX_V="" TESTS=0
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --repo) REPO=${2:?--repo needs a value}; shift 2 ;;
    --ref) REF=${2:?--ref needs a value}; shift 2 ;;
    --jax-version) JAX_V=${2:?--jax-version needs a value}; shift 2 ;;
    --with-tests) TESTS=1; shift ;;
    *) shared_opt "$@" || die "unknown option $1 (see --help)"; shift "$SHIFT" ;;
  esac
done
gcloud_flags
[ -z "$REF" ] || [ -n "$REPO" ] || die "--ref needs --repo"
cd "$TPU_DIR/../.."
if [ -z "$JAX_V" ]; then JAX_V=$(bash scripts/accel-venv.sh --print-jax-version); fi
INSTALL="cd ~/jaxadapt && bash scripts/accel-venv.sh --accel tpu --jax-version $(squote "$JAX_V")"
if [ "$TESTS" = 1 ]; then INSTALL="$INSTALL --with-tests"; fi
if [ -n "$REPO" ]; then
  # A dir that is not a clone (an earlier copy) is replaced; the ref is fetched each time, so a re-run moves to it.
  FETCH="if [ ! -d ~/jaxadapt/.git ]; then rm -rf ~/jaxadapt && git clone -q $(squote "$REPO") ~/jaxadapt; fi"
  FETCH="$FETCH && git -C ~/jaxadapt remote set-url origin $(squote "$REPO")"
  FETCH="$FETCH && git -C ~/jaxadapt fetch -q origin $(squote "${REF:-HEAD}")"
  FETCH="$FETCH && git -C ~/jaxadapt checkout -q -f --detach FETCH_HEAD"
else
  TARBALL=/tmp/jaxadapt-src-$$.tgz
  run bash -c "git ls-files -co --exclude-standard -z | tar czf $TARBALL --null -T -"
  run gcloud compute tpus tpu-vm scp "$TARBALL" "$NAME:jaxadapt-src.tgz" --worker=all "${SSHFLAGS[@]}"
  if [ "$DRY_RUN" = 0 ]; then rm -f "$TARBALL"; fi
  FETCH='mkdir -p ~/jaxadapt && tar xzf ~/jaxadapt-src.tgz -C ~/jaxadapt'
fi
run gcloud compute tpus tpu-vm ssh "$NAME" --worker=all "${SSHFLAGS[@]}" --command="$FETCH && $INSTALL"
