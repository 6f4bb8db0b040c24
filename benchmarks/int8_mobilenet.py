"""Is int8 MobileNetV2 slower than float32 on this CPU? (issue 11, item 8): measure it, with XNNPACK's op counts.

Trains ``recipes/mobilenet_v2_shapes.yaml`` at each sparsity level (or reuses finished run
directories), converts five variants with edgesparse's own ``convert()`` — the dense baseline as
float32 and int8, the pruned model as float32, int8, and int8 with the converter's sparse encoding
(the recipe's export) — plus a freshly initialised ``keras.applications`` MobileNetV2 (alpha 0.35,
96x96) as float32 and int8, and times each set with ``edgesparse profile`` (1 thread, every model
timed alternately with the float32 model in one process) under each configuration: ai-edge-litert's
default resolver (XNNPACK), ``--resolver builtin``, and optionally another Python (``--device-python``,
e.g. tflite-runtime 2.14 with numpy<2). Prints the paired ratios against the float32 model and how
many of each model's ops XNNPACK took.

Usage: ``python benchmarks/int8_mobilenet.py [--finals 0.5,0.75] [--runs 400] [--work DIR]
[--run-dirs DIR,DIR] [--device-python ~/.cache/edgesparse/device-venv/bin/python]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "mobilenet_v2_shapes.yaml"
#: (file stem, which model, quantization mode, sparse encoding); the first is the reference of the ratios
VARIANTS = (("dense_f32", "dense", "none", False), ("dense_int8", "dense", "int8", False),
            ("sparse_f32", "final", "none", False), ("sparse_int8", "final", "int8", False),
            ("sparse_int8_enc", "final", "int8", True))


def train(final: float, work: Path) -> Path:
    """Train the recipe at sparsity ``final`` into ``work``; return the run directory."""
    run = work / f"run-{final}"
    cmd = [sys.executable, "-m", "edgesparse.cli", "train", str(RECIPE), "-o", str(run), "--force",
           "--set", f"sparsity.final={final}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"train failed:\n{proc.stderr[-3000:]}")
    return run


def study_variants(run_dir: Path, out: Path) -> list[Path]:
    """Convert the run's dense and pruned models as VARIANTS, calibrated like its export."""
    from edgesparse.export.convert import convert
    from edgesparse.run import load_run

    loaded = load_run(run_dir)
    cfg = loaded.recipe.export
    rep = list(loaded.data.representative(cfg.representative_samples, seed=loaded.recipe.seed))
    models = {"dense": loaded.dense_model, "final": loaded.final_model}
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for stem, which, mode, encoding in VARIANTS:
        data = convert(models[which], mode, sparse_encoding=encoding, representative=rep if mode != "none" else None,
                       io=cfg.io)
        paths.append(out / f"{stem}.tflite")
        paths[-1].write_bytes(data)
    return paths


def fresh_variants(out: Path) -> list[Path]:
    """A randomly initialised keras.applications MobileNetV2 (alpha 0.35, 96x96, 4 classes): float32 and int8."""
    from edgesparse import _tf
    from edgesparse.export.convert import convert

    keras = _tf.keras()
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=4)
    rng = np.random.default_rng(0)
    rep = [rng.random((96, 96, 3), dtype=np.float32) for _ in range(50)]
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "fresh_f32.tflite", out / "fresh_int8.tflite"]
    paths[0].write_bytes(convert(model, "none"))
    paths[1].write_bytes(convert(model, "int8", representative=rep))
    return paths


def measure(paths: list[Path], runs: int, resolver: str, python: str | None) -> list[dict[str, Any]]:
    """``edgesparse profile`` of ``paths`` (the first is the reference); one row per model."""
    from edgesparse.profile.measure import profile

    options = {"python": python} if python else None
    report = profile(paths, threads=(1,), runs=runs, resolver=resolver, target_options=options)
    runtime = report.target.get("runtime", {})
    rows = report.rows()
    for r in rows:
        r["runtime_label"] = f"{runtime.get('name')} {runtime.get('version')}"
    return rows


def _cell(row: dict[str, Any]) -> str:
    """'0.70x (0.70–0.71) 66/67 ops, 0.213 ms' for one profiled model."""
    p = row.get("paired_vs_first")
    ratio = "1.00x (reference)" if p is None else f"{p['ratio_median']:.2f}x ({p['ratio_q1']:.2f}–{p['ratio_q3']:.2f})"
    ops = row.get("ops") or {}
    share = "ops ?" if ops.get("total") is None else f"{ops['delegated']}/{ops['total']} ops"
    return f"{ratio} {share}, {row['latency_ms']['median']:.3f} ms"


def report(name: str, paths: list[Path], configs: list[tuple[str, str, str | None]], runs: int) -> None:
    """Print one Markdown table: a row per model, a column per configuration; builtin-run ops below it."""
    columns = {label: measure(paths, runs, resolver, python) for label, resolver, python in configs}
    heads = [f"{label} ({rows[0]['runtime_label']})" for label, rows in columns.items()]
    print(f"\n### {name}\n\n| model | bytes | " + " | ".join(heads) + " |")
    print("|---|---|" + "---|" * len(heads))
    for i, path in enumerate(paths):
        cells = [_cell(rows[i]) for rows in columns.values()]
        print(f"| {path.stem} | {path.stat().st_size:,} | " + " | ".join(cells) + " |")
    for label, rows in columns.items():
        for r in rows:
            builtin = (r.get("ops") or {}).get("builtin")
            if builtin:
                kinds = ", ".join(f"{op} x{n}" for op, n in builtin.items())
                print(f"- {label}, {Path(r['path']).stem}: builtin kernels ran {kinds}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--finals", default="0.5,0.75", help="sparsity levels to train")
    parser.add_argument("--run-dirs", default="", help="finished run directories to reuse instead of training")
    parser.add_argument("--work", type=Path, default=Path("/tmp/es-int8-mobilenet"))
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--device-python", help="also profile with this Python (e.g. tflite-runtime 2.14)")
    args = parser.parse_args()
    runs = [Path(p) for p in args.run_dirs.split(",") if p] or [train(float(f), args.work) for f in
                                                                 args.finals.split(",")]
    configs: list[tuple[str, str, str | None]] = [("XNNPACK", "auto", None), ("builtin kernels", "builtin", None)]
    if args.device_python:
        configs.append(("device Python", "auto", args.device_python))
    for run in runs:
        report(f"{run.name}", study_variants(run, args.work / f"{run.name}-tflite"), configs, args.runs)
    report("fresh keras.applications MobileNetV2", fresh_variants(args.work / "fresh"), configs, args.runs)


if __name__ == "__main__":
    main()
