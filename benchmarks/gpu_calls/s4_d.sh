#!/usr/bin/env bash
# Session 4, call D (one NVIDIA H200): call A's gowalla sweep again with a validation split that covers
# every user (data.val_min_per_user=1; the 5 % split had left 19 % of gowalla's users out of validation),
# BPR base against sampled softmax tau 0.1, two runs time-sharing the card (~120 s of it each), each with
# its refit on train + validation (validation, validation+refit and the refit curve's test-selected rows).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 560 python3 benchmarks/fp_quality.py --sweep --data gowalla --data-dir .gpu_data --device cuda --seconds 120 \
  --share-budget --configs base,sm8k_t01 --set data.val_min_per_user=1 --set train.refit=true \
  --runs-dir /tmp/fpq --results /tmp/fp_quality.json 2>&1 | cut -c1-500 | tail -8
