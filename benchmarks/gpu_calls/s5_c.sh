#!/usr/bin/env bash
# Session 5, call C (one NVIDIA H200): issue 14's time goal measured alone on the card: gowalla with the
# validation winner of calls s4d + s5a (cos16k_n4), 170 s of selection then its refit (nothing else on
# the GPU); then issue 13's CUDA tests with the new default packed kernel (0/1 bit operand): the CUDA/CPU
# ranking equality test of every code format and the asymmetric index's CUDA tests.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 420 python3 benchmarks/fp_quality.py --final cos16k_n4 --data gowalla --data-dir .gpu_data --device cuda --seconds 170 \
  --runs-dir /tmp/fpq --results /tmp/fp_quality.json 2>&1 | cut -c1-300 | tail -4
timeout 100 python3 -m pytest -q -p no:cacheprovider -p no:xdist tests/test_code_formats.py tests/test_index_asym.py -k "cuda" 2>&1 | tail -3
