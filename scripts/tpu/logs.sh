#!/usr/bin/env bash
# Follow a launched job's log on one worker (worker 0 logs the metrics; the others mostly repeat start-up).
set -euo pipefail
usage() {
  cat <<'USAGE'
Usage: scripts/tpu/logs.sh --name NAME --zone ZONE [--worker N] [--job NAME] [--project P] [--dry-run]

  --worker N        which worker's log (default 0)
  --job NAME        the job name given to launch.sh (default: jaxadapt)
USAGE
}
# shellcheck source=scripts/tpu/common.sh
. "$(dirname "$0")/common.sh"
WORKER=0 JOB=jaxadapt
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --worker) WORKER=${2:?--worker needs a value}; shift 2 ;;
    --job) JOB=${2:?--job needs a value}; shift 2 ;;
    *) shared_opt "$@" || die "unknown option $1 (see --help)"; shift "$SHIFT" ;;
  esac
done
gcloud_flags
run gcloud compute tpus tpu-vm ssh "$NAME" --worker="$WORKER" "${GFLAGS[@]}" --command="tail -n 200 -F ~/logs/$JOB.log"
