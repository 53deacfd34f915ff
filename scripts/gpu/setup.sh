#!/usr/bin/env bash
# .venv/ for a GPU cluster, in this checkout (on a filesystem the nodes share): Python >= 3.11 through uv and
# jax[cuda12] (or cuda13) pinned to this project's JAX version, so SLURM jobs train on the GPUs, not the CPU.
set -euo pipefail
usage() {
  cat <<'USAGE'
Usage: bash scripts/gpu/setup.sh [--cuda 12|13] [--jax-version V] [--with-tests] [--dry-run]

  --cuda 12|13       the CUDA major version of JAX's wheels (default 12; they bring their own CUDA libraries,
                     the nodes need an NVIDIA driver that supports it)
  --jax-version V    (default: the jax of this checkout's .venv; see scripts/accel-venv.sh)
  --with-tests       also the test extra
  --dry-run          print the commands, run nothing

Then check a node: srun --gpus=1 .venv/bin/python -c 'import jax; print(jax.devices())'
USAGE
}
CUDA=12 ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --cuda) CUDA=${2:?--cuda needs a value}; shift 2 ;;
    --jax-version) ARGS+=("$1" "${2:?--jax-version needs a value}"); shift 2 ;;
    --with-tests|--dry-run) ARGS+=("$1"); shift ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$CUDA" in
  12|13) ;;
  *) echo "error: --cuda takes 12 or 13, got $CUDA" >&2; exit 2 ;;
esac
exec bash "$(dirname "$0")/../accel-venv.sh" --accel "cuda$CUDA" "${ARGS[@]}"
