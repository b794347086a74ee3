#!/usr/bin/env bash
# Prepared in session 6 for session 7, call B (one NVIDIA H200): issue 14 on yelp2018, the validation winner of
# calls s6a + s7a (NAME below; set it from s7a's output), alone on the card: 170 s of selection, then its refit
# on train + validation (the validation and validation+refit rows, and the refit curve's paper row); then the
# asymmetric CUDA tests on the card under session 6's default threshold_fraction 0.25 (last run with 1.0, s5c).
set -u
NAME=${NAME:-cos16k_n8_reg2e-4}
source benchmarks/gpu_calls/device_env.sh
timeout 440 python3 benchmarks/fp_quality.py --final $NAME --data yelp2018 --data-dir .gpu_data --device cuda --seconds 170 \
  --set train.refit=true --runs-dir /tmp/fpq --results /tmp/fp_quality.json 2>&1 | cut -c1-200 | tail -4
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_index_asym.py tests/test_code_formats.py -k "cuda" 2>&1 | tail -3
