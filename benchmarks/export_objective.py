"""The default export is never slower than the dense float model (issue 9, item 5): measure it.

Trains ``recipes/resnet_shapes.yaml`` (a ResNet with BatchNorm and residual Adds, 80% unstructured,
post-training int8) with the default ``export.objective: balanced`` for each seed, then re-times the
kept model.tflite against dense.tflite with ``edgesparse profile`` (paired: both alternately in one
process) and prints every export candidate. Targets: paired latency <= 1.0x the dense float model,
file <= 1/2 of it.

Usage: ``python benchmarks/export_objective.py [--seeds 0,1,2] [--recipe ...]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "edgesparse.cli", *cmd], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:2])} failed:\n{proc.stderr[-3000:]}")


def one_seed(recipe: Path, seed: int, work: Path) -> bool:
    run = work / f"run{seed}"
    _run(["train", str(recipe), "-o", str(run), "--set", f"seed={seed}"])
    s = json.loads((run / "summary.json").read_text())
    bundle = Path(s["tflite"]["bundle"])
    info = json.loads((bundle / "export.json").read_text())
    print(f"seed {seed}: dense acc {s['baseline']['accuracy']:.2%}, TFLite acc {s['tflite']['accuracy']:.2%}, "
          f"sparsity {s['model']['sparsity']:.1%}; candidates (paired latency vs dense.tflite during export):")
    for c in info["candidates"]:
        ratio = "—" if c["latency_ratio"] is None else f"{c['latency_ratio']:.2f}x"
        print(f"  {'*' if c['chosen'] else ' '} {c['label']:<32} {c['bytes']:>9,} B  {ratio:>6}  "
              f"resolver {c['resolver']}{'  rejected: ' + c['rejected'] if c['rejected'] else ''}")
    report = work / f"profile{seed}.json"
    _run(["profile", str(bundle / "dense.tflite"), str(bundle / "model.tflite"), "--runs", "300", "--json", str(report)])
    rows = json.loads(report.read_text())["models"]
    paired = rows[1]["paired_vs_first"]
    size = s["baseline"]["tflite_bytes"] / s["tflite"]["bytes"]
    ok = paired["ratio_median"] <= 1.0 and size >= 2.0
    print(f"  re-timed with edgesparse profile (300 runs, paired): model/dense {paired['ratio_median']:.2f}x "
          f"(quartiles {paired['ratio_q1']:.2f}-{paired['ratio_q3']:.2f}); file 1/{size:.1f} of dense "
          f"({s['tflite']['bytes']:,} vs {s['baseline']['tflite_bytes']:,} B) -> {'PASS' if ok else 'FAIL'}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "resnet_shapes.yaml")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="es-objective-") as tmp:
        results = [one_seed(args.recipe, int(seed), Path(tmp)) for seed in args.seeds.split(",")]
    if not all(results):
        sys.exit(1)


if __name__ == "__main__":
    main()
