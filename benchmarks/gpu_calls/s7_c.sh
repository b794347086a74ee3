#!/usr/bin/env bash
# Prepared in session 6 for session 7, call C (one NVIDIA H200): issue 14's paper protocol on yelp2018 with the
# validation winner (NAME), all of train.txt, cosine decay over 480 s, alone; its epoch picked on TEST
# (labelled test-selected). Call s6d ran this for cos16k_n8 (L2 1e-4): 0.0637 / 0.0528, no better than 170 s.
set -u
NAME=${NAME:-cos16k_n8_reg2e-4}
source benchmarks/gpu_calls/device_env.sh
timeout 570 python3 benchmarks/fp_quality.py --final $NAME --data yelp2018 --data-dir .gpu_data --device cuda --seconds 480 \
  --protocols paper --runs-dir /tmp/fpq --results /tmp/fp_quality.json 2>&1 | cut -c1-200 | tail -4
