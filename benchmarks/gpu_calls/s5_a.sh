#!/usr/bin/env bash
# Prepared for session 5, call A (one NVIDIA H200): issue 14 on yelp2018 (never measured with the new
# protocol): BPR base against sampled softmax tau 0.1, validation covering every user (fp_quality's COMMON),
# two runs time-sharing the card (~120 s of it each), each with its refit; then the CUDA/CPU ranking
# equality test and the yelp2018 layer-wise frontier rows lost to the OOM of call s4c (fixed since).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 330 python3 benchmarks/fp_quality.py --sweep --data yelp2018 --data-dir .gpu_data --device cuda --seconds 75 \
  --share-budget --configs base,sm8k_t01 --set train.refit=true \
  --runs-dir /tmp/fpq --results /tmp/fp_quality.json 2>&1 | cut -c1-500 | tail -8
timeout 80 python3 -m pytest -q -p no:cacheprovider tests/test_code_formats.py -k cuda_ranking 2>&1 | tail -3
timeout 170 python3 benchmarks/frontier.py --data yelp2018 --data-dir .gpu_data --work /tmp/fr --deadline 160 --tag s5a --fixed \
  --seeds 0 --teacher-seconds 60 --results /tmp/frontier_yelp2018_s5a.json \
  --configs b1_d64_layers_asym_cr_kd,b1_d64_asym_cr_kd --posthoc sign_rowscale_asym > $OUT/frontier_s5a.log 2>&1
grep "^\[" $OUT/frontier_s5a.log | tail -10
