#!/usr/bin/env bash
# Prepared in session 5 for session 6, call B (one NVIDIA H200): issue 14, two more yelp2018 candidates:
# cos16k_n4 with a weaker / stronger L2 (reg 3e-5, 2e-4; call s5b's validation curve rose quickly to 0.100
# by epoch 110 and then crept to 0.1075 by epoch 1060 while the loss still fell). Same setting as s6_a's
# sweep (two runs sharing the card, ~170 s of the GPU each, validation only). The overall validation winner
# of s5b + s6a + s6b then gets `fp_quality.py --final NAME --data yelp2018 --seconds 170` alone (refit rows).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 420 python3 benchmarks/fp_quality.py --sweep --data yelp2018 --data-dir .gpu_data --device cuda --seconds 170 \
  --share-budget --configs cos16k_n4_reg3e-5,cos16k_n4_reg2e-4 --runs-dir /tmp/fpq --results /tmp/fp_quality.json 2>&1 \
  | cut -c1-300 | tail -4
