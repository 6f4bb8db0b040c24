"""Channel pruning makes the model faster on this CPU (issue 11, item 8): measure it.

Trains the dense baseline of ``recipes/resnet_shapes.yaml`` (built-in resnet, BatchNorm and residual Adds, on
shapes 32x32) once per seed, then for each allocation runs the same recipe with ``channels: {target: {macs: 0.5},
allocation: ..., epochs: N}`` (no unstructured sparsity, no quantization) from that shared baseline, and prints:
test accuracy of dense and thinned Keras models, parameters and MACs (the cost model, cross-checked against the
MACs read from the .tflite files), float32 .tflite bytes, and the paired latency ratio thinned / dense (both
float32 .tflite, 1 thread, timed alternately in one process by the device runner, ``--runs`` each).

Target: paired latency <= 0.5x (2x faster) at <= 1.0 point of test accuracy lost.

``--schedules oneshot,gradual`` compares the schedules (issue 11, item 5) on the same baseline and plan:
``oneshot`` thins at once and fine-tunes the thinned model; ``gradual`` fine-tunes a copy of the dense model
while the planned channels are masked step by step (``--end``: where the ramp ends, a fraction of the phase),
then thins it. Both fine-tune ``--epochs`` epochs with the recipe's channel optimizer.

Usage: ``PYTHONPATH=. python benchmarks/channels.py [--recipe recipes/resnet_channels.yaml] [--seeds 0]
[--allocations auto,uniform] [--schedules oneshot,gradual] [--end 0.5] [--epochs 10] [--macs 0.5 | --latency 0.5]
[--multiple 8] [--set channels.optimizer.schedule=cosine]``
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _tflite_macs(model: Any) -> int:
    from edgesparse.export.convert import convert
    from edgesparse.tflite.footprint import footprint

    return int(footprint(convert(model, "none")).macs_dense)


def one(recipe: Any, dense: Any, allocation: str, target: dict[str, float], epochs: int, runs: int,
        work: Path, multiple: int = 1, extra: list[str] | None = None, channels: Any = None,
        schedule: str = "oneshot", end: float = 0.5) -> dict[str, Any]:
    from edgesparse.export.latency import paired_float_latency
    from edgesparse.recipe import override
    from edgesparse.run import load_model, train

    section = channels.model_dump(mode="json") if channels is not None else {}  # the recipe's own settings
    section.update({"target": target, "ratio": None, "allocation": allocation, "epochs": epochs,
                    "on_drop": "warn", "channel_multiple": multiple, "schedule": schedule, "end": end})
    rec = override(override(recipe, {"channels": section}), list(extra or []))
    res = train(rec, run_dir=work / f"{allocation}-{schedule}-{recipe.seed}", export=False, dense_model=dense,
                force=True)
    thinned = load_model(res.run_dir / "channels.keras")
    lat = paired_float_latency(thinned, dense, runs=runs, threads=1)
    s = res.summary
    ch = s.channels
    assert ch is not None
    return {"allocation": allocation, "schedule": schedule, "val_acc": ch.validation_accuracy,
            "dense_val_acc": s.baseline.validation_accuracy, "dense_acc": s.baseline.accuracy,
            "acc": s.model.accuracy if s.model else None,
            "params": ch.params, "dense_params": ch.dense_params, "macs": ch.macs, "dense_macs": ch.dense_macs,
            "tflite_macs": _tflite_macs(thinned), "dense_tflite_macs": _tflite_macs(dense),
            "kept": {g.name: f"{g.kept}/{g.channels}" for g in ch.groups}, "seconds": ch.seconds, **lat}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "resnet_shapes.yaml")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--allocations", default="auto,uniform")
    parser.add_argument("--macs", type=float, default=0.5)
    parser.add_argument("--latency", type=float, default=None, help="a latency target instead of --macs")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--multiple", type=int, default=1, help="channels.channel_multiple")
    parser.add_argument("--schedules", default="oneshot", help="channels.schedule values, comma-separated")
    parser.add_argument("--end", type=float, default=0.5, help="channels.end of the gradual schedule")
    parser.add_argument("--baselines", type=Path, default=None,
                        help="keep the dense runs in DIR/dense-SEED and reuse finished ones (default: a temporary "
                        "folder)")
    parser.add_argument("--set", action="append", default=[], dest="extra",
                        help="a recipe override applied to the channel runs (repeatable), e.g. "
                        "channels.optimizer.schedule=cosine")
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING, format="    %(name)s: %(message)s")
    logging.getLogger("edgesparse.train.channels").setLevel(logging.INFO)
    from edgesparse.recipe import load_recipe, override
    from edgesparse.run import load_model

    target = {"latency": args.latency} if args.latency else {"macs": args.macs}
    rows: dict[str, list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="es-channels-") as tmp:
        for seed in args.seeds.split(","):
            source = load_recipe(args.recipe)
            recipe = override(source, {"seed": int(seed), "sparsity": None, "export": None,
                                                         "channels": None,
                                                         "quantization": {"mode": "none"}})
            base = _dense_run(recipe, Path(args.baselines or tmp) / f"dense-{seed}")
            dense = load_model(base.run_dir / "baseline.keras")
            print(f"seed {seed}: dense test accuracy {base.summary.baseline.accuracy:.2%}, "
                  f"{base.summary.baseline.params:,} params", flush=True)
            if base.summary.baseline.accuracy < 0.8:
                print("  the dense baseline did not train (< 80%): accuracy comparisons of this seed mean nothing",
                      flush=True)
            runs = [(a, s) for a in args.allocations.split(",") for s in args.schedules.split(",")]
            for allocation, schedule in runs:
                r = one(recipe, dense, allocation, target, args.epochs, args.runs, Path(tmp), args.multiple,
                        args.extra, source.channels, schedule, args.end)
                loss = 100 * (r["dense_acc"] - r["acc"])
                rows.setdefault(f"{allocation} {schedule}", []).append((r["dense_acc"], r["acc"], r["ratio_median"]))
                ok = r["ratio_median"] <= 0.5 and loss <= 1.0
                print(f"  {allocation:<8} {schedule:<8} target {target}, channel_multiple {args.multiple}: test acc "
                      f"{r['acc']:.2%} ({loss:+.2f} points lost), val acc {r['val_acc']:.2%} (dense "
                      f"{r['dense_val_acc']:.2%}), "
                      f"params {r['params']:,}/{r['dense_params']:,} ({r['params'] / r['dense_params']:.0%}), "
                      f"MACs {r['macs']:,}/{r['dense_macs']:,} ({r['macs'] / r['dense_macs']:.0%}; .tflite "
                      f"{r['tflite_macs']:,}/{r['dense_tflite_macs']:,}), float .tflite {r['bytes']:,}/"
                      f"{r['reference_bytes']:,} B, paired latency {r['ratio_median']:.3f}x dense (quartiles "
                      f"{r['ratio_q1']:.3f}-{r['ratio_q3']:.3f}, {args.runs} runs, 1 thread) -> "
                      f"{'PASS' if ok else 'FAIL'}; kept {r['kept']}; fine-tuning {r['seconds']:.0f}s", flush=True)
    _means(rows)


def _dense_run(recipe: Any, run_dir: Path) -> Any:
    """Train the dense baseline into ``run_dir``, or reuse the one a finished run left there (``--baselines``)."""
    from types import SimpleNamespace

    from edgesparse.run import train
    from edgesparse.summary import read_summary

    if (run_dir / "summary.json").exists() and (run_dir / "baseline.keras").exists():
        return SimpleNamespace(run_dir=run_dir, summary=read_summary(run_dir / "summary.json"))
    return train(recipe, run_dir=run_dir, export=False, force=True)


def _means(rows: dict[str, list[tuple[float, float, float]]]) -> None:
    """One line per allocation: mean dense and thinned accuracy, mean loss, median latency ratios."""
    import numpy as np

    for allocation, rs in rows.items():
        dense, acc, ratio = (np.array(c) for c in zip(*rs, strict=True))
        print(f"{allocation}: {len(rs)} seed(s); dense {dense.mean():.2%} (spread {100 * np.ptp(dense):.2f} pt), "
              f"thinned {acc.mean():.2%} +- {100 * acc.std():.2f} (mean loss {100 * (dense - acc).mean():+.2f} pt, "
              f"worst {100 * (dense - acc).max():+.2f}), latency ratio {ratio.min():.3f}-{ratio.max():.3f}x dense",
              flush=True)


if __name__ == "__main__":
    main()
