#!/usr/bin/env bash
# Session 6, call E (one NVIDIA H200; the session's last ~330 s of device time): issue 14, the L2 strength
# on yelp2018 — call s6d showed a 480 s paper-protocol run no better than a 170 s one (0.0637 both), so
# the plateau is not the step count. cos16k_n4 (L2 1e-4, the in-call baseline) against L2 3e-5 and 2e-4,
# three runs sharing the card at --seconds 85 (~85 s of the GPU each; shorter than calls s6a / s5b, so
# its numbers compare only within this call), validation only.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 300 python3 benchmarks/fp_quality.py --sweep --data yelp2018 --data-dir .gpu_data --device cuda --seconds 85 \
  --share-budget --configs cos16k_n4,cos16k_n4_reg3e-5,cos16k_n4_reg2e-4 --runs-dir /tmp/fpq --results /tmp/fp_quality.json 2>&1 \
  | cut -c1-200 | tail -4
