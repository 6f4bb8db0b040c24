"""Sweep overhead (issue #4): a 12-trial sweep with a shared baseline vs 12 independent trains.

Both sides do the same 12 trials of ``recipes/quickstart.yaml`` (sparsity.final x pattern), with
export and verification; the sweep trains the dense baseline once, the independent runs each
train their own (and pay TensorFlow's import each time, as a user running them one by one would).
Latency profiling is off in the sweep so both sides do the same work. Target: sweep <= 0.8 x.

Usage: ``python benchmarks/sweep_overhead.py``
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FINALS = ["0.5", "0.75", "0.9", "0.95"]
PATTERNS = ["unstructured", "block:1x4", "block:1x16"]


def main() -> None:
    recipe = ROOT / "recipes" / "quickstart.yaml"
    work = Path(tempfile.mkdtemp(prefix="es-sweep-bench-"))
    try:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "edgesparse.cli", "sweep", str(recipe), "-o", str(work / "sweep"),
                        "--grid", f"sparsity.final={','.join(FINALS)}", "--grid", f"sparsity.pattern={','.join(PATTERNS)}",
                        "--profile-runs", "0"], check=True, cwd=ROOT, capture_output=True)
        sweep_s = time.perf_counter() - t0
        print(f"sweep of 12 trials (1 shared baseline): {sweep_s:.1f} s", flush=True)
        t0 = time.perf_counter()
        for i, (final, pattern) in enumerate(itertools.product(FINALS, PATTERNS)):
            subprocess.run([sys.executable, "-m", "edgesparse.cli", "train", str(recipe), "-o", str(work / f"run{i}"),
                            "--set", f"sparsity.final={final}", "--set", f"sparsity.pattern={pattern}",
                            "--set", f"export.dir={work / f'bundle{i}'}"], check=True, cwd=ROOT, capture_output=True)
        independent_s = time.perf_counter() - t0
        print(f"12 independent `edgesparse train` runs: {independent_s:.1f} s")
        ratio = sweep_s / independent_s
        print(f"ratio {ratio:.2f} -> {'PASS' if ratio <= 0.8 else 'FAIL'} (<= 0.8)")
        sys.exit(0 if ratio <= 0.8 else 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
