#!/usr/bin/env bash
# Every GPU measurement of the platform in one command, on a GPU machine (e.g. the lent H100).
# Needs Ray there: build the wheels once on a machine with a package index, in the project root:
#   bash ../shared/gpu/ray-wheels.sh && echo /.whl/ >> .git/info/exclude
# then, on the GPU machine, from the project root (with .whl/ carried along):
#   bash benchmarks/gpu_run.sh [OUT_DIR]
# Writes OUT_DIR/gpu-*.txt (default benchmarks/raw/DATE-gpu-*.txt); figures go to benchmarks/RESULTS.md.
set -uo pipefail
out=${1:-benchmarks/raw}
day=$(date +%F)
mkdir -p "$out"
if ! python3 -c 'import ray' 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/$day-gpu-device.txt"
python3 -m pytest -q -m gpu tests/test_gpu.py 2>&1 | tail -20 | tee "$out/$day-gpu-tests.txt"
python3 benchmarks/gpu_training.py --quick 2>&1 | tee "$out/$day-gpu-training.txt"
python3 benchmarks/gpu_end_to_end.py --model resnet18 2>&1 | tail -12 | tee "$out/$day-gpu-e2e-resnet18.txt"
python3 benchmarks/gpu_end_to_end.py --model resnet50 --augment-in trainer 2>&1 | tail -12 | tee "$out/$day-gpu-e2e-resnet50.txt"
python3 benchmarks/gpu_sweep_packing.py 2>&1 | tail -12 | tee "$out/$day-gpu-packing.txt"
