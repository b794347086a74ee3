#!/usr/bin/env bash
# Session 3, call A (one NVIDIA H200): CUDA tests, GPU retrieval bench, gowalla frontier follow-up (8 B).
# Run from the repo root on the GPU machine, with .whl (tomli-w, faiss-cpu) and .gpu_data carried.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee $OUT/gpu.txt
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a $OUT/gpu.txt
# 1. retrieval on the GPU alone (nothing else on the card yet)
for qb in 4 8 0; do
  timeout 120 python3 -m hqgnn bench retrieval --items 1000000 --dim 64 --bits 1 --query-bits $qb --queries 1000 --k 20 --device cuda --json >> $OUT/retrieval_cuda.jsonl 2>> $OUT/retrieval_cuda.err
  echo "q$qb rc=$?"; tail -c 700 $OUT/retrieval_cuda.jsonl; echo
done
timeout 120 python3 -m hqgnn bench retrieval --items 1000000 --dim 64 --bits 1 --queries 1000 --k 20 --device cuda --json >> $OUT/retrieval_cuda.jsonl 2>> $OUT/retrieval_cuda.err; tail -c 500 $OUT/retrieval_cuda.jsonl; tail -5 $OUT/retrieval_cuda.err
# 2. the CUDA tests (every file that has CUDA cases), logged
timeout 200 python3 -m pytest -q -p no:cacheprovider -n 8 tests/test_index_asym.py tests/test_index.py tests/test_schedule.py tests/test_eval.py tests/test_train.py tests/test_quant.py tests/test_code_formats.py tests/test_recommender.py tests/test_estimator.py 2>&1 | tail -40 > $OUT/pytest_cuda.log; tail -25 $OUT/pytest_cuda.log
# 3. the frontier follow-up on gowalla (8 B configurations, layer-wise codes, RaBitQ with its rotation)
left=$(( 585 - SECONDS ))
python3 benchmarks/frontier.py --data gowalla --data-dir .gpu_data --work /tmp/fr --deadline $left --tag s3a \
  --teacher-seconds 120 --results /tmp/frontier_gowalla_s3a.json \
  --configs b1_d64_tensor_asym_cr_kd,b1_d64_tensor_asym_cr_rkd,b1_d48_asym_cr_kd,b1_d48_asym_cr_rkd,b1_d48_asym_cr_kd_gste_d1,b1_d48_asym_cr_rkd_gste_d1,b1_d64_layers_asym_cr_kd,b4_d64_asym_c \
  --posthoc sign_hamming,pq8x8_adc,opq8_pq8x8_adc,sign_rowscale_asym,itq_sign_asym,rabitq_q4,rabitq_q8,pq16x8_adc,opq16_pq16x8_adc,sq4,pq32x8_adc \
  2>&1 | tee $OUT/frontier_s3a.log | grep -v "^\s*$" | tail -60
