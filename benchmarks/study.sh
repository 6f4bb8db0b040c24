#!/usr/bin/env bash
# The sparsity study (issue #4): digits small CNN and shapes MobileNetV2, dense vs sparse across
# sparsity levels, patterns and quantization, seeds fixed, 3 repeats on the digits grid.
# Writes sweeps/study_digits, sweeps/study_mobilenet and docs/results.md (+ PNGs in docs/).
# Measured here (2 cores): about 20 minutes for digits (64 trials, 3 shared baselines) and
# about 10 minutes for MobileNetV2 (4 trials, 1 baseline); nothing else should run meanwhile,
# because latency is measured on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
"$PY" -m edgesparse.cli sweep recipes/quickstart.yaml -o sweeps/study_digits --repeats 3 \
  --grid sparsity.final=0.5,0.75,0.9,0.95 \
  --grid "sparsity.pattern=unstructured,block:1x16" \
  --grid quantization.mode=none,pqat \
  --grid "sparsity.regularization.l1=0,1e-5" --profile-runs 200 | tail -n 20
"$PY" -m edgesparse.cli sweep recipes/mobilenet_v2_shapes.yaml -o sweeps/study_mobilenet \
  --grid sparsity.final=0.5,0.75 --grid quantization.mode=none,int8 --profile-runs 50 | tail -n 10
"$PY" benchmarks/study_report.py sweeps/study_digits sweeps/study_mobilenet -o docs/results.md
