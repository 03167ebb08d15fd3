#!/usr/bin/env bash
# One GPU check, one summary line (details: benchmarks/gpu/README.md, benchmarks/gpu/check.py).
#   benchmarks/gpu/check.sh              # a machine with one CUDA GPU and PyTorch; no internet needed
#   benchmarks/gpu/check.sh --dry-run    # any CPU machine: tiny model, the CUDA steps skipped
# Packages of wheels.txt that this Python lacks (or has at another version) are installed from
# benchmarks/gpu/wheels/ into a private folder for this run only; the machine's environment is not changed.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
WORK="${GPU_CHECK_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}"
export PREFDISTILL_ROOT="$WORK" PREFDISTILL_CACHE="$WORK/cache" HF_HOME="$WORK/hf"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled
export TOKENIZERS_PARALLELISM=false TORCH_EXTENSIONS_DIR="$WORK/torch_extensions" PYTHONUNBUFFERED=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

missing="$("$PYTHON" benchmarks/gpu/wheels.py missing)"
if [ -n "$missing" ]; then
  if [[ " $* " == *" --dry-run "* ]]; then
    echo "gpu_check: not installed at the pinned versions (fine for a dry run): $missing" >&2
  else
    [ -d benchmarks/gpu/wheels ] || { echo "gpu_check: missing $missing and no benchmarks/gpu/wheels/ (see benchmarks/gpu/README.md)" >&2; exit 2; }
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --find-links benchmarks/gpu/wheels \
      --target "$WORK/site" $missing
    export PYTHONPATH="$WORK/site:$PYTHONPATH"
  fi
fi
exec "$PYTHON" benchmarks/gpu/check.py "$@"
