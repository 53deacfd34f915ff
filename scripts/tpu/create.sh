#!/usr/bin/env bash
# Create a TPU VM for jaxadapt: by default a queued resource on spot capacity, waited for until it is ACTIVE.
set -euo pipefail
usage() {
  cat <<'USAGE'
Usage: scripts/tpu/create.sh --name NAME --zone ZONE [options]

  --type TYPE       accelerator type (default v5litepod-8; a pod slice such as v5litepod-32 has several workers)
  --version V       TPU software version (default: the one for TYPE: v6e v2-alpha-tpuv6e, v5p v2-alpha-tpuv5,
                    v5litepod/v5e v2-alpha-tpuv5-lite, v4 and older tpu-ubuntu2204-base)
  --on-demand       on-demand capacity instead of spot (spot is the default: cheaper, and can be preempted;
                    jaxadapt train saves and exits 75 on SIGTERM, and babysit.sh recreates and resumes)
  --reserved        your project's reservation (not spot)
  --valid-until-duration D  give up waiting for capacity after D (e.g. 6h; queued resources only)
  --internal-ips    no external IP addresses (then reach the workers from inside their VPC: pass --internal-ips
                    to the other scripts too)
  --direct          create the TPU VM directly (fails when there is no capacity) instead of a queued resource
  --poll S          seconds between state checks while waiting (default 30)
  --no-wait         return once the queued resource is accepted, without waiting for ACTIVE
  --project P       the GCP project (default: gcloud's)
  --dry-run         print the gcloud commands, run nothing

A queued resource is waited for until ACTIVE (exit 0); FAILED or SUSPENDED ends the wait with exit 1.
USAGE
}
# shellcheck source=scripts/tpu/common.sh
. "$(dirname "$0")/common.sh"
TYPE=v5litepod-8 VERSION="" TIER=spot VALID="" DIRECT=0 POLL=30 WAIT=1
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --type) TYPE=${2:?--type needs a value}; shift 2 ;;
    --version) VERSION=${2:?--version needs a value}; shift 2 ;;
    --spot) TIER=spot; shift ;;
    --on-demand) TIER=on-demand; shift ;;
    --reserved) TIER=reserved; shift ;;
    --valid-until-duration) VALID=${2:?--valid-until-duration needs a value}; shift 2 ;;
    --direct) DIRECT=1; shift ;;
    --queued) DIRECT=0; shift ;;  # the default; kept for older command lines
    --poll) POLL=${2:?--poll needs a value}; shift 2 ;;
    --no-wait) WAIT=0; shift ;;
    *) shared_opt "$@" || die "unknown option $1 (see --help)"; shift "$SHIFT" ;;
  esac
done
gcloud_flags
if [ -z "$VERSION" ]; then
  VERSION=$(runtime_for "$TYPE") || die "no known TPU software version for --type $TYPE: pass --version"
fi
[[ "$POLL" =~ ^[0-9]+$ ]] || die "--poll takes whole seconds, got $POLL"
EXTRA=()
case "$TIER" in
  spot) EXTRA+=(--spot) ;;
  reserved) EXTRA+=(--reserved) ;;
esac
if [ "$INTERNAL" = 1 ]; then EXTRA+=(--internal-ips); fi

if [ "$DIRECT" = 1 ]; then
  [ -z "$VALID" ] || die "--valid-until-duration is for queued resources (drop --direct)"
  run gcloud compute tpus tpu-vm create "$NAME" "${GFLAGS[@]}" --accelerator-type="$TYPE" --version="$VERSION" \
    "${EXTRA[@]}"
  exit 0
fi
if [ -n "$VALID" ]; then EXTRA+=(--valid-until-duration="$VALID"); fi
run gcloud compute tpus queued-resources create "$NAME" --node-id="$NAME" "${GFLAGS[@]}" \
  --accelerator-type="$TYPE" --runtime-version="$VERSION" "${EXTRA[@]}"
[ "$WAIT" = 1 ] || exit 0
if [ "$DRY_RUN" = 1 ]; then
  echo "# then every ${POLL}s until ACTIVE (FAILED or SUSPENDED: exit 1):"
  quoted gcloud compute tpus queued-resources describe "$NAME" "${GFLAGS[@]}" --format='value(state.state)'
  exit 0
fi
last=""
while :; do
  state=$(describe_state queued)
  if [ "$state" != "$last" ]; then say "queued resource $NAME: $state"; last=$state; fi
  case "$state" in
    ACTIVE) exit 0 ;;
    FAILED|SUSPENDING|SUSPENDED|NOT_FOUND)
      echo "error: queued resource $NAME is $state:" >&2
      gcloud compute tpus queued-resources describe "$NAME" "${GFLAGS[@]}" >&2 || true
      echo "delete it (scripts/tpu/delete.sh) before creating it again" >&2
      exit 1 ;;
  esac
  sleep "$POLL"
done
