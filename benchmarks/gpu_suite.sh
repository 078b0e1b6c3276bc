#!/usr/bin/env bash
# Issue 19's GPU suite in one call: trainer overhead (cnnforge vs a plain loop, fp32 and bf16), speed
# knobs of every seed model, cifar_fast throughput on device-drawn CIFAR-shaped data, and DDP scaling
# when there are 2 or more GPUs. Prints one table and one `BENCH {json}` line on stdout (progress on
# stderr); under 8 minutes on one GPU. Options go to benchmarks/gpu_suite.py:
#   bash benchmarks/gpu_suite.sh                      # --no-compile, --ddp N, --repeats R
#   bash benchmarks/gpu_suite.sh --device cpu --tiny  # what the test suite runs
# PYTHON picks the interpreter (default: python on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m benchmarks.gpu_suite "$@"
