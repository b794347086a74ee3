#!/usr/bin/env bash
# Session 6, call D (one NVIDIA H200): issue 14's paper protocol on yelp2018 without the 3-minute limit:
# cos16k_n8 (the validation winner of calls s6a/s6c), all of train.txt, cosine decay over a 480 s budget,
# alone on the card; its epoch is picked on TEST (labelled test-selected, never a default).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 570 python3 benchmarks/fp_quality.py --final cos16k_n8 --data yelp2018 --data-dir .gpu_data --device cuda --seconds 480 \
  --protocols paper --runs-dir /tmp/fpq --results /tmp/fp_quality.json 2>&1 | cut -c1-300 | tail -4
