#!/usr/bin/env bash
# Delete a TPU VM (or a queued resource and its VM). Run dirs on a shared disk or GCS are kept; ~ on the VM is not.
set -euo pipefail
usage() {
  cat <<'USAGE'
Usage: scripts/tpu/delete.sh --name NAME --zone ZONE [--queued] [--project P] [--dry-run]

  --queued          it was created with create.sh --queued
USAGE
}
# shellcheck source=scripts/tpu/common.sh
. "$(dirname "$0")/common.sh"
QUEUED=0
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --queued) QUEUED=1; shift ;;
    *) shared_opt "$@" || die "unknown option $1 (see --help)"; shift "$SHIFT" ;;
  esac
done
gcloud_flags
if [ "$QUEUED" = 1 ]; then
  run gcloud compute tpus queued-resources delete "$NAME" "${GFLAGS[@]}" --force --quiet
else
  run gcloud compute tpus tpu-vm delete "$NAME" "${GFLAGS[@]}" --quiet
fi
