#!/usr/bin/env bash
# Delete a TPU VM (by default the queued resource of create.sh, with its VM). Run dirs in a bucket or on a shared
# disk are kept; ~ on the VM is not.
set -euo pipefail
usage() {
  cat <<'USAGE'
Usage: scripts/tpu/delete.sh --name NAME --zone ZONE [--direct] [--project P] [--dry-run]

  --direct          it was created with create.sh --direct (a TPU VM without a queued resource)
USAGE
}
# shellcheck source=scripts/tpu/common.sh
. "$(dirname "$0")/common.sh"
DIRECT=0
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --direct) DIRECT=1; shift ;;
    --queued) DIRECT=0; shift ;;  # the default; kept for older command lines
    *) shared_opt "$@" || die "unknown option $1 (see --help)"; shift "$SHIFT" ;;
  esac
done
gcloud_flags
if [ "$DIRECT" = 1 ]; then
  run gcloud compute tpus tpu-vm delete "$NAME" "${GFLAGS[@]}" --quiet
else
  run gcloud compute tpus queued-resources delete "$NAME" "${GFLAGS[@]}" --force --quiet
fi
