#!/usr/bin/env bash
# Profiling, then a convergence sweep over sampling / batch / lr / validation ratio on gowalla.
set -u
export PYTHONPATH=src:${PYTHONPATH:-} PYTHONUNBUFFERED=1
D=${DATA_DIR:-.data}
python3 benchmarks/profile_step.py --data-dir $D 2>&1 | grep -v Warn | tee $OUT/profile.txt | head -60
sweep() { python3 benchmarks/bench_train.py --data gowalla --data-dir $D --out $OUT/sweep_$1.json --label $1 \
  --set train.max_seconds=$SECS --set train.patience=0 --set train.epochs=2000 --test-every 5 "${@:2}" > $OUT/sweep_$1.log 2>&1 & }
SECS=${SECS:-300}
sweep user_b2048_lr2e-3 --set train.sampling=user --set train.batch_size=2048 --set train.lr=2e-3
sweep user_b8192_lr5e-3 --set train.sampling=user --set train.batch_size=8192 --set train.lr=5e-3
sweep user_b2048_lr2e-3_val05 --set train.sampling=user --set train.batch_size=2048 --set train.lr=2e-3 --set data.val_ratio=0.05
sweep edge_b2048_lr2e-3_val05 --set train.batch_size=2048 --set train.lr=2e-3 --set data.val_ratio=0.05
wait
for f in $OUT/sweep_*.log; do tail -n 1 $f | cut -c1-300; done
python3 - <<'PY'
import json, glob, os
for f in sorted(glob.glob(os.environ["OUT"] + "/sweep_*.json")):
    d = json.load(open(f)); print(os.path.basename(f), d["epoch_seconds_median"], [(c["epoch"], round(c["recall@20"], 4)) for c in d["curve"][::4]])
PY
rm -rf $OUT/sweep_*/
