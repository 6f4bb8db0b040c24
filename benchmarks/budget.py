"""Does model.tflite land in [0.9 N, N] for a size budget ``sparsity.target.bytes = N``? (issue 18, item 6)

For each recipe the reachable range is measured first (the same trial conversions the run makes: every
pruned layer at ``max_layer``, and unpruned), and three budgets are placed at 25%, 50% and 75% of the
way from the smallest reachable file to the unpruned one. Each budget then runs end to end through
``edgesparse.train`` (baseline, pruning to the searched sparsity, quantization, export with its
candidates and ``export.objective: size``), and the exported file is compared with the budget.

The landing does not depend on how well the model trains, so by default the phases are shortened
(``--epochs``: baseline, sparsity and QAT epochs; the schedule ends one epoch before the phase does);
``--epochs 0`` keeps each recipe's own epochs.

    python benchmarks/budget.py                       # quickstart, resnet_shapes, anomaly_autoencoder
    python benchmarks/budget.py --recipes quickstart --epochs 0

Results: benchmarks/results/budget.json and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgesparse import budget  # noqa: E402
from edgesparse.data import load_dataset  # noqa: E402
from edgesparse.models import build_model  # noqa: E402
from edgesparse.recipe import load_recipe, override, recipe_dir  # noqa: E402
from edgesparse.run import train  # noqa: E402

FRACTIONS = (0.25, 0.5, 0.75)


def _recipe(name: str, epochs: int, tmp: Path) -> Any:
    sets = ["export.objective=size", "sparsity.on_drop=warn", f"export.dir={tmp / name / 'bundle'}"]
    if epochs:
        sets += [f"baseline.epochs={epochs}", f"sparsity.epochs={epochs + 1}", "sparsity.start=0",
                 f"sparsity.end={epochs}", "quantization.epochs=1"]
    return load_recipe(ROOT / "recipes" / f"{name}.yaml", sets)


def reachable(recipe: Any) -> tuple[int, int]:
    """The smallest reachable and the unpruned model.tflite of ``recipe`` (bytes), as the run's early check sees."""
    data = load_dataset(recipe.data, recipe.seed, base_dir=recipe_dir(recipe))
    model = build_model(recipe.model, tuple(data.input_shape), data.num_classes, recipe_dir(recipe))
    huge = override(recipe, {"sparsity.target.bytes": 10**12})
    plan = budget.smallest_reachable(model, huge.sparsity, huge, data.steps_per_epoch(recipe.data.batch_size),
                                     data.representative(budget.TRIAL_SAMPLES, seed=recipe.seed))
    return plan.smallest, plan.unpruned


def one(recipe: Any, n: int, run_dir: Path) -> dict[str, Any]:
    """Run ``recipe`` with a budget of ``n`` bytes; the budget's figures from summary.json."""
    sized = override(recipe, {"sparsity.target.bytes": n})
    t = time.perf_counter()
    try:
        result = train(sized, run_dir=run_dir, force=True)
    except Exception as exc:  # reported in the table, the other budgets still run
        return {"budget": n, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    s = result.summary
    b = (s.sparsity.budget if s.sparsity is not None else None) or {}
    actual = s.tflite.bytes if s.tflite is not None else None
    return {"budget": n, "actual": actual, "predicted": b.get("predicted"), "final": b.get("final"),
            "achieved": s.sparsity.achieved.overall if s.sparsity is not None else None,
            "kept": s.tflite.quantization if s.tflite is not None else None,
            "trials": len(b.get("trials") or []), "corrected": b.get("correction") is not None,
            "in_range": actual is not None and 0.9 * n <= actual <= n,
            "tflite_metric": s.tflite.metric if s.tflite is not None else None, "seconds": time.perf_counter() - t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", default="quickstart,resnet_shapes,anomaly_autoencoder")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "budget.json"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edgesparse-bench-budget-"))
    rows: list[dict[str, Any]] = []
    lines = ["| recipe | reachable (smallest - unpruned) | budget N | model.tflite | in [0.9N, N] | sparsity | "
             "predicted | trial conversions | corrected |", "|---|---|---|---|---|---|---|---|---|"]
    for name in args.recipes.split(","):
        recipe = _recipe(name, args.epochs, tmp)
        smallest, unpruned = reachable(recipe)
        for f in FRACTIONS:
            n = int(smallest + f * (unpruned - smallest))
            r = {"recipe": name, "smallest": smallest, "unpruned": unpruned, "fraction": f,
                 **one(recipe, n, tmp / name / f"run-{f}")}
            rows.append(r)
            if "error" in r:
                lines.append(f"| {name} | {smallest:,} - {unpruned:,} | {n:,} | failed: {r['error'][:80]} | | | | | |")
            else:
                lines.append(f"| {name} | {smallest:,} - {unpruned:,} | {n:,} | {r['actual']:,} ({r['kept']}) | "
                             f"{'yes' if r['in_range'] else '**no**'} | {100 * (r['achieved'] or 0):.1f}% | "
                             f"{r['predicted']:,} | {r['trials']} | {'yes' if r['corrected'] else 'no'} |")
            print(lines[-1], flush=True)
    print("\n".join(lines))
    met = sum(bool(r.get("in_range")) for r in rows)
    print(f"{met} of {len(rows)} budgets landed in [0.9 N, N]")
    Path(args.out).write_text(json.dumps({"epochs": args.epochs, "table": lines, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
