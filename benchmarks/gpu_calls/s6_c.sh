#!/usr/bin/env bash
# Session 6, call C (one NVIDIA H200): issue 14 on yelp2018 with call s6a's validation winner (cos16k_n8:
# batch 16384, lr 1e-2, cosine decay over the time budget, 8 negatives), alone on the card, 170 s of
# selection then its refit on train + validation; then issue 13's packed kernel at 12 B again (full threshold
# pass and threshold_fraction 0.25), a second measurement with the torch baselines in the same run.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 440 python3 benchmarks/fp_quality.py --final cos16k_n8 --data yelp2018 --data-dir .gpu_data --device cuda --seconds 170 \
  --set train.refit=true \
  --runs-dir /tmp/fpq --results /tmp/fp_quality.json 2>&1 | cut -c1-300 | tail -4
timeout 100 python3 benchmarks/asym_gpu_tiles.py --items 1000000 --dim 64 --queries 10000 --k 20 --value-dtype float16 \
  --variants 1,12 --out $OUT/asym_gpu_tiles_s6c.json 2>&1 | cut -c1-260 | tail -3
