#!/usr/bin/env bash
# Submit a jaxadapt command as a multi-node SLURM GPU job: one task per GPU (see job.sbatch).
set -euo pipefail
usage() {
  cat <<'USAGE'
Usage: scripts/gpu/submit.sh [options] -- jaxadapt COMMAND ARGS...

  --nodes N           nodes (default 1)
  --gpus-per-node G   GPUs per node, one task (one JAX process) each (default 8)
  --partition P       SLURM partition (default: the cluster's)
  --time T            time limit, e.g. 24:00:00 (default: the partition's)
  --job-name NAME     (default jaxadapt); the log is logs/NAME-JOBID.out
  --dry-run           print the sbatch command, submit nothing

The run dir (runs_root) must be on a filesystem every node sees (or a gs:// bucket). The job requeues itself when
preempted or 120 s before its time limit (jaxadapt saves and exits 75) and resumes; see job.sbatch. Runs from any
directory: the job runs in this checkout, whose .venv scripts/gpu/setup.sh makes (jax[cuda12]).
USAGE
}
NODES=1 GPUS=8 PARTITION="" TIME="" JOB=jaxadapt DRY_RUN=0 CMD=()
die() { echo "error: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --nodes) NODES=${2:?--nodes needs a value}; shift 2 ;;
    --gpus-per-node) GPUS=${2:?--gpus-per-node needs a value}; shift 2 ;;
    --partition) PARTITION=${2:?--partition needs a value}; shift 2 ;;
    --time) TIME=${2:?--time needs a value}; shift 2 ;;
    --job-name) JOB=${2:?--job-name needs a value}; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; CMD=("$@"); break ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ ${#CMD[@]} -gt 0 ] || die "no command: put it after --, e.g. -- jaxadapt train configs/x.yaml"
[ "${CMD[0]}" = jaxadapt ] || die "the command must start with jaxadapt, got ${CMD[0]}"
REPO=$(cd "$(dirname "$0")/../.." && pwd)
ARGS=(--nodes="$NODES" --ntasks-per-node="$GPUS" --gpus-per-node="$GPUS" --job-name="$JOB"
      --chdir="$REPO" --output="logs/%x-%j.out")
if [ -n "$PARTITION" ]; then ARGS+=(--partition="$PARTITION"); fi
if [ -n "$TIME" ]; then ARGS+=(--time="$TIME"); fi
SBATCH=(sbatch "${ARGS[@]}" "$REPO/scripts/gpu/job.sbatch" "${CMD[@]:1}")
if [ "$DRY_RUN" = 1 ]; then
  printf '%q ' "${SBATCH[@]}" | sed 's/ $//'; echo
else
  mkdir -p "$REPO/logs"  # the --output dir must exist when the job starts
  "${SBATCH[@]}"
fi
