#!/usr/bin/env bash
# Session 3, call B (one NVIDIA H200): the CUDA test cases (in the background) and the gowalla frontier follow-up.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
python3 -m hqgnn train --help | grep -c -- "--lr" || { echo "typer from .whl not in use"; exit 1; }
(timeout 400 python3 -m pytest -v -p no:cacheprovider -p no:xdist -p no:benchmark --timeout 120 tests/ \
   -k "cuda or triton or graph or gpu or torch_backend" > $OUT/pytest_cuda.log 2>&1) &
left=$(( 450 - SECONDS ))
python3 benchmarks/frontier.py --data gowalla --data-dir .gpu_data --work /tmp/fr --deadline $left --tag s3b \
  --teacher-seconds 110 --results /tmp/frontier_gowalla_s3b.json \
  --configs b1_d64_tensor_asym_cr_kd,b1_d64_tensor_asym_cr_rkd,b1_d48_asym_cr_kd,b1_d48_asym_cr_rkd,b1_d48_asym_cr_kd_gste_d1,b1_d48_asym_cr_rkd_gste_d1,b1_d64_layers_asym_cr_kd,b4_d64_asym_c \
  --posthoc sign_hamming,pq8x8_adc,opq8_pq8x8_adc,sign_rowscale_asym,itq_sign_asym,rabitq_q4,rabitq_q8,pq16x8_adc,opq16_pq16x8_adc,sq4,pq32x8_adc \
  > $OUT/frontier_s3b.log 2>&1
grep -v "WARNING clustering" $OUT/frontier_s3b.log | tail -45
wait; grep -E "FAILED|ERROR|passed|failed" $OUT/pytest_cuda.log | tail -15
