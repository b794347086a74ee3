#!/usr/bin/env bash
# Session 7, call D (one NVIDIA H200; the session's last ~320 s of device time): after the two torch searchers
# (kernels_gpu / kernels_asym_gpu) moved their shared exclusion handling, chunked exact top-k and float32
# rounding into index/chunked.py, the CUDA tests of both searchers on the card, and the asymmetric packed
# kernel at 12 B (variants 1 = threshold over every group, 12 = the default first quarter) with torch bf16 in
# the same run, as in calls s6a / s6c.
set -u
source benchmarks/gpu_calls/device_env.sh
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_index.py tests/test_index_asym.py tests/test_code_formats.py \
  -k "cuda" 2>&1 | tail -3
timeout 90 python3 benchmarks/asym_gpu_tiles.py --items 1000000 --dim 64 --queries 10000 --k 20 --value-dtype float16 \
  --variants 1,12 --out $OUT/asym_gpu_tiles_s7d.json 2>&1 | cut -c1-260 | tail -3
