#!/usr/bin/env bash
# Keep one run going on a spot (or any) TPU VM until it finishes: watch the TPU's state and the job's, and when the
# TPU is lost (PREEMPTED, SUSPENDED, FAILED, deleted) delete it, create it again, set it up and launch the same
# commands, which resume from the run dir's last checkpoint. Ends 0 when the job exits 0 on every worker.
set -euo pipefail
usage() {
  cat <<'USAGE'
Usage: scripts/tpu/babysit.sh --name NAME --zone ZONE [options] -- jaxadapt COMMAND ARGS...
       scripts/tpu/babysit.sh --name NAME --zone ZONE [options] --file launch.txt

Passed on to create.sh:  --type T  --version V  --on-demand  --reserved  --valid-until-duration D  --direct
Passed on to setup.sh:   --repo URL  --ref REF  --jax-version V (default: asked once, so every recreated VM gets the
                         same JAX)  --with-tests
Passed on to launch.sh:  --runs-root DIR (a bucket, gs://...: the run must outlive the VM)  --shared-fs
                         --job NAME  --file FILE | -- COMMAND
Shared:                  --project P  --internal-ips
Its own:
  --poll S              seconds between checks (default 60)
  --max-recoveries N    give up (exit 1) after N recreations or relaunches (default 20)
  --dry-run             print what it polls and the commands of one recovery, run nothing

Start it on a machine that stays up (a small VM, in tmux); it may be started before the TPU exists, or after
create/setup/launch. Each check: the TPU's state, then `jaxadapt-job:` of every worker (launch.sh's JOB.status):
  TPU lost                    delete.sh, create.sh (waits for ACTIVE), setup.sh, launch.sh
  job running                 nothing
  job exited 0 everywhere     done: exit 0
  job exited 75 (preempted)   wait one check for the TPU's state to follow; if the TPU stays up, relaunch
  job died (VM restarted)     stop.sh, launch.sh
  never launched / not set up launch.sh / setup.sh and launch.sh
  job exited otherwise        the same wait; then exit with its status (see logs.sh): a crash is not retried
USAGE
}
# shellcheck source=scripts/tpu/common.sh
. "$(dirname "$0")/common.sh"
CREATE=() SETUP=() LAUNCH=() DIRECT=0 JOB=jaxadapt JAX_V="" POLL=60 MAX=20 CMD=() HAVE_CMD=0
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --type|--version|--valid-until-duration) CREATE+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
    --on-demand|--reserved|--spot) CREATE+=("$1"); shift ;;
    --direct) DIRECT=1; shift ;;
    --repo|--ref) SETUP+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
    --with-tests) SETUP+=("$1"); shift ;;
    --jax-version) JAX_V=${2:?--jax-version needs a value}; shift 2 ;;
    --runs-root|--file) LAUNCH+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
    --shared-fs) LAUNCH+=("$1"); shift ;;
    --job) JOB=${2:?--job needs a value}; shift 2 ;;
    --poll) POLL=${2:?--poll needs a value}; shift 2 ;;
    --max-recoveries) MAX=${2:?--max-recoveries needs a value}; shift 2 ;;
    --) shift; CMD=("$@"); HAVE_CMD=1; break ;;
    *) shared_opt "$@" || die "unknown option $1 (see --help)"; shift "$SHIFT" ;;
  esac
done
gcloud_flags
[[ "$POLL" =~ ^[0-9]+$ ]] || die "--poll takes whole seconds, got $POLL"
[[ "$MAX" =~ ^[0-9]+$ ]] || die "--max-recoveries takes a count, got $MAX"
[[ "$JOB" =~ ^[A-Za-z0-9_.-]+$ ]] || die "--job takes letters, digits, _ . -; got $JOB"
if [ "$HAVE_CMD" = 1 ]; then LAUNCH+=(-- "${CMD[@]}"); fi
[[ " ${LAUNCH[*]} " == *" --file "* || "$HAVE_CMD" = 1 ]] || die "no command: --file FILE or -- jaxadapt COMMAND ..."
if [ -z "$JAX_V" ]; then JAX_V=$(bash "$TPU_DIR/../accel-venv.sh" --print-jax-version); fi

COMMON=(--name "$NAME" --zone "$ZONE")
if [ -n "$PROJECT" ]; then COMMON+=(--project "$PROJECT"); fi
if [ "$INTERNAL" = 1 ]; then COMMON+=(--internal-ips); fi
KIND=()
if [ "$DIRECT" = 1 ]; then KIND=(--direct); fi
DRY=()
if [ "$DRY_RUN" = 1 ]; then DRY=(--dry-run); fi
do_delete() { "$TPU_DIR/delete.sh" "${COMMON[@]}" "${KIND[@]}" "${DRY[@]}"; }
do_create() { "$TPU_DIR/create.sh" "${COMMON[@]}" "${KIND[@]}" "${CREATE[@]}" --poll "$POLL" "${DRY[@]}"; }
do_setup() { "$TPU_DIR/setup.sh" "${COMMON[@]}" --jax-version "$JAX_V" "${SETUP[@]}" "${DRY[@]}"; }
do_stop() { "$TPU_DIR/stop.sh" "${COMMON[@]}" --job "$JOB" "${DRY[@]}"; }
do_launch() { "$TPU_DIR/launch.sh" "${COMMON[@]}" --job "$JOB" "${DRY[@]}" "${LAUNCH[@]}"; }
PROBE=(gcloud compute tpus tpu-vm ssh "$NAME" --worker=all "${SSHFLAGS[@]}" --command="$(job_probe "$JOB")")

