#!/usr/bin/env bash
# The GPU check: on a machine with one CUDA GPU, in under 10 minutes,
#   1. create (or reuse) the GPU environment .venv-gpu (SGLang pins its own torch and transformers),
#   2. run the gpu-marked tests (SGLang serving the engine and the GRPO rollouts),
#   3. measure SFT tokens/s and peak memory for the t4 and gpu presets, and the engine in-process
#      against SGLang (tokens/s and their ratio), printed as one table (benchmarks/gpu_bench.py).
# Usage: bash benchmarks/gpu_check.sh            (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-gpu}
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi >/dev/null 2>&1; then
  echo "gpu_check: no CUDA GPU here (nvidia-smi fails); nothing to measure" >&2
  exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet -e '.[gpu,dev]'
fi
"$VENV/bin/python" -c "import torch, sglang, transformers; print('torch', torch.__version__, '| sglang', sglang.__version__, '| transformers', transformers.__version__)"
echo "== gpu-marked tests"
timeout 300 "$VENV/bin/python" -m pytest -q -m gpu tests || echo "gpu tests FAILED (see above)"
echo "== measurements ($(date -u +%Y-%m-%d))"
timeout 300 "$VENV/bin/python" benchmarks/gpu_bench.py --presets t4 gpu --steps 20 --problems 64
