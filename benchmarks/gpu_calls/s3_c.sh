#!/usr/bin/env bash
# Session 3, call C (one NVIDIA H200): packed 1-bit GPU kernel (tests + bench, alone on the card), then the
# gowalla frontier follow-up with the CUDA tests in the background.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
python3 -m hqgnn train --help | grep -c -- "--lr" || { echo "typer from .whl not in use"; exit 1; }
for qb in 4 0; do
  timeout 60 python3 -m hqgnn bench retrieval --items 1000000 --dim 64 --bits 1 --query-bits $qb --queries 1000 --k 20 --device cuda --json >> $OUT/retrieval_cuda.jsonl 2>> $OUT/retrieval_cuda.err
  echo "q$qb rc=$?"; tail -c 900 $OUT/retrieval_cuda.jsonl; echo
done
tail -5 $OUT/retrieval_cuda.err
(timeout 300 python3 -m pytest -v -p no:cacheprovider -p no:xdist -p no:benchmark --timeout 120 tests/ --ignore=tests/test_serve.py \
   -k "cuda or triton or graph or gpu or torch_backend or layouts or device_copy" > $OUT/pytest_cuda.log 2>&1) &
left=$(( 470 - SECONDS ))
python3 benchmarks/frontier.py --data gowalla --data-dir .gpu_data --work /tmp/fr --deadline $left --tag s3c \
  --teacher-seconds 100 --results /tmp/frontier_gowalla_s3c.json \
  --configs b1_d64_tensor_asym_cr_kd,b1_d64_tensor_asym_cr_rkd,b1_d48_asym_cr_kd,b1_d48_asym_cr_rkd,b1_d48_asym_cr_rkd_gste_d1,b1_d64_layers_asym_cr_kd,b4_d64_asym_c \
  --posthoc sign_hamming,pq8x8_adc,opq8_pq8x8_adc,sign_rowscale_asym,rabitq_q4,rabitq_q8,pq16x8_adc,opq16_pq16x8_adc,sq4,pq32x8_adc \
  > $OUT/frontier_s3c.log 2>&1
grep -v "WARNING clustering" $OUT/frontier_s3c.log | grep "^\[" | tail -40
wait; grep -E "FAILED|ERROR|passed|failed" $OUT/pytest_cuda.log | tail -15
