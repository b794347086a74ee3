#!/usr/bin/env bash
# Prepared in session 5 for session 6, call B (one NVIDIA H200): issue 14, two more yelp2018 candidates,
# cos16k_n4 with a weaker / stronger L2 (reg 3e-5, 2e-4): call s5b's validation curve rose quickly to 0.100
# by epoch 110, then crept to 0.1075 by epoch 1060 while the loss still fell. cos16k_n4 rerun as the
# in-call baseline; three runs sharing the card, ~150 s of the GPU each, validation only (as s6_a.sh).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 520 python3 benchmarks/fp_quality.py --sweep --data yelp2018 --data-dir .gpu_data --device cuda --seconds 150 \
  --share-budget --configs cos16k_n4,cos16k_n4_reg3e-5,cos16k_n4_reg2e-4 --runs-dir /tmp/fpq --results /tmp/fp_quality.json 2>&1 \
  | cut -c1-300 | tail -4
