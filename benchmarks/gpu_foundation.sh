#!/usr/bin/env bash
# Foundation benchmarks on the device GPU: PyG baseline epoch time, our epoch time, evaluation time,
# and a concurrent convergence sweep on gowalla. Results land in $OUT.
set -u
export PYTHONPATH=src:${PYTHONPATH:-} PYTHONUNBUFFERED=1
D=${DATA_DIR:-.data}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m hqgnn train --epochs 2 --out /tmp/smoke -q --device cuda 2>&1 | tail -3
# 1. PyG's loop, batch 2048, isolated
python3 benchmarks/pyg_baseline.py --data gowalla --data-dir $D --batch-size 2048 --epochs 2 | tee $OUT/pyg_2048.json
# 2. ours, batch 2048, isolated (epoch time) + evaluation timing
python3 benchmarks/bench_train.py --data gowalla --data-dir $D --out $OUT/ours_2048_short.json --label epoch_time_2048 \
  --set train.epochs=6 --set train.eval_every=100 --test-every 100 2>&1 | tail -1
python3 benchmarks/bench_eval.py --data gowalla --data-dir $D --out $OUT/eval_time.json | tail -1
# 3. convergence sweep, concurrent
sweep() { python3 benchmarks/bench_train.py --data gowalla --data-dir $D --out $OUT/sweep_$1.json --label $1 \
  --set train.max_seconds=$SECS --set train.patience=0 --set train.epochs=2000 --test-every 5 "${@:2}" > $OUT/sweep_$1.log 2>&1 & }
SECS=${SECS:-300}
sweep b2048_lr1e-3 --set train.batch_size=2048 --set train.lr=1e-3
sweep b2048_lr2e-3 --set train.batch_size=2048 --set train.lr=2e-3
sweep b4096_lr4e-3 --set train.batch_size=4096 --set train.lr=4e-3
sweep b8192_lr5e-3 --set train.batch_size=8192 --set train.lr=5e-3
sweep b8192_lr1e-2 --set train.batch_size=8192 --set train.lr=1e-2
wait
tail -n 2 $OUT/sweep_*.log
