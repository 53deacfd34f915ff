#!/usr/bin/env bash
# A launched job's log from every worker (or one), each line prefixed with its worker: the cause of a pod's crash is
# often on a worker other than 0.
set -euo pipefail
usage() {
  cat <<'USAGE'
Usage: scripts/tpu/logs.sh --name NAME --zone ZONE [--worker N|all] [--job NAME] [--lines N] [--follow]
                           [--project P] [--dry-run]

  --worker N        one worker's log (default: all, each line prefixed "[worker N]")
  --job NAME        the job name given to launch.sh (default: jaxadapt)
  --lines N         the last N lines of each log (default 200)
  --follow          keep printing new lines (Ctrl-C to stop)
  --internal-ips    reach the workers by their internal IPs
USAGE
}
# shellcheck source=scripts/tpu/common.sh
. "$(dirname "$0")/common.sh"
WORKER=all JOB=jaxadapt LINES=200 FOLLOW=0
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --worker) WORKER=${2:?--worker needs a value}; shift 2 ;;
    --job) JOB=${2:?--job needs a value}; shift 2 ;;
    --lines) LINES=${2:?--lines needs a value}; shift 2 ;;
    --follow|-f) FOLLOW=1; shift ;;
    *) shared_opt "$@" || die "unknown option $1 (see --help)"; shift "$SHIFT" ;;
  esac
done
gcloud_flags
[[ "$JOB" =~ ^[A-Za-z0-9_.-]+$ ]] || die "--job takes letters, digits, _ . -; got $JOB"
[[ "$LINES" =~ ^[0-9]+$ ]] || die "--lines takes a count, got $LINES"
[[ "$WORKER" = all || "$WORKER" =~ ^[0-9]+$ ]] || die "--worker takes a number or all, got $WORKER"
TAIL="tail -n $LINES"
if [ "$FOLLOW" = 1 ]; then TAIL="$TAIL -F"; fi
REMOTE="w=$WORKER_ID; $TAIL \$HOME/logs/$JOB.log 2>&1 | sed -u \"s/^/[worker \$w] /\""
run gcloud compute tpus tpu-vm ssh "$NAME" --worker="$WORKER" "${SSHFLAGS[@]}" --command="$REMOTE"
