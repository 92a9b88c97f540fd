#!/usr/bin/env bash
# Everything that needs a GPU, in one call on a lent GPU machine (device tool): build the CUDA kernel for
# this GPU, run the test suite there (the GPU tests run instead of skipping), time the writers and the
# PyTorch CUDA comparison. Outputs go to $OUT (or ./gpu_out).
set -uo pipefail
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, cupy, sys; print(sys.version.split()[0], 'torch', torch.__version__, 'cupy', cupy.__version__)" | tee -a "$OUT/gpu.txt"
PCEDGE_BUILD_CUDA=1 python3 setup.py -q build_ext --inplace 2>&1 | grep -v "^copying\|warning" | tail -3
python3 -m pytest -q -p no:cacheprovider tests/test_masks.py tests/test_defense.py tests/runtime/test_masking.py \
  tests/runtime/test_ort_gpu.py tests/runtime/test_driver.py 2>&1 | tee "$OUT/gpu_tests.log" | tail -15
python3 benchmarks/masking.py --repeats 200 --json "$OUT/masking_gpu.json" 2>&1 | tee "$OUT/masking_gpu.txt"
python3 benchmarks/gpu_torch.py --frames 40 --json "$OUT/gpu_torch.json" 2>&1 | tee "$OUT/gpu_torch.txt"
