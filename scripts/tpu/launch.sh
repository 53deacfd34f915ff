#!/usr/bin/env bash
# Start a jaxadapt command on every worker of a TPU VM, in the background, appending to ~/logs/JOB.log there.
# On a pod slice each worker is one JAX process; jaxadapt calls jax.distributed.initialize() itself.
set -euo pipefail
usage() {
  cat <<'USAGE'
Usage: scripts/tpu/launch.sh --name NAME --zone ZONE [options] -- jaxadapt COMMAND ARGS...
       scripts/tpu/launch.sh --name NAME --zone ZONE [options] --file launch.txt

  --file FILE       run each line of FILE in turn (e.g. the launch.txt of `jaxadapt sweep --emit DIR`);
                    a failed line does not stop the next, a preempted one (exit 75) does
  --runs-root DIR   append runs_root=DIR to each command. All workers write one run dir, so on a slice of
                    several workers it is required: a bucket (gs://BUCKET/runs, read and written directly, no
                    gcsfuse), or a disk mounted on every worker at the same path (say so with --shared-fs)
  --shared-fs       --runs-root is a local path that every worker shares (NFS / Filestore mount)
  --workers N       the slice's worker count (default: asked from gcloud)
  --job NAME        the job's name: ~/logs/NAME.log, .pid, .status on each worker (default: jaxadapt)
  --internal-ips    reach the workers by their internal IPs
  --project P       the GCP project (default: gcloud's)
  --dry-run         print the gcloud commands, run nothing

Local files that the commands name by a relative path (the configs of a sweep's launch.txt, an untracked config)
are copied to the same place under ~/jaxadapt on every worker first; run it from where those paths start (the
repo root). The log gets a timestamped header per launch and per command; JOB.status holds the exit status when
the job ends (75: preempted, run it again to resume). A job still running on a worker is refused: stop.sh first.
USAGE
}
# shellcheck source=scripts/tpu/common.sh
. "$(dirname "$0")/common.sh"
FILE="" RUNS_ROOT="" SHARED=0 WORKERS="" JOB=jaxadapt CMD=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --file) FILE=${2:?--file needs a value}; shift 2 ;;
    --runs-root) RUNS_ROOT=${2:?--runs-root needs a value}; shift 2 ;;
    --shared-fs) SHARED=1; shift ;;
    --workers) WORKERS=${2:?--workers needs a value}; shift 2 ;;
    --job) JOB=${2:?--job needs a value}; shift 2 ;;
    --) shift; CMD=("$@"); break ;;
    *) shared_opt "$@" || die "unknown option $1 (see --help)"; shift "$SHIFT" ;;
  esac
