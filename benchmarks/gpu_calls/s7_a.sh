#!/usr/bin/env bash
# Prepared in session 6 for session 7, call A (one NVIDIA H200): issue 14, the L2 strength on yelp2018 at the
# sweep protocol of call s6a (three runs sharing the card, --seconds 150 --share-budget, ~150 s of the GPU
# each, 5 % validation covering every user, validation only): s6a's winner cos16k_n8 (L2 1e-4, val 0.1083)
# with L2 2e-4 / 4e-4 / 8e-4 (call s6e: 2e-4 > 1e-4 > 3e-5 by +0.003 / +0.013 val Recall@20 at 85 s each).
# The validation winner over s6a + s7a then runs alone with its refit (s7_b.sh, edit NAME) and, for the
# paper row, test-selected over a 480 s budget (s7_c.sh).
set -u
source benchmarks/gpu_calls/device_env.sh
timeout 570 python3 benchmarks/fp_quality.py --sweep --data yelp2018 --data-dir .gpu_data --device cuda --seconds 150 \
  --share-budget --configs cos16k_n8_reg2e-4,cos16k_n8_reg4e-4,cos16k_n8_reg8e-4 --runs-dir /tmp/fpq \
  --results /tmp/fp_quality.json 2>&1 | cut -c1-200 | tail -4
