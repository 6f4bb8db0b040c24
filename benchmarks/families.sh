#!/usr/bin/env bash
# Compression families on the residual CNN (issue 11, item 8): unstructured vs 1x16 blocks (80%, float32) vs
# channels (auto allocation at 50% and 30% of the dense MACs, float32) vs channels + int8 (30% MACs) vs uniform
# channels (50% MACs), 3 seeds (18 trials; a full grid would retrain the channel phase for every quantization), all from the same dense baselines (recipes/resnet_shapes.yaml and resnet_channels.yaml
# share data, model and baseline, so their baseline keys match and the baselines are trained once).
# Writes sweeps/fam_* and the families section of docs/results.md (+ PNGs under docs/results/).
# tfmot prunes 1x16 blocks in 2-D (Dense) weights only: the convolutions stay unstructured in that family.
# export.objective size keeps each sparse family's own encoding (the smallest verified file); the latency column
# then shows what that encoding costs. Latency: paired against the dense float32 model, 1 thread.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
OUT="${OUT:-sweeps}"
RUNS="${RUNS:-200}"
T0=$(date +%s)
"$PY" -m edgesparse.cli sweep recipes/resnet_shapes.yaml -o "$OUT/fam_sparse" --repeats 3 --profile-runs "$RUNS" \
  --set export.objective=size \
  --grid "sparsity.pattern=unstructured,block:1x16" --grid quantization.mode=none | tail -n 6
for s in fam_channels fam_channels_int8 fam_uniform; do
  mkdir -p "$OUT/$s" && cp -rn "$OUT/fam_sparse/baselines" "$OUT/$s/"
done
"$PY" -m edgesparse.cli sweep recipes/resnet_channels.yaml -o "$OUT/fam_channels" --repeats 3 --profile-runs "$RUNS" \
  --set channels.optimizer.schedule=cosine \
  --grid channels.target.macs=0.5,0.3 --grid quantization.mode=none | tail -n 6
"$PY" -m edgesparse.cli sweep recipes/resnet_channels.yaml -o "$OUT/fam_channels_int8" --repeats 3 \
  --profile-runs "$RUNS" --set channels.optimizer.schedule=cosine \
  --grid channels.target.macs=0.3 --grid quantization.mode=int8 | tail -n 6
"$PY" -m edgesparse.cli sweep recipes/resnet_channels.yaml -o "$OUT/fam_uniform" --repeats 3 --profile-runs "$RUNS" \
  --set channels.optimizer.schedule=cosine \
  --grid channels.target.macs=0.5 --grid channels.allocation=uniform | tail -n 6
T1=$(date +%s)
echo "families: $((T1 - T0)) s"
"$PY" benchmarks/families_report.py "$OUT/fam_sparse" "$OUT/fam_channels" "$OUT/fam_channels_int8" \
  "$OUT/fam_uniform" -o docs/results.md
