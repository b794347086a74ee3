#!/usr/bin/env bash
# Session 4, call B (one NVIDIA H200): the float encoder's final protocols on gowalla and yelp2018 with the
# configuration that won call A's gowalla sweep on VALIDATION recall@20 (read from its rows; no test number
# is looked at): the validation run (170 s budget), its refit on train + validation (validation+refit) and
# the refit curve's test-selected epoch (paper protocol). The two datasets run at the same time on the card
# (concurrent_runs = 2 in the rows: each had at most the GPU a solo run has). Then the CUDA ranking test.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
W=$(python3 - <<'PY'
import json, pathlib
p = pathlib.Path("benchmarks/gpu_calls/out_s4a/fp_quality_gowalla.json")
rows = json.loads(p.read_text()) if p.exists() else []
rows = [r for r in rows if r.get("val_recall@20") is not None]
print(max(rows, key=lambda r: r["val_recall@20"])["config_name"] if rows else "sm8k_t01")
PY
)
echo "winner by validation: $W"; nvidia-smi --query-gpu=name --format=csv,noheader
timeout 450 python3 benchmarks/fp_quality.py --final $W --data gowalla,yelp2018 --data-dir .gpu_data --device cuda \
  --seconds 170 --parallel 2 --protocols refit --runs-dir /tmp/fpq --results /tmp/fp_quality.json 2>&1 | cut -c1-700 | tail -8
timeout 80 python3 -m pytest -q -p no:cacheprovider tests/test_code_formats.py -k cuda_ranking 2>&1 | tail -3
