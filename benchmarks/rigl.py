"""Dynamic sparse training (RigL, SET) against tfmot's magnitude pruning (issue 18, item 6).

Two comparisons, each over ``--seeds`` and on the exported .tflite's test accuracy:

1. **From a pretrained model**: ``edgesparse.sweep`` over ``sparsity.method = magnitude, rigl, set`` x
   ``sparsity.final = 0.9, 0.95``, with one shared dense baseline per seed and the same sparsity epochs.
   Target: rigl within 0.5 points of magnitude at 90% and at 95%.
2. **From scratch**: RigL at 90% trained sparse from the first step (``baseline.epochs: 0``, sparsity
   epochs = the recipe's baseline + sparsity epochs), against dense training then magnitude pruning
   with the same total epochs (the recipe as it is, at 90%).

Every recipe field that is not the comparison's stays as shipped; the pattern is unstructured for every
method (RigL and SET drop and grow single weights), overriding the recipe's.

    python benchmarks/rigl.py                                  # quickstart, seeds 0,1,2
    python benchmarks/rigl.py --recipe resnet_shapes --seeds 0 --parts pretrained

Results: benchmarks/results/rigl_<recipe>.json and Markdown tables on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgesparse.recipe import load_recipe, override  # noqa: E402
from edgesparse.run import train  # noqa: E402
from edgesparse.sweep import sweep  # noqa: E402

METHODS = ("magnitude", "rigl", "set")
LEVELS = (0.9, 0.95)


def _base(recipe: str, seed: int) -> Any:
    return load_recipe(ROOT / "recipes" / f"{recipe}.yaml",
                       ["sparsity.pattern=unstructured", "sparsity.layers=[]", "export.objective=size",
                        "sparsity.on_drop=warn", f"seed={seed}"])


# rigl and set refuse the magnitude schedule's fields when they differ from the defaults (they would be
# ignored), so their trials reset them; magnitude keeps the recipe's own schedule, its strongest setting.
DYNAMIC_RESET = {"sparsity.schedule": "polynomial", "sparsity.initial": 0.0, "sparsity.start": 0,
                 "sparsity.end": None, "sparsity.frequency": 25}


def share_baselines(first: Path, second: Path) -> Path:
    """Make sweep folder ``second`` read the dense baselines ``first`` trained (keyed by the baseline's own
    sections, so the same seeds find the same models); returns ``second``."""
    second.mkdir(parents=True, exist_ok=True)
    link = second / "baselines"
    if not link.exists():
        link.symlink_to((first / "baselines").resolve(), target_is_directory=True)
    return second


def pretrained(recipe: str, seeds: list[int], root: Path) -> list[dict[str, Any]]:
    """The sweep of methods x levels from one shared baseline per seed.

    Two sweeps (a folder holds one base recipe, and the dynamic trials reset the schedule), the second
    reading the first's baselines, so the magnitude trials and the dynamic ones clone the same models.
    """
    t = time.perf_counter()
    base = _base(recipe, seeds[0])
    folder = root / f"{recipe}-pretrained"
    rows = sweep(base, {"sparsity.method": ["magnitude"], "sparsity.final": list(LEVELS)},
                 repeats=len(seeds), root=folder, profile_runs=0).rows
    dynamic = share_baselines(folder, root / f"{recipe}-pretrained-dynamic")
    rows += sweep(override(base, DYNAMIC_RESET), {"sparsity.method": ["rigl", "set"], "sparsity.final": list(LEVELS)},
                  repeats=len(seeds), root=dynamic, profile_runs=0).rows
    print(f"pretrained: {len(rows)} trials in {time.perf_counter() - t:.0f} s", flush=True)
    return rows


def scratch(recipe: str, seeds: list[int], root: Path) -> list[dict[str, Any]]:
    """RigL from the first step vs dense-then-magnitude, the same total epochs, at 90%."""
    rows = []
    for seed in seeds:
        base = override(_base(recipe, seed), {"sparsity.final": 0.9})
        total = base.baseline.epochs + (base.sparsity.epochs if base.sparsity else 0)
        sparse = override(base, {**DYNAMIC_RESET, "sparsity.method": "rigl", "baseline.epochs": 0,
                                 "sparsity.epochs": total, "baseline.on_broken": "warn"})
        for label, r in (("dense then magnitude", base), ("rigl from scratch", sparse)):
            t = time.perf_counter()
            try:
                s = train(r, run_dir=root / f"{recipe}-scratch" / f"{label.split()[0]}-s{seed}", force=True).summary
                rows.append({"label": label, "seed": seed, "epochs": total, "status": "ok",
                             "tflite_accuracy": s.tflite.accuracy if s.tflite else None,
                             "sparsity": s.model.sparsity if s.model else None,
                             "seconds": time.perf_counter() - t})
            except Exception as exc:  # reported in the table
                rows.append({"label": label, "seed": seed, "status": "failed", "error": str(exc)[:300]})
            print(rows[-1], flush=True)
    return rows


def _mean(rs: list[dict[str, Any]], key: str) -> str:
    vals = [100 * r[key] for r in rs if r.get(key) is not None]
    return f"{statistics.mean(vals):.2f}% ({min(vals):.2f}-{max(vals):.2f})" if vals else "failed"


def tables(pre: list[dict[str, Any]], scr: list[dict[str, Any]]) -> list[str]:
    out = []
    if pre:
        out += ["| final | method | seeds | TFLite test accuracy, mean (min-max) | vs magnitude | achieved |",
                "|---|---|---|---|---|---|"]
        for level in LEVELS:
            at = {m: [r for r in pre if r.get("sparsity.method") == m and r.get("sparsity.final") == level
                      and r.get("status") == "ok"] for m in METHODS}
            mag = [100 * r["tflite_accuracy"] for r in at["magnitude"]]
            for m, rs in at.items():
                acc = [100 * r["tflite_accuracy"] for r in rs]
                diff = "" if m == "magnitude" or not acc or not mag else \
                    f"{statistics.mean(acc) - statistics.mean(mag):+.2f} pt"
                out.append(f"| {level:.0%} | {m} | {len(rs)} | {_mean(rs, 'tflite_accuracy')} | {diff} | "
                           f"{_mean(rs, 'sparsity')} |")
    if scr:
        out += ["", "| 90%, same total epochs | seeds | TFLite test accuracy, mean (min-max) | achieved |",
                "|---|---|---|---|"]
        for label in ("dense then magnitude", "rigl from scratch"):
            rs = [r for r in scr if r["label"] == label and r["status"] == "ok"]
            out.append(f"| {label} | {len(rs)} | {_mean(rs, 'tflite_accuracy')} | {_mean(rs, 'sparsity')} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="quickstart")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--parts", default="pretrained,scratch")
    ap.add_argument("--root", default="/tmp/edgesparse-bench-rigl")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    parts = args.parts.split(",")
    root = Path(args.root)
    pre = pretrained(args.recipe, seeds, root) if "pretrained" in parts else []
    scr = scratch(args.recipe, seeds, root) if "scratch" in parts else []
    lines = tables(pre, scr)
    print("\n".join(lines))
    keep = ("sparsity.method", "sparsity.final", "seed", "status", "tflite_accuracy", "sparsity", "error")
    out = ROOT / "benchmarks" / "results" / f"rigl_{args.recipe}.json"
    out.write_text(json.dumps({"seeds": seeds, "table": lines, "pretrained": [{k: r.get(k) for k in keep} for r in pre],
                               "scratch": scr}, indent=1))


if __name__ == "__main__":
    main()
