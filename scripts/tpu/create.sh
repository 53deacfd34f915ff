#!/usr/bin/env bash
# Create a TPU VM (or a queued resource, which waits for capacity) for jaxadapt.
set -euo pipefail
usage() {
  cat <<'USAGE'
Usage: scripts/tpu/create.sh --name NAME --zone ZONE [options]

  --type TYPE       accelerator type (default v5litepod-8; a pod slice such as v5litepod-32 has several workers)
  --version V       TPU software version (default v2-alpha-tpuv5-lite)
  --spot            spot capacity (cheaper, can be preempted: jaxadapt train saves and exits on SIGTERM)
  --queued          a queued resource: waits for capacity instead of failing when there is none
  --project P       the GCP project (default: gcloud's)
  --dry-run         print the gcloud command, run nothing
USAGE
}
# shellcheck source=scripts/tpu/common.sh
. "$(dirname "$0")/common.sh"
TYPE=v5litepod-8 VERSION=v2-alpha-tpuv5-lite SPOT=0 QUEUED=0
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --type) TYPE=${2:?--type needs a value}; shift 2 ;;
    --version) VERSION=${2:?--version needs a value}; shift 2 ;;
    --spot) SPOT=1; shift ;;
    --queued) QUEUED=1; shift ;;
    *) shared_opt "$@" || die "unknown option $1 (see --help)"; shift "$SHIFT" ;;
  esac
done
gcloud_flags
EXTRA=()
if [ "$SPOT" = 1 ]; then EXTRA+=(--spot); fi
if [ "$QUEUED" = 1 ]; then
  run gcloud compute tpus queued-resources create "$NAME" --node-id="$NAME" "${GFLAGS[@]}" \
    --accelerator-type="$TYPE" --runtime-version="$VERSION" "${EXTRA[@]}"
else
  run gcloud compute tpus tpu-vm create "$NAME" "${GFLAGS[@]}" --accelerator-type="$TYPE" --version="$VERSION" \
    "${EXTRA[@]}"
fi
