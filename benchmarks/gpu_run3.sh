#!/usr/bin/env bash
# CUDA tests, PyG baseline and our epoch time in one call, then an isolated time-to-target run.
set -u
export PYTHONPATH=src:${PYTHONPATH:-} PYTHONUNBUFFERED=1
D=${DATA_DIR:-.data}
python3 -m pytest -q -x tests/test_train.py tests/test_eval.py tests/test_quant.py -k "cuda" -p no:cacheprovider 2>&1 | tail -3
python3 benchmarks/pyg_baseline.py --data gowalla --data-dir $D --batch-size 2048 --epochs 2 | tee $OUT/pyg_2048.json
python3 benchmarks/pyg_baseline.py --data gowalla --data-dir $D --batch-size 8192 --epochs 2 | tee $OUT/pyg_8192.json
for bs in 2048 8192; do
python3 benchmarks/bench_train.py --data gowalla --data-dir $D --out $OUT/epoch_time_$bs.json --label epoch_time_$bs \
  --set train.epochs=8 --set train.eval_every=100 --set train.batch_size=$bs --test-every 100 2>&1 | tail -1 | cut -c1-200
done
python3 benchmarks/bench_train.py --data gowalla --data-dir $D --out $OUT/epoch_time_2048_eager.json --label eager_2048 \
  --set train.epochs=4 --set train.eval_every=100 --set train.cuda_graph=false --test-every 100 2>&1 | tail -1 | cut -c1-200
python3 benchmarks/bench_eval.py --data gowalla --data-dir $D --out $OUT/eval_time.json | cut -c1-300
# isolated: time to target
python3 benchmarks/bench_train.py --data gowalla --data-dir $D --out $OUT/ttt_gowalla.json --label ttt \
  --set train.sampling=user --set train.batch_size=8192 --set train.lr=5e-3 --set data.val_ratio=0.05 \
  --set train.max_seconds=175 --set train.patience=0 --set train.epochs=5000 --set train.eval_every=20 --test-every 10 2>&1 | tail -1
python3 - <<'PY'
import json, os
d = json.load(open(os.environ["OUT"] + "/ttt_gowalla.json")); print(d["epoch_seconds_median"], [(c["epoch"], round(c["train_seconds"],1), round(c["recall@20"], 4)) for c in d["curve"][::3]])
PY
rm -rf $OUT/*/
