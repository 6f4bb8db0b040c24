"""Where int8 hurts and what repairs it (issue 19, item 7): float, int8, int8 with ``keep_float: auto``,
int16x8 and QAT, on a sensor-fusion MLP and on MobileNetV2 (shapes).

Each model's modes run as one ``edgesparse.sweep`` (one shared dense baseline per seed, the same export
settings), so every mode quantizes the same trained model. ``export.max_accuracy_drop`` is set out of
reach for the plain modes, so the export keeps the mode asked for and its real accuracy is reported;
``keep_float: auto`` runs with ``max_accuracy_drop = --target`` (1 point), which is what it aims at.

For every exported model.tflite: test accuracy (TFLite, the test split), file bytes, the share of kernel
bytes stored int8 (kernels = the weight tensors of FULLY_CONNECTED / CONV / DEPTHWISE ops; biases and other
constants are not counted) and the ops kept float; then all of one model's files are timed by
``edgesparse.profile`` alternately in one process (1 thread), each as a paired ratio against the dense float32
file (the drift on this VM is 15-30% within seconds, so only paired ratios are compared).

The fusion model is the issue's: 15 unit-scale features and one raw reading about 1000x their scale
(``tests.factories.scaled_input_mlp``: Dense 64 -> Dense 64 -> 4 logits); its int8 input scale is the raw
reading's, which rounds the 15 features away. MobileNetV2 is ``recipes/mobilenet_v2_shapes.yaml`` without its
sparsity phase (``--keep-sparsity`` keeps it; quantization is the point here).

    python benchmarks/quantization.py                       # both models, seed 0
    python benchmarks/quantization.py --models fusion --seeds 0,1,2

Results: benchmarks/results/quantization_<model>.json and Markdown tables on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.rigl import share_baselines  # noqa: E402
from edgesparse.recipe import load_recipe, override, validate_recipe  # noqa: E402
from edgesparse.sweep import sweep  # noqa: E402

PLAIN = ("none", "int8", "int16x8", "qat")
LABELS = {"none": "float32", "int8": "int8", "int16x8": "int16x8", "qat": "QAT (int8)", "auto": "int8 keep_float: auto"}
OUT_OF_REACH = 100.0  # points: the plain modes keep what they were asked for


def fusion_data(path: Path, n: int = 6000) -> Path:
    """The issue's sensor-fusion data: the class is a linear function of 15 unit-scale features; a 16th feature
    is a raw reading about 1000x their scale that carries no information."""
    rng = np.random.default_rng(0)
    small = rng.normal(size=(n, 15)).astype(np.float32)
    raw = (1000.0 * rng.normal(size=(n, 1))).astype(np.float32)
    y = np.argmax(small @ rng.normal(size=(15, 4)), axis=1).astype(np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=np.concatenate([small, raw], axis=1), y=y)
    return path


def base_recipe(model: str, root: Path, keep_sparsity: bool) -> Any:
    """The model's recipe, shared by every mode."""
    if model == "fusion":
        return validate_recipe({
            "name": "fusion_mlp", "seed": 0,
            "data": {"npz": str(fusion_data(root / "fusion.npz")), "batch_size": 64, "validation_split": 0.1,
                     "test_split": 0.2},
            "model": {"factory": "tests.factories:scaled_input_mlp"},
            "baseline": {"epochs": 20, "optimizer": {"learning_rate": 0.003}},
            "sparsity": None,
            "quantization": {"mode": "int8", "epochs": 3, "optimizer": {"learning_rate": 1e-4}},
            "export": {"objective": "size", "sparse_encoding": False, "representative_samples": 200,
                       "per_channel": True},  # modes compared at the converter's own per-channel int8 scales
        })
    sets = ["export.objective=size", "export.per_channel=true", "quantization.epochs=2",
            "quantization.optimizer.learning_rate=1e-4"]
    if not keep_sparsity:
        sets += ["sparsity=null", "export.sparse_encoding=false"]
    return load_recipe(ROOT / "recipes" / "mobilenet_v2_shapes.yaml", sets)


def run_modes(model: str, seeds: list[int], root: Path, target: float, keep_sparsity: bool) -> list[dict[str, Any]]:
    """Two sweeps sharing their baselines: the plain modes, then int8 with keep_float auto."""
    base = base_recipe(model, root, keep_sparsity)
    folder = root / model
    # QAT's own guard warns instead of failing the trial, so its real accuracy is in the table too
    rows = sweep(override(base, {"export.max_accuracy_drop": OUT_OF_REACH, "quantization.on_drop": "warn"}),
                 {"quantization.mode": list(PLAIN)},
                 repeats=len(seeds), root=folder, profile_runs=0).rows
    for r in rows:
        r["label"] = r["quantization.mode"]
    auto_folder = share_baselines(folder, root / f"{model}-keep-float")
    auto = sweep(override(base, {"export.max_accuracy_drop": target, "quantization.mode": "int8"}),
                 {"quantization.keep_float": ["auto"]}, repeats=len(seeds), root=auto_folder, profile_runs=0).rows
    for r in rows:
        r.update(file_figures(folder / "trials" / r["trial"]))
    for r in auto:
        r["label"] = "auto"
        r.update(file_figures(auto_folder / "trials" / r["trial"]))
    return rows + auto


