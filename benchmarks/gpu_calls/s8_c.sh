#!/usr/bin/env bash
# Prepared in session 7 for session 8, call C (one NVIDIA H200): why call s7d measured the 12 B packed asymmetric
# kernel 10 % below calls s6a / s6c (BENCHMARKS section 3b): three alternating rounds of search() and torch bf16
# in one call (the spread within a call), then one profiled search() (kernel time against wall time).
set -u
source benchmarks/gpu_calls/device_env.sh
timeout 150 python3 benchmarks/asym_gpu_profile.py --items 1000000 --dim 64 --queries 10000 --k 20 --rounds 3 \
  --out $OUT/asym_gpu_profile_s8c.json 2>&1 | grep -v USDT | cut -c1-400 | tail -5
