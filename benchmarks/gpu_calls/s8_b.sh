#!/usr/bin/env bash
# Prepared in session 7 for session 8, call B (one NVIDIA H200): the quality-per-byte frontier of gowalla
# against the published-level float teacher (issue 14's recipe, configs/lightgcn_gowalla.toml, validation
# protocol, never its refit) instead of the call-1 teacher (0.1754, batch 8192, lr 5e-3). The headline
# configurations of BENCHMARKS section 2b at 8 / 16 / 36 B with three seeds (--fixed: chosen on validation in
# earlier calls), and the post-hoc baselines of each budget on the same teacher in the same call.
# The teachers of every width (48 / 64 / 112 here) share the card for 170 s, so the d = 64 float row is below its solo 0.1830.
set -u
source benchmarks/gpu_calls/device_env.sh
timeout 590 python3 benchmarks/frontier.py --data gowalla --data-dir .gpu_data --work /tmp/fr --deadline 560 --tag s8b \
  --fixed --teacher-config configs/lightgcn_gowalla.toml --teacher-seconds 170 --results /tmp/frontier_gowalla_s8b.json \
  --configs b1_d48_asym_cr_kd_gste_d1,b1_d112_asym_cr_kd_gste_d1,b4_d64_asym_c \
  --posthoc sign_rowscale_asym,opq8_pq8x8_adc,opq16_pq16x8_adc,rabitq_q4,sq4,pq32x8_adc > $OUT/frontier_s8b.log 2>&1
echo "frontier rc=$?"; grep -v "WARNING clustering" $OUT/frontier_s8b.log | grep "^\[" | tail -30
