#!/usr/bin/env bash
# Start a jaxadapt command on every worker of a TPU VM, in the background, logging to ~/logs/JOB.log there.
# On a pod slice each worker is one JAX process; jaxadapt calls jax.distributed.initialize() itself.
set -euo pipefail
usage() {
  cat <<'USAGE'
Usage: scripts/tpu/launch.sh --name NAME --zone ZONE [options] -- jaxadapt COMMAND ARGS...
       scripts/tpu/launch.sh --name NAME --zone ZONE [options] --file launch.txt

  --file FILE       run each line of FILE in turn (e.g. the launch.txt of `jaxadapt sweep --emit`);
                    a failed line does not stop the next
  --runs-root DIR   append runs_root=DIR to each command: a dir every worker sees, since all workers write
                    one run dir and checkpoints; a bucket (gs://BUCKET/runs) is read and written directly
  --job NAME        the log's name (default: jaxadapt)
  --project P       the GCP project (default: gcloud's)
  --dry-run         print the gcloud command, run nothing
USAGE
}
# shellcheck source=scripts/tpu/common.sh
. "$(dirname "$0")/common.sh"
FILE="" RUNS_ROOT="" JOB=jaxadapt CMD=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --file) FILE=${2:?--file needs a value}; shift 2 ;;
    --runs-root) RUNS_ROOT=${2:?--runs-root needs a value}; shift 2 ;;
    --job) JOB=${2:?--job needs a value}; shift 2 ;;
    --) shift; CMD=("$@"); break ;;
    *) shared_opt "$@" || die "unknown option $1 (see --help)"; shift "$SHIFT" ;;
  esac
done
gcloud_flags
LINES=()
if [ -n "$FILE" ]; then
  [ ${#CMD[@]} -eq 0 ] || die "give --file or a command after --, not both"
  [ -f "$FILE" ] || die "--file $FILE not found"
  while IFS= read -r line || [ -n "$line" ]; do
    if [ -n "${line// }" ]; then LINES+=("$line"); fi
  done < "$FILE"
else
  [ ${#CMD[@]} -gt 0 ] || die "no command: put it after --, e.g. -- jaxadapt train configs/x.yaml"
  LINES+=("$(for w in "${CMD[@]}"; do printf '%s ' "$(squote "$w")"; done | sed 's/ $//')")
fi
# TPU_WORKER_ID / TPU_WORKER_HOSTNAMES from the VM's metadata: `jaxadapt run` reads them to run a recipe's
# non-training stages on worker 0 only (the other workers wait), without starting JAX.
MD='http://metadata.google.internal/computeMetadata/v1/instance/attributes'
SCRIPT="cd ~/jaxadapt && . .venv/bin/activate && export JAXADAPT_DISTRIBUTED=1 || exit 1"
SCRIPT="$SCRIPT; export TPU_WORKER_ID=\${TPU_WORKER_ID:-\$(curl -s -H Metadata-Flavor:Google $MD/agent-worker-number)}"
SCRIPT="$SCRIPT; export TPU_WORKER_HOSTNAMES=\${TPU_WORKER_HOSTNAMES:-\$(curl -s -H Metadata-Flavor:Google \
$MD/worker-network-endpoints | tr ',' '\\n' | awk -F: '{print \$3}' | paste -sd, -)}"
for line in "${LINES[@]}"; do
  if [ -n "$RUNS_ROOT" ]; then line="$line runs_root=$(squote "$RUNS_ROOT")"; fi
  SCRIPT="$SCRIPT; $line"
done
REMOTE="mkdir -p ~/logs && nohup bash -c $(squote "$SCRIPT") > ~/logs/$JOB.log 2>&1 < /dev/null &"
run gcloud compute tpus tpu-vm ssh "$NAME" --worker=all "${GFLAGS[@]}" --command="$REMOTE"
