"""Allocation at 95% over the pruned kernels: do erk / auto beat uniform? (issue 18, item 6)

For each recipe, ``edgesparse.sweep`` runs ``sparsity.allocation = uniform, erk, auto`` with
``sparsity.final = 0.95`` (the overall sparsity over the pruned kernels; uniform gives every pruned
layer 95%), the same epochs, and one shared dense baseline per seed, so the three allocations of a
seed prune the same trained model. Accuracy is the exported .tflite's on the test split
(``export.objective: size``: the smallest verified file, not timed; latency is not the question here).

Targets (issue 18): the better of erk / auto beats uniform by >= 1 point in the mean on at least one
recipe and is never worse than uniform by more than 0.3 points; the achieved sparsities equal
within 1 point.

    python benchmarks/allocation.py                          # quickstart and resnet_shapes, seeds 0,1,2
    python benchmarks/allocation.py --recipes quickstart --seeds 0 --final 0.9

Results: benchmarks/results/allocation.json (every trial) and a Markdown table on stdout.
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

from edgesparse.recipe import load_recipe  # noqa: E402
from edgesparse.sweep import sweep  # noqa: E402

ALLOCATIONS = ("uniform", "erk", "auto")


def run(recipe_name: str, final: float, seeds: list[int], root: Path, allocations: tuple[str, ...]) -> list[dict]:
    """One sweep over the allocations for ``recipe_name``; its rows."""
    base = load_recipe(ROOT / "recipes" / f"{recipe_name}.yaml",
                       [f"sparsity.final={final}", "export.objective=size", f"seed={seeds[0]}",
                        "sparsity.on_drop=warn"])
    t = time.perf_counter()
    result = sweep(base, {"sparsity.allocation": list(allocations)}, repeats=len(seeds),
                   root=root / recipe_name, profile_runs=0)
    print(f"{recipe_name}: {len(result.rows)} trials in {time.perf_counter() - t:.0f} s", flush=True)
    return [{**r, "recipe": recipe_name} for r in result.rows]


def table(rows: list[dict[str, Any]]) -> list[str]:
    """Mean (min-max) TFLite accuracy and achieved sparsity per recipe and allocation, and the differences."""
    out = ["| recipe | allocation | seeds | TFLite test accuracy, mean (min-max) | vs uniform | achieved sparsity |",
           "|---|---|---|---|---|---|"]
    for recipe in sorted({r["recipe"] for r in rows}):
        by = {a: [r for r in rows if r["recipe"] == recipe and r.get("sparsity.allocation") == a
                  and r.get("status") == "ok"] for a in ALLOCATIONS}
        uni = statistics.mean(r["tflite_accuracy"] for r in by["uniform"]) if by["uniform"] else None
        for a, rs in by.items():
            if not rs:
                failed = [r for r in rows if r["recipe"] == recipe and r.get("sparsity.allocation") == a]
                out.append(f"| {recipe} | {a} | 0 | failed: {(failed[0].get('error') or '')[:80] if failed else '-'}"
                           " | | |")
                continue
            acc = [100 * r["tflite_accuracy"] for r in rs]
            sp = [100 * (r["sparsity"] or 0) for r in rs]
            diff = "" if uni is None or a == "uniform" else f"{statistics.mean(acc) - 100 * uni:+.2f} pt"
            out.append(f"| {recipe} | {a} | {len(rs)} | {statistics.mean(acc):.2f}% ({min(acc):.2f}-{max(acc):.2f}) "
                       f"| {diff} | {statistics.mean(sp):.2f}% |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", default="quickstart,resnet_shapes")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--final", type=float, default=0.95)
    ap.add_argument("--allocations", default=",".join(ALLOCATIONS))
    ap.add_argument("--root", default="/tmp/edgesparse-bench-allocation")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "allocation.json"))
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if seeds != list(range(seeds[0], seeds[0] + len(seeds))):
        raise SystemExit("--seeds must be consecutive (the sweep's repeats use seed, seed + 1, ...)")
    rows: list[dict[str, Any]] = []
    for name in args.recipes.split(","):
        rows += run(name, args.final, seeds, Path(args.root), tuple(args.allocations.split(",")))
    lines = table(rows)
    print("\n".join(lines))
    keep = ("recipe", "sparsity.allocation", "seed", "status", "tflite_accuracy", "keras_accuracy",
            "baseline_accuracy", "sparsity", "tflite_bytes", "layer_sparsity", "error")
    Path(args.out).write_text(json.dumps({"final": args.final, "seeds": seeds, "table": lines,
                                          "rows": [{k: r.get(k) for k in keep} for r in rows]}, indent=1))


if __name__ == "__main__":
    main()
