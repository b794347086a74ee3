#!/usr/bin/env bash
# Prepared for session 4, call A (one NVIDIA H200): the asymmetric GPU engine at 10,000 queries (packed and
# int8, alone on the card), then the gowalla float-quality sweep: BPR baseline against the sampled softmax
# (three runs time-sharing the GPU, ~150 s of it each; selection on validation only).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
python3 -m hqgnn train --help | grep -c -- "--lr" || { echo "typer from .whl not in use"; exit 1; }
for qb in 4 8 0; do
  timeout 90 python3 -m hqgnn bench retrieval --items 1000000 --dim 64 --bits 1 --query-bits $qb --queries 10000 --k 20 --device cuda --json >> $OUT/retrieval_cuda.jsonl 2>> $OUT/retrieval_cuda.err
  echo "q$qb rc=$?"; tail -c 600 $OUT/retrieval_cuda.jsonl; echo
done
timeout 480 python3 benchmarks/fp_quality.py --sweep --data gowalla --data-dir .gpu_data --device cuda --seconds 150 \
  --share-budget --configs base,sm8k_t01,sm8k_t02 --runs-dir /tmp/fpq --results /tmp/fp_quality.json 2>&1 | cut -c1-400 | tail -8
