#!/usr/bin/env bash
# One NVIDIA GPU and a few minutes: GPU tests, bf16 MLM tokens/s and MFU against
# Hugging Face, sharded smoke runs; the last line is one JSON object.
#   bash benchmarks/gpu_check.sh [--peak-tflops N]
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi not found"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'this torch has no CUDA device: install the CUDA build of torch')"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec python benchmarks/gpu_check.py "$@"
