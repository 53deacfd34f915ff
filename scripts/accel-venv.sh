#!/usr/bin/env bash
# .venv/ for an accelerator machine (each TPU VM worker, a GPU cluster): Python >= 3.11 through uv (TPU VM images
# have Ubuntu 22.04's 3.10), jax[ACCEL] pinned to the project's JAX version, and jaxadapt (editable, gcs extra).
# No torch unless --with-tests. scripts/tpu/setup.sh runs it on every worker; scripts/gpu/setup.sh runs it here.
set -euo pipefail
usage() {
  cat <<'USAGE'
Usage: bash scripts/accel-venv.sh [--accel tpu|cuda12|cuda13|cpu] [--jax-version V] [--with-tests] [--dry-run]
       bash scripts/accel-venv.sh --print-jax-version

  --accel A          which JAX build: jax[tpu], jax[cuda12], jax[cuda13] or plain jax (default tpu)
  --jax-version V    the JAX version to pin (default: $JAXADAPT_JAX_VERSION, else the version installed in this
                     checkout's .venv, which the tests ran with): a recreated machine gets the same JAX
  --python V         the Python version for a new .venv (default 3.11); an existing .venv on >= 3.11 is kept
  --with-tests       also the test extra (pytest, torch, ...)
  --print-jax-version  print the version --jax-version defaults to, and exit
  --dry-run          print the commands, run nothing
USAGE
}
die() { echo "error: $*" >&2; exit 2; }
ACCEL=tpu JAX_V=${JAXADAPT_JAX_VERSION:-} PYV=3.11 TESTS=0 PRINT=0 DRY_RUN=0
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --accel) ACCEL=${2:?--accel needs a value}; shift 2 ;;
    --jax-version) JAX_V=${2:?--jax-version needs a value}; shift 2 ;;
    --python) PYV=${2:?--python needs a value}; shift 2 ;;
    --with-tests) TESTS=1; shift ;;
    --print-jax-version) PRINT=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
cd "$(dirname "$0")/.."
run() {  # under --dry-run: print it, each word single-quoted where the shell needs it
  if [ "$DRY_RUN" = 0 ]; then "$@"; return; fi
  local out="" w
  for w in "$@"; do
    if [[ "$w" =~ ^[A-Za-z0-9_./=:,+@%-]+$ ]]; then out="$out $w"; else out="$out '${w//\'/\'\\\'\'}'"; fi
  done
  echo "${out# }"
}

# The project's JAX version: the one place it is decided (scripts/tpu/setup.sh and babysit.sh ask here too).
if [ -z "$JAX_V" ] && [ -x .venv/bin/python ]; then
  JAX_V=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("jax"))' 2>/dev/null || true)
fi
[ -n "$JAX_V" ] || die "no JAX version: this checkout has no .venv with jax (bash scripts/setup.sh makes one); \
pass --jax-version V"
[[ "$JAX_V" =~ ^[0-9]+(\.[0-9]+)*$ ]] || die "--jax-version must look like 0.10.2, got $JAX_V"
if [ "$PRINT" = 1 ]; then echo "$JAX_V"; exit 0; fi
case "$ACCEL" in
  tpu|cuda12|cuda13) JAX_SPEC="jax[$ACCEL]==$JAX_V" ;;
  cpu) JAX_SPEC="jax==$JAX_V" ;;
  *) die "--accel must be tpu, cuda12, cuda13 or cpu, got $ACCEL" ;;
esac

export PATH="$HOME/.local/bin:$PATH"  # where both ways below put uv
if ! command -v uv >/dev/null; then
  run python3 -m pip install --user -q uv || run sh -c 'curl -LsSf https://astral.sh/uv/install.sh | sh'
fi
if ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  run rm -rf .venv  # none, or one on an older Python (an image's python3)
  run uv venv --seed --python "$PYV" .venv  # uv fetches that Python when the machine lacks it
fi
EXTRAS=gcs
if [ "$TESTS" = 1 ]; then EXTRAS=gcs,test; fi
run uv pip install --python .venv/bin/python -q -e ".[$EXTRAS]" "$JAX_SPEC"
run .venv/bin/python -c 'import jax, jaxadapt; print("jaxadapt ready: jax", jax.__version__)'
