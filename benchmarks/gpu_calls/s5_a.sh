#!/usr/bin/env bash
# Session 5, call A (one NVIDIA H200): issue 14, gowalla. Two BPR recipes with a cosine lr decay over the
# time budget and 4 negatives per positive (cos8k_n4, cos16k_n4), against the validation numbers of call
# s4d (same protocol: 5 % validation covering every user, two runs time-sharing the card at --seconds 120
# --share-budget, each followed by its refit). Then the CUDA/CPU ranking equality test of issue 13.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 500 python3 benchmarks/fp_quality.py --sweep --data gowalla --data-dir .gpu_data --device cuda --seconds 120 \
  --share-budget --configs cos8k_n4,cos16k_n4 --set train.refit=true \
  --runs-dir /tmp/fpq --results /tmp/fp_quality.json 2>&1 | cut -c1-400 | tail -8
timeout 70 python3 -m pytest -q -p no:cacheprovider tests/test_code_formats.py -k cuda_ranking 2>&1 | tail -3