def file_figures(trial: Path) -> dict[str, Any]:
    """From a finished trial: its model.tflite, the mode the export kept, the float ops, the int8 kernel share."""
    from edgesparse.tflite import inspect_tflite

    summary = trial / "summary.json"
    if not summary.exists():
        return {}
    tfl = json.loads(summary.read_text()).get("tflite") or {}
    path = Path(tfl.get("path") or "")
    if not path.exists():
        return {}
    kernels = [w for w in inspect_tflite(path).weights if w.role == "weight"]
    total = sum(w.stored_bytes for w in kernels)
    int8 = sum(w.stored_bytes for w in kernels if w.dtype == "int8")
    return {"path": str(path), "dense_path": str(path.with_name("dense.tflite")), "kept": tfl.get("quantization"),
            "float_ops": tfl.get("float_ops") or [], "int8_kernel_share": int8 / total if total else None,
            "kernel_bytes": total}


def paired(rows: list[dict[str, Any]], runs: int) -> None:
    """Time each seed's files alternately with its dense float32 file; add the paired ratio to each row."""
    from edgesparse.profile.measure import profile

    for seed in sorted({r["seed"] for r in rows}):
        mine = [r for r in rows if r["seed"] == seed and r.get("path")]
        if not mine:
            continue
        report = profile([mine[0]["dense_path"]] + [r["path"] for r in mine], threads=(1,), runs=runs)
        for r, p in zip(mine, report.rows()[1:]):
            ratio = p.get("paired_vs_first") or {}
            r["latency_ratio"] = ratio.get("ratio_median")
            r["latency_ms"] = p["latency_ms"]["median"]
            r["delegated"] = p.get("ops")


def _mean(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ({min(values):.2f}-{max(values):.2f})" if values else "n/a"


def table(model: str, rows: list[dict[str, Any]], target: float) -> list[str]:
    """One Markdown row per mode: means over seeds (min-max)."""
    ok = [r for r in rows if r.get("status") == "ok"]
    floats = [100 * r["tflite_accuracy"] for r in ok if r["label"] == "none"]
    ref = statistics.mean(floats) if floats else None
    out = [f"### {model}", "", "| mode | seeds | TFLite test accuracy % | vs float32 (pt) | model.tflite bytes | "
           "kernel bytes int8 | ops kept float | latency vs dense float32 (paired, 1 thread) |",
           "|---|---|---|---|---|---|---|---|"]
    for label in (*PLAIN, "auto"):
        rs = [r for r in ok if r["label"] == label]
        if not rs:
            failed = [r.get("error") for r in rows if r["label"] == label]
            out.append(f"| {LABELS[label]} | 0 | failed: {str(failed[:1])[:120]} | | | | | |")
            continue
        acc = [100 * r["tflite_accuracy"] for r in rs]
        diff = f"{statistics.mean(acc) - ref:+.2f}" if ref is not None else "n/a"
        share = [100 * r["int8_kernel_share"] for r in rs if r.get("int8_kernel_share") is not None]
        ratios = [r["latency_ratio"] for r in rs if r.get("latency_ratio") is not None]
        kept = sorted({str(r.get("kept")) for r in rs})
        ops = sorted({op for r in rs for op in r.get("float_ops", [])})
        out.append(f"| {LABELS[label]} (kept {', '.join(kept)}) | {len(rs)} | {_mean(acc)} | {diff} | "
                   f"{statistics.mean(r['tflite_bytes'] for r in rs):,.0f} | {_mean(share)}% | "
                   f"{', '.join(ops) or 'none'} | {_mean(ratios)}x |")
    auto = [r for r in ok if r["label"] == "auto"]
    if auto and ref is not None:
        acc = statistics.mean(100 * r["tflite_accuracy"] for r in auto)
        share = min((r.get("int8_kernel_share") or 0.0) for r in auto)
        out.append(f"\nkeep_float auto: {acc - ref:+.2f} pt vs float (target within {target:g}), "
                   f"{100 * share:.1f}% of kernel bytes int8 at the least (target >= 60%)")
    i16 = [100 * r["tflite_accuracy"] for r in ok if r["label"] == "int16x8"]
    if i16 and ref is not None:
        out.append(f"int16x8: {statistics.mean(i16) - ref:+.2f} pt vs float (target within 1)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="fusion,mobilenet_v2")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--target", type=float, default=1.0, help="keep_float auto's max_accuracy_drop (points)")
    ap.add_argument("--runs", type=int, default=300, help="paired latency runs per model")
    ap.add_argument("--keep-sparsity", action="store_true", help="MobileNetV2: keep the recipe's sparsity phase")
    ap.add_argument("--root", default="/tmp/edgesparse-bench-quant")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    for model in args.models.split(","):
        t = time.perf_counter()
        rows = run_modes(model, seeds, Path(args.root), args.target, args.keep_sparsity)
        paired(rows, args.runs)
        lines = table(model, rows, args.target)
        print("\n".join(lines) + f"\n({time.perf_counter() - t:.0f} s)\n", flush=True)
        keep = ("label", "seed", "status", "error", "tflite_accuracy", "keras_accuracy", "baseline_accuracy",
                "tflite_bytes", "kept", "float_ops", "int8_kernel_share", "kernel_bytes", "latency_ratio",
                "latency_ms")
        out = ROOT / "benchmarks" / "results" / f"quantization_{model}.json"
        out.write_text(json.dumps({"seeds": seeds, "target": args.target, "table": lines,
                                   "rows": [{k: r.get(k) for k in keep} for r in rows]}, indent=1))


if __name__ == "__main__":
    main()
