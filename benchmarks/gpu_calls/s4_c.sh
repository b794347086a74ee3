#!/usr/bin/env bash
# Session 4, call C (one NVIDIA H200): the layer-wise (BiGeaR) codes on yelp2018 against single-layer
# 1-bit and 4-bit codes and post-hoc baselines on the same teacher (issue 12's last item), then the
# like-for-like PyG baseline (the same training edges as hqgnn: --val-ratio 0.05) next to hqgnn's epoch
# time in the same call; then the asymmetric GPU engine at 10,000 queries with 4-bit queries (every query
# checked on the card: the host float64 check took call A past its limit).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
D=.gpu_data
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 320 python3 benchmarks/frontier.py --data yelp2018 --data-dir $D --work /tmp/fr --deadline 290 --tag s4c --fixed \
  --teacher-seconds 100 --results /tmp/frontier_yelp2018_s4c.json \
  --configs b1_d64_layers_asym_cr_kd,b1_d64_asym_cr_kd,b4_d64_asym_c --posthoc sign_rowscale_asym,sq4,pq32x8_adc \
  > $OUT/frontier_s4c.log 2>&1; echo "frontier rc=$?"; grep "^\[" $OUT/frontier_s4c.log | tail -20
timeout 100 python3 benchmarks/pyg_baseline.py --data gowalla --data-dir $D --batch-size 2048 --epochs 2 --val-ratio 0.05 | tee -a $OUT/pyg_like_for_like.jsonl
timeout 60 python3 benchmarks/bench_train.py --data gowalla --data-dir $D --out $OUT/epoch_time_2048.json --label epoch_time_2048 \
  --set train.epochs=8 --set train.eval_every=100 --set train.batch_size=2048 --set data.val_ratio=0.05 --test-every 100 2>&1 | tail -1 | cut -c1-300
timeout 120 python3 -m hqgnn bench retrieval --items 1000000 --dim 64 --bits 1 --query-bits 4 --queries 10000 --k 20 --device cuda --json >> $OUT/retrieval_cuda.jsonl 2>> $OUT/retrieval_cuda.err
echo "q4 rc=$?"; tail -c 1500 $OUT/retrieval_cuda.jsonl; echo
