#!/usr/bin/env bash
# Prepared in session 5 for session 6, call A (one NVIDIA H200). (1) Issue 13: the packed kernel at the
# frontier's 12 B (float16 values) with the threshold pass over 1/4 and 1/8 of the item groups
# (threshold_fraction; session 5 measured 4.94x torch bf16 at 12 B with the full pass), every query checked.
# (2) Issue 14: two more yelp2018 candidates, a larger batch with a scaled lr (cos32k_n4) and 8 negatives
# (cos16k_n8), with call s5b's cos16k_n4 rerun as the in-call baseline: three runs sharing the card
# (--seconds 150 --share-budget, ~150 s of the GPU each), validation only; the overall validation winner
# then runs alone with its refit (`fp_quality.py --final NAME --data yelp2018 --seconds 170`).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python3 benchmarks/asym_gpu_tiles.py --items 1000000 --dim 64 --queries 10000 --k 20 --value-dtype float16 \
  --variants 1,12,13,9,14 --out $OUT/asym_gpu_tiles_s6a.json 2>&1 | cut -c1-260 | tail -7
timeout 520 python3 benchmarks/fp_quality.py --sweep --data yelp2018 --data-dir .gpu_data --device cuda --seconds 150 \
  --share-budget --configs cos16k_n4,cos32k_n4,cos16k_n8 --runs-dir /tmp/fpq --results /tmp/fp_quality.json 2>&1 | cut -c1-300 | tail -4
