#!/usr/bin/env bash
# Stop a launched job on every worker of a TPU VM and clear what a crashed job leaves behind, so that launch.sh can
# start again: SIGTERM to the job's process group (train saves and exits 75), SIGKILL after --grace seconds, then
# libtpu's lockfile (/tmp/libtpu_lockfile), which otherwise makes the next process find the TPU "in use".
set -euo pipefail
usage() {
  cat <<'USAGE'
Usage: scripts/tpu/stop.sh --name NAME --zone ZONE [--job NAME] [--grace S] [--project P] [--dry-run]

  --job NAME        the job name given to launch.sh (default: jaxadapt)
  --grace S         seconds to wait for a checkpoint after SIGTERM before SIGKILL (default 120)
  --internal-ips    reach the workers by their internal IPs

Stop babysit.sh first if it watches this job: it would relaunch a stopped job.
USAGE
}
# shellcheck source=scripts/tpu/common.sh
. "$(dirname "$0")/common.sh"
JOB=jaxadapt GRACE=120
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --job) JOB=${2:?--job needs a value}; shift 2 ;;
    --grace) GRACE=${2:?--grace needs a value}; shift 2 ;;
    *) shared_opt "$@" || die "unknown option $1 (see --help)"; shift "$SHIFT" ;;
  esac
done
gcloud_flags
[[ "$JOB" =~ ^[A-Za-z0-9_.-]+$ ]] || die "--job takes letters, digits, _ . -; got $JOB"
[[ "$GRACE" =~ ^[0-9]+$ ]] || die "--grace takes whole seconds, got $GRACE"
P="\$HOME/logs/$JOB.pid"
REMOTE="w=$WORKER_ID; p=\$(cat $P 2>/dev/null || true)"
REMOTE="$REMOTE; if [ -n \"\$p\" ] && kill -0 -- -\$p 2>/dev/null; then kill -TERM -- -\$p"
REMOTE="$REMOTE; i=0; while [ \$i -lt $GRACE ] && kill -0 -- -\$p 2>/dev/null; do sleep 1; i=\$((i+1)); done"
REMOTE="$REMOTE; if kill -KILL -- -\$p 2>/dev/null; then echo \"worker \$w: killed job $JOB (no exit after ${GRACE}s)\""
REMOTE="$REMOTE; else echo \"worker \$w: job $JOB stopped\"; fi; else echo \"worker \$w: job $JOB not running\"; fi"
REMOTE="$REMOTE; if [ -e /tmp/libtpu_lockfile ]; then rm -f /tmp/libtpu_lockfile 2>/dev/null \
|| sudo -n rm -f /tmp/libtpu_lockfile; echo \"worker \$w: removed /tmp/libtpu_lockfile\"; fi"
run gcloud compute tpus tpu-vm ssh "$NAME" --worker=all "${SSHFLAGS[@]}" --command="$REMOTE"