done
gcloud_flags
[[ "$JOB" =~ ^[A-Za-z0-9_.-]+$ ]] || die "--job takes letters, digits, _ . -; got $JOB"
[ -z "$WORKERS" ] || [[ "$WORKERS" =~ ^[1-9][0-9]*$ ]] || die "--workers takes a count, got $WORKERS"
LINES=()
if [ -n "$FILE" ]; then
  [ ${#CMD[@]} -eq 0 ] || die "give --file or a command after --, not both"
  [ -f "$FILE" ] || die "--file $FILE not found"
  while IFS= read -r line || [ -n "$line" ]; do
    if [ -n "${line// }" ]; then LINES+=("$line"); fi
  done < "$FILE"
  [ ${#LINES[@]} -gt 0 ] || die "--file $FILE has no command"
else
  [ ${#CMD[@]} -gt 0 ] || die "no command: put it after --, e.g. -- jaxadapt train configs/x.yaml"
  LINES+=("$(quoted "${CMD[@]}")")
fi

# One run dir for all workers: a bucket, or a disk they all mount. A local path on a slice would give each worker
# its own run dir (and checkpoints that no single worker holds whole).
if [ -z "$WORKERS" ]; then
  if [ "$DRY_RUN" = 1 ]; then
    echo "# the worker count (pass --workers N to check --runs-root in a dry run):"
    quoted gcloud compute tpus tpu-vm describe "$NAME" "${GFLAGS[@]}" \
      --format='value[delimiter=","](networkEndpoints.ipAddress)'
  else
    ips=$(gcloud compute tpus tpu-vm describe "$NAME" "${GFLAGS[@]}" \
          --format='value[delimiter=","](networkEndpoints.ipAddress)') || die "cannot describe TPU VM $NAME"
    WORKERS=$(($(tr -cd ',' <<< "$ips" | wc -c) + 1))
  fi
fi
if [ "${WORKERS:-1}" -gt 1 ]; then
  case "$RUNS_ROOT" in
    "") die "$NAME has $WORKERS workers, which must write one run dir: pass --runs-root gs://BUCKET/runs (or a \
path every worker mounts, with --shared-fs)" ;;
    gs://*) ;;
    *://*) ;;  # another fsspec URL: as shared as the bucket
    *) [ "$SHARED" = 1 ] || die "--runs-root $RUNS_ROOT is a local path on each of the $WORKERS workers: use a \
bucket (gs://...), or add --shared-fs if it is a disk every worker mounts at that path" ;;
  esac
fi

# Local files named by the commands (relative paths): shipped, so a sweep's configs exist on every worker.
SHIP=()
for line in "${LINES[@]}"; do
  read -ra words <<< "$line"
  for w in "${words[@]}"; do
    if [[ "$w" != /* && "$w" != -* && "$w" != *..* && -f "$w" ]]; then SHIP+=("$w"); fi
  done
done
PRE="mkdir -p ~/logs"
if [ ${#SHIP[@]} -gt 0 ]; then
  BUNDLE=/tmp/jaxadapt-ship-$$.tgz
  run tar czf "$BUNDLE" "${SHIP[@]}"
  run gcloud compute tpus tpu-vm scp "$BUNDLE" "$NAME:jaxadapt-ship-$JOB.tgz" --worker=all "${SSHFLAGS[@]}"
  if [ "$DRY_RUN" = 0 ]; then rm -f "$BUNDLE"; fi
  PRE="$PRE && tar xzf ~/jaxadapt-ship-$JOB.tgz -C ~/jaxadapt"
fi

L="\$HOME/logs/$JOB"
# shellcheck disable=SC2016  # expanded on the worker
NOW='$(date -u +%Y-%m-%dT%H:%M:%SZ)'
# The job's own shell: it records its process group (stop.sh signals it), outlives a SIGTERM to that group (the
# trap) so that it can record the command's exit status, and stops after a preempted command (75).
SCRIPT="echo \$\$ > $L.pid; trap true TERM"
SCRIPT="$SCRIPT; echo \"===== $NOW launch.sh: job $JOB, worker \${TPU_WORKER_ID:-$WORKER_ID}, ${#LINES[@]} command(s)\""
SCRIPT="$SCRIPT; cd ~/jaxadapt && . .venv/bin/activate && export JAXADAPT_DISTRIBUTED=1 \
|| { echo 1 > $L.status; exit 1; }"
# TPU_WORKER_ID / TPU_WORKER_HOSTNAMES: `jaxadapt run` reads them to run a recipe's non-training stages on worker 0
# only (the other workers wait), without starting JAX.
SCRIPT="$SCRIPT; export TPU_WORKER_ID=\${TPU_WORKER_ID:-$WORKER_ID}"
SCRIPT="$SCRIPT; export TPU_WORKER_HOSTNAMES=\${TPU_WORKER_HOSTNAMES:-$WORKER_HOSTS}"
SCRIPT="$SCRIPT; rc=0"
for line in "${LINES[@]}"; do
  if [ -n "$RUNS_ROOT" ]; then line="$line runs_root=$(squote "$RUNS_ROOT")"; fi
  SCRIPT="$SCRIPT; echo \"== $NOW \"$(squote "$line")"
  SCRIPT="$SCRIPT; $line; s=\$?; [ \$s = 0 ] || rc=\$s"
  SCRIPT="$SCRIPT; if [ \$s = 75 ]; then echo \"== $NOW preempted (75): the commands after it are not run\"; \
echo 75 > $L.status; exit 75; fi"
done
SCRIPT="$SCRIPT; echo \"== $NOW exit \$rc\"; echo \$rc > $L.status; exit \$rc"
REMOTE="{ $PRE; } || exit 1; if [ -s $L.pid ] && kill -0 \"\$(cat $L.pid)\" 2>/dev/null; then"
REMOTE="$REMOTE echo \"error: job $JOB is still running on this worker (pid \$(cat $L.pid)): scripts/tpu/stop.sh \
--job $JOB first\" >&2; exit 3; fi"
REMOTE="$REMOTE; rm -f $L.status && : > $L.pid && setsid nohup bash -c $(squote "$SCRIPT") >> $L.log 2>&1 \
< /dev/null &"
run gcloud compute tpus tpu-vm ssh "$NAME" --worker=all "${SSHFLAGS[@]}" --command="$REMOTE"
