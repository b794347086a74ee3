#!/usr/bin/env bash
# GPU retrieval benchmark (1M items, d=64, 10k queries, top-20) for 1/2/4/8 bits, plus the CUDA index tests.
set -u
export PYTHONPATH=src:${PYTHONPATH:-} PYTHONUNBUFFERED=1
python3 -m pytest -q -x tests/test_index.py -k "cuda or gpu or triton" -p no:cacheprovider 2>&1 | tail -3
python3 benchmarks/bench_retrieval.py $OUT/retrieval_cuda.json --device cuda --items 1000000 --dim 64 --queries 10000 --k 20 --bits 1,2,4,8 2>&1 | grep -v Warn | tail -8
