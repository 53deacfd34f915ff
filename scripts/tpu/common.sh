# Sourced by the scripts in scripts/tpu/: the options they share and `run`, which only prints under --dry-run.
# shellcheck shell=bash disable=SC2034  # SHIFT and the option values are read by the sourcing script
NAME="" ZONE="" PROJECT="" DRY_RUN=0 SHIFT=0 GFLAGS=()

die() { echo "error: $*" >&2; exit 2; }

# squote WORD: WORD as the shell reads it back, single-quoted only when it needs quoting.
squote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./=:,+@%~-]+$ ]]; then printf '%s' "$1"; else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}

# run CMD...: execute it, or under --dry-run print it quoted so it can be pasted.
run() {
  if [ "$DRY_RUN" = 0 ]; then "$@"; return; fi
  local out="" word
  for word in "$@"; do out="$out $(squote "$word")"; done
  echo "${out# }"
}

# shared_opt OPT [VALUE]: take one shared option, setting SHIFT to the words used; fails on any other option.
shared_opt() {
  SHIFT=2
  case "$1" in
    --name) NAME=${2:?--name needs a value} ;;
    --zone) ZONE=${2:?--zone needs a value} ;;
    --project) PROJECT=${2:?--project needs a value} ;;
    --dry-run) DRY_RUN=1; SHIFT=1 ;;
    *) return 1 ;;
  esac
}

# gcloud_flags: check --name/--zone and set GFLAGS, the flags every gcloud call here takes.
gcloud_flags() {
  [ -n "$NAME" ] || die "--name is required"
  [ -n "$ZONE" ] || die "--zone is required"
  GFLAGS=(--zone="$ZONE")
  if [ -n "$PROJECT" ]; then GFLAGS+=(--project="$PROJECT"); fi
}