if [ "$DRY_RUN" = 1 ]; then
  echo "# every ${POLL}s, the TPU's state:"
  if [ "$DIRECT" = 0 ]; then
    quoted gcloud compute tpus queued-resources describe "$NAME" "${GFLAGS[@]}" --format='value(state.state)'
  fi
  quoted gcloud compute tpus tpu-vm describe "$NAME" "${GFLAGS[@]}" --format='value(state)'
  echo "# and the job's on every worker:"
  quoted "${PROBE[@]}"
  echo "# when the TPU is lost:"
  do_delete; do_create; do_setup; do_launch
  echo "# when the job died on a TPU that is up:"
  do_stop; do_launch
  exit 0
fi

# health: set HEALTH (up, waiting, lost or unknown) and STATE (gcloud's words) from the TPU's state.
health() {
  local q="" n
  if [ "$DIRECT" = 0 ]; then
    q=$(describe_state queued)
    case "$q" in
      ACTIVE) ;;
      WAITING_FOR_RESOURCES|PROVISIONING|CREATING|ACCEPTED|DELETING) HEALTH=waiting STATE=$q; return ;;
      FAILED|SUSPENDING|SUSPENDED|NOT_FOUND) HEALTH=lost STATE=$q; return ;;
      *) HEALTH=unknown STATE=$q; return ;;
    esac
  fi
  n=$(describe_state node)
  STATE="${q:+$q/}$n"
  case "$n" in
    READY) HEALTH=up ;;
    PREEMPTED|TERMINATED|STOPPED|STOPPING|NOT_FOUND) HEALTH=lost ;;
    CREATING|STARTING|RESTARTING|REPAIRING|REIMAGING) HEALTH=waiting ;;
    *) HEALTH=unknown ;;
  esac
}

# job_state: one word for the job over all workers: running, bare, none, died, 75, another status, 0 (all done),
# or unknown (ssh failed).
job_state() {
  local out states s
  out=$("${PROBE[@]}" 2>/dev/null) || { echo unknown; return; }
  states=$(sed -n 's/.*jaxadapt-job: *\([A-Za-z0-9]*\).*/\1/p' <<< "$out")
  if [ -z "$states" ]; then echo unknown; return; fi
  for s in running bare none died 75; do
    if grep -qx "$s" <<< "$states"; then echo "$s"; return; fi
  done
  s=$(grep -vx 0 <<< "$states" | head -n 1 || true)
  echo "${s:-0}"
}

recoveries=0
recover() {  # recover WHAT: count one recovery, or give up
  recoveries=$((recoveries + 1))
  if [ "$recoveries" -gt "$MAX" ]; then say "giving up after $MAX recoveries (--max-recoveries)"; exit 1; fi
  say "$1 (recovery $recoveries of $MAX)"
}

say "babysitting job $JOB on $NAME (jax $JAX_V), every ${POLL}s"
recheck=0 last=""
while :; do
  health
  if [ "$HEALTH" != up ] && [ "$STATE" != "$last" ]; then say "TPU $NAME: $STATE"; fi
  last=$STATE
  case "$HEALTH" in
    lost)
      recover "TPU $NAME is $STATE: recreating it"
      if [ "$STATE" != NOT_FOUND ]; then do_delete || say "delete failed; trying to create all the same"; fi
      if do_create && do_setup && do_launch; then say "relaunched job $JOB"; else say "recreating failed; retrying"; fi
      recheck=0 ;;
    up)
      job=$(job_state)
      case "$job" in
        running|unknown) recheck=0 ;;
        0) say "job $JOB finished (exit 0 on every worker)"; exit 0 ;;
        75)
          if [ "$recheck" = 0 ]; then
            say "job $JOB was preempted (exit 75); waiting one check for the TPU's state"; recheck=1
          else
            recover "job $JOB exited 75 but $NAME is still up: relaunching"
            do_stop || true; do_launch || say "launch failed; retrying"; recheck=0
          fi ;;
        died) recover "job $JOB is gone without an exit status: relaunching"; do_stop || true
              do_launch || say "launch failed; retrying" ;;
        none) recover "job $JOB was never launched on $NAME: launching"; do_launch || say "launch failed; retrying" ;;
        bare) recover "$NAME is not set up: setting up and launching"
              if do_setup && do_launch; then :; else say "setup or launch failed; retrying"; fi ;;
        *)
          # A VM being preempted can end the job with another status (a recipe's runner: 2) before its state
          # changes: one more check first.
          if [ "$recheck" = 0 ]; then
            say "job $JOB exited $job; checking the TPU once more"; recheck=1
          else
            say "job $JOB failed (exit $job); its logs: scripts/tpu/logs.sh --name $NAME --zone $ZONE --job $JOB"
            if [[ "$job" =~ ^[0-9]+$ ]] && [ "$job" -lt 256 ]; then exit "$job"; fi
            exit 1
          fi ;;
      esac ;;
  esac
  sleep "$POLL"
done
