#!/usr/bin/env bash
# Prepared for session 4, call B (one NVIDIA H200): the like-for-like PyG baseline (the same training edges
# as hqgnn: --val-ratio 0.05) next to hqgnn's epoch time in the same call, then the layer-wise codes on
# yelp2018 (issue 12's last item), then the CUDA ranking equality test.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
D=.gpu_data
for bs in 2048 8192; do
  python3 benchmarks/pyg_baseline.py --data gowalla --data-dir $D --batch-size $bs --epochs 2 --val-ratio 0.05 | tee -a $OUT/pyg_like_for_like.jsonl
  python3 benchmarks/bench_train.py --data gowalla --data-dir $D --out $OUT/epoch_time_$bs.json --label epoch_time_$bs \
    --set train.epochs=8 --set train.eval_every=100 --set train.batch_size=$bs --set data.val_ratio=0.05 --test-every 100 2>&1 | tail -1 | cut -c1-200
done
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_code_formats.py -k cuda_ranking 2>&1 | tail -3
python3 benchmarks/frontier.py --data yelp2018 --data-dir $D --work /tmp/fr --deadline 330 --tag s4b --fixed \
  --teacher-seconds 120 --results /tmp/frontier_yelp2018_s4b.json \
  --configs b1_d64_layers_asym_cr_kd,b1_d64_asym_cr_kd,b4_d64_asym_c --posthoc sign_rowscale_asym,sq4,pq32x8_adc \
  > $OUT/frontier_s4b.log 2>&1; grep "^\[" $OUT/frontier_s4b.log | tail -20
