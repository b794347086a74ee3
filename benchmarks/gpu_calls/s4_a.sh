#!/usr/bin/env bash
# Session 4, call A (one NVIDIA H200): the asymmetric GPU engine at 10,000 queries with 4-bit queries (the
# goal's setting; packed default layout, alone on the card), then the gowalla float-quality sweep: BPR
# baseline against the sampled softmax at tau 0.1 / 0.2 (three runs time-sharing the GPU, ~140 s of it each;
# selection on validation only).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
python3 -m hqgnn train --help | grep -c -- "--lr" || { echo "typer from .whl not in use"; exit 1; }
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 80 python3 -m hqgnn bench retrieval --items 1000000 --dim 64 --bits 1 --query-bits 4 --queries 10000 --k 20 --device cuda --json >> $OUT/retrieval_cuda.jsonl 2>> $OUT/retrieval_cuda.err
echo "q4 rc=$?"; tail -c 900 $OUT/retrieval_cuda.jsonl; echo
timeout 470 python3 benchmarks/fp_quality.py --sweep --data gowalla --data-dir .gpu_data --device cuda --seconds 140 \
  --share-budget --configs base,sm8k_t01,sm8k_t02 --runs-dir /tmp/fpq --results /tmp/fp_quality.json 2>&1 | cut -c1-600 | tail -8
