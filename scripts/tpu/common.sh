# Sourced by the scripts in scripts/tpu/: the options they share, `run` (which only prints under --dry-run), the
# runtime table, and the state queries that create.sh and babysit.sh poll.
# shellcheck shell=bash disable=SC2034  # SHIFT and the option values are read by the sourcing script
NAME="" ZONE="" PROJECT="" DRY_RUN=0 SHIFT=0 INTERNAL=0 GFLAGS=() SSHFLAGS=()
TPU_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() { echo "error: $*" >&2; exit 2; }
say() { echo "[$(date -u +%Y-%m-%dT%H:%M:%SZ)] $*" >&2; }

# squote WORD: WORD as the shell reads it back, single-quoted only when it needs quoting.
squote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./=:,+@%~-]+$ ]]; then printf '%s' "$1"; else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}

# quoted WORD...: the words as one pasteable line.
quoted() {
  local out="" word
  for word in "$@"; do out="$out $(squote "$word")"; done
  echo "${out# }"
}

# run CMD...: execute it, or under --dry-run print it quoted so it can be pasted.
run() {
  if [ "$DRY_RUN" = 0 ]; then "$@"; return; fi
  quoted "$@"
}

# shared_opt OPT [VALUE]: take one shared option, setting SHIFT to the words used; fails on any other option.
shared_opt() {
  SHIFT=2
  case "$1" in
    --name) NAME=${2:?--name needs a value} ;;
    --zone) ZONE=${2:?--zone needs a value} ;;
    --project) PROJECT=${2:?--project needs a value} ;;
    --internal-ips) INTERNAL=1; SHIFT=1 ;;
    --dry-run) DRY_RUN=1; SHIFT=1 ;;
    *) return 1 ;;
  esac
}

# gcloud_flags: check --name/--zone and set GFLAGS, the flags every gcloud call here takes, and SSHFLAGS, those of
# ssh and scp (--internal-ip when the VMs have no external address: run from a machine in their VPC).
gcloud_flags() {
  [ -n "$NAME" ] || die "--name is required"
  [ -n "$ZONE" ] || die "--zone is required"
  GFLAGS=(--zone="$ZONE")
  if [ -n "$PROJECT" ]; then GFLAGS+=(--project="$PROJECT"); fi
  SSHFLAGS=("${GFLAGS[@]}")
  if [ "$INTERNAL" = 1 ]; then SSHFLAGS+=(--internal-ip); fi
}

# runtime_for TYPE: the TPU software version for an accelerator type: the table of Google's "TPU software versions"
# page for JAX and PyTorch (Ubuntu 22.04 images; setup.sh brings its own Python).
runtime_for() {
  case "$1" in
    v6e-*) echo v2-alpha-tpuv6e ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-*|v5e-*) echo v2-alpha-tpuv5-lite ;;
    v4-*|v3-*|v2-*) echo tpu-ubuntu2204-base ;;
    *) return 1 ;;
  esac
}

# describe_state KIND: the state of the queued resource (KIND=queued) or of the TPU VM (KIND=node) named NAME, as one
# word: gcloud's state, NOT_FOUND when there is none, UNKNOWN when gcloud failed otherwise (network, auth).
describe_state() {
  local out err rc=0
  err=$(mktemp)
  if [ "$1" = queued ]; then
    out=$(gcloud compute tpus queued-resources describe "$NAME" "${GFLAGS[@]}" --format='value(state.state)' \
          2>"$err") || rc=$?
  else
    out=$(gcloud compute tpus tpu-vm describe "$NAME" "${GFLAGS[@]}" --format='value(state)' 2>"$err") || rc=$?
  fi
  if [ "$rc" != 0 ]; then
    if grep -qi 'not.found' "$err"; then out=NOT_FOUND; else out=UNKNOWN; sed 's/^/  gcloud: /' "$err" >&2; fi
  fi
  rm -f "$err"
  echo "${out:-UNKNOWN}"
}

# The job that launch.sh starts on each worker keeps three files in ~/logs: JOB.log (appended), JOB.pid (its process
# group) and JOB.status (its exit status, written when it ends). job_probe JOB: the remote command that prints
# "jaxadapt-job: STATE" on each worker: the exit status, running, died (no status and no process: the VM restarted
# or the job was killed -9), none (never launched) or bare (setup.sh has not run on this VM).
job_probe() {
  local f="\$HOME/logs/$1"
  echo "if [ -f $f.status ]; then s=\$(cat $f.status); elif [ -f $f.pid ]; then" \
       "if [ ! -s $f.pid ] || kill -0 \"\$(cat $f.pid)\" 2>/dev/null; then s=running; else s=died; fi;" \
       "elif [ -x ~/jaxadapt/.venv/bin/jaxadapt ]; then s=none; else s=bare; fi; echo \"jaxadapt-job: \$s\""
}

# Remote snippets that read a worker's place in the slice from the VM's metadata server.
MD='http://metadata.google.internal/computeMetadata/v1/instance/attributes'
WORKER_ID="\$(curl -s -H Metadata-Flavor:Google $MD/agent-worker-number)"
WORKER_HOSTS="\$(curl -s -H Metadata-Flavor:Google $MD/worker-network-endpoints | tr ',' '\\n' | awk -F: '{print \$3}' \
| paste -sd, -)"
