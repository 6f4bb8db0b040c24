#!/usr/bin/env bash
# The sparsity study (issue #4): digits small CNN and shapes MobileNetV2, dense vs sparse across
# sparsity levels, patterns, regularisation and quantization; seeds fixed; 3 repeats on digits.
# Writes sweeps/study_* and docs/results.md (+ PNGs under docs/results/).
# Time measured here (2 cores, nothing else running — latency is measured on this machine):
# printed at the end of each sweep and recorded in docs/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
T0=$(date +%s)
# 1. sparsity level x pattern x quantization, 3 repeats (48 trials, 3 shared baselines)
"$PY" -m edgesparse.cli sweep recipes/quickstart.yaml -o sweeps/study_digits --repeats 3 \
  --grid sparsity.final=0.5,0.75,0.9,0.95 \
  --grid "sparsity.pattern=unstructured,block:1x16" \
  --grid quantization.mode=none,pqat --profile-runs 200 | tail -n 12
# 2. regularisation at high sparsity (12 trials)
"$PY" -m edgesparse.cli sweep recipes/quickstart.yaml -o sweeps/study_digits_l1 --repeats 3 \
  --grid sparsity.final=0.9,0.95 --grid "sparsity.regularization.l1=0,1e-5" --profile-runs 200 | tail -n 8
# 3. MobileNetV2 alpha 0.35 on shapes 96x96 (12 trials, 3 shared baselines)
"$PY" -m edgesparse.cli sweep recipes/mobilenet_v2_shapes.yaml -o sweeps/study_mobilenet --repeats 3 \
  --grid sparsity.final=0.5,0.75 --grid quantization.mode=none,int8 --profile-runs 50 | tail -n 8
T1=$(date +%s)
"$PY" benchmarks/study_report.py sweeps/study_digits sweeps/study_digits_l1 sweeps/study_mobilenet \
  -o docs/results.md --seconds $((T1 - T0))
