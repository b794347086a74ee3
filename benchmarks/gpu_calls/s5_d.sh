#!/usr/bin/env bash
# Session 5, call D (one NVIDIA H200, if device time is left): issue 13's packed kernel at the bytes the
# frontier stores: scales and terms as float16 (8 + 2 + 2 = 12 B per item on the device), the shipped
# 0/1 operand and the +-1 form, the int8 layout, every query checked, torch baselines in the same run.
set -u
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 150 python3 benchmarks/asym_gpu_tiles.py --items 1000000 --dim 64 --queries 10000 --k 20 --value-dtype float16 \
  --variants 1,0,9 --out $OUT/asym_gpu_tiles_s5d.json 2>&1 | cut -c1-260 | tail -5
