"""Measure the quickstart figures of issue #2 and print them (not a unit test).

Runs ``edgesparse train recipes/quickstart.yaml`` as a user would (a fresh process, wall time
included TensorFlow's import), then reads the run's summary.json:

* TFLite test accuracy >= dense baseline accuracy - 1.0 point, baseline >= 97%
* final .tflite <= 1/14 of the dense float32 .tflite (raw bytes)
* the whole command under 3 minutes wall time
* pruning-phase train step time <= 1.3 x the dense step time (same batch; median per step,
  first epoch excluded as graph tracing)

Usage: ``python benchmarks/quickstart.py [--recipe recipes/quickstart.yaml] [--repeats 1]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_once(recipe: Path, workdir: Path, seed: int | None) -> dict:
    cmd = [sys.executable, "-m", "edgesparse.cli", "train", str(recipe), "-o", str(workdir / "run"),
           "--set", f"export.dir={workdir / 'bundle'}"]
    if seed is not None:
        cmd += ["--set", f"seed={seed}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"train failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads((workdir / "run" / "summary.json").read_text())
    summary["wall_seconds"] = wall
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "quickstart.yaml")
    parser.add_argument("--seeds", default="", help="comma-separated seeds (default: the recipe's)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s] or [None]
    rows = []
    for seed in seeds:
        work = Path(tempfile.mkdtemp(prefix="es-bench-"))
        try:
            s = run_once(args.recipe, work, seed)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        base_acc = s["baseline"]["accuracy"]
        tfl_acc = s["tflite"]["accuracy"]
        ratio = s["baseline"]["tflite_bytes"] / s["tflite"]["bytes"]
        step = s["timing"]["step_time_ratio"]
        checks = {
            "baseline >= 97%": base_acc >= 0.97,
            "tflite >= baseline - 1pt": (base_acc - tfl_acc) * 100 <= 1.0,
            "size <= 1/14": ratio >= 14,
            "wall < 180 s": s["wall_seconds"] < 180,
            "step ratio <= 1.3": step is not None and step <= 1.3,
        }
        rows.append(checks)
        print(f"seed {s['seed']}: baseline acc {base_acc:.2%} | TFLite acc {tfl_acc:.2%} "
              f"(drop {(base_acc - tfl_acc) * 100:+.2f} pt, agreement {s['tflite']['agreement']:.2%}) | "
              f"sparsity {s['model']['sparsity']:.2%}")
        print(f"  dense .tflite {s['baseline']['tflite_bytes']:,} B -> final {s['tflite']['bytes']:,} B "
              f"= 1/{ratio:.1f} (gzip {s['tflite']['gzip_bytes']:,} B) | encodings {s['tflite'].get('encodings')}")
        print(f"  wall {s['wall_seconds']:.1f} s (train() {s['timing']['total_seconds']:.1f} s) | step "
              f"dense {s['timing']['baseline_step_ms']:.2f} ms, pruning {s['timing']['sparsity_step_ms']:.2f} ms "
              f"= {step:.2f}x | resolver {s['tflite']['resolver']}")
        print("  " + ", ".join(f"{k}: {'PASS' if v else 'FAIL'}" for k, v in checks.items()))
    if not all(all(r.values()) for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
