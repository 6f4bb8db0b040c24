"""Does every shipped recipe's dense baseline pass the health check at full size? (issue 20, item 5)

The suite checks the shipped recipes on shortened runs. This script trains each recipe's dense baseline as the
recipe says (its data, model, task, seed and ``baseline:`` section, every epoch), then runs the same health check
``edgesparse train`` runs before any compression: the dense model's primary metric on the validation split
against the task's chance level, the diagnoses it names, and the dense float32 .tflite against the Keras model.
The compression sections are dropped (the check does not depend on them), so each row costs one baseline.
Recipes whose baselines are identical (same data, model, task, seed and baseline section) train once.

    python benchmarks/health.py                                  # every recipe in recipes/
    python benchmarks/health.py --recipes quickstart,wake_word

Results: benchmarks/results/health.json and a Markdown table on stdout. The script exits with 1 when a
baseline is not healthy (``status`` other than ok).
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

from edgesparse.recipe import load_recipe  # noqa: E402
from edgesparse.run import train  # noqa: E402


def _baseline_only(name: str, tmp: Path) -> Any:
    """The recipe ``name`` without its compression: the baseline, its health check and the dense export."""
    recipe = load_recipe(ROOT / "recipes" / f"{name}.yaml", [f"export.dir={tmp / name / 'bundle'}",
                                                             "export.objective=size"])
    assert recipe.export is not None
    return recipe.model_copy(update={"sparsity": None, "channels": None, "distillation": None, "sweep": None,
                                     "quantization": recipe.quantization.model_copy(update={"mode": "none"}),
                                     "export": recipe.export.model_copy(update={"io": "float32"})})


def _key(recipe: Any) -> str:
    """What decides a baseline: two recipes with the same key train the same dense model."""
    d = recipe.model_dump(mode="json")
    key = {k: d.get(k) for k in ("seed", "data", "model", "task", "baseline", "training")}
    key["export"] = {k: (d.get("export") or {}).get(k) for k in ("verify", "max_accuracy_drop", "threads")}
    return json.dumps(key, sort_keys=True)


def one(name: str, tmp: Path) -> dict[str, Any]:
    """Train ``name``'s baseline and return its health record from summary.json."""
    recipe = _baseline_only(name, tmp)
    t = time.perf_counter()
    try:
        s = train(recipe, run_dir=tmp / name, force=True).summary
    except Exception as exc:  # a failed check stops the run: reported, the other recipes still run
        return {"recipe": name, "status": "error", "error": f"{type(exc).__name__}: {str(exc)[:600]}",
                "seconds": time.perf_counter() - t}
    h = s.baseline.health or {}
    tv = h.get("tflite_validation") or {}
    return {"recipe": name, "status": h.get("status"), "metric": h.get("metric"), "value": h.get("value"),
            "chance": h.get("chance"), "threshold": h.get("threshold"), "split": h.get("split"),
            "findings": [f.get("code") if isinstance(f, dict) else str(f) for f in h.get("findings") or []],
            "tflite_drop": tv.get("drop"), "tflite_unit": tv.get("unit"), "tflite_agreement": tv.get("agreement"),
            "epochs": recipe.baseline.epochs, "test_metric": s.baseline.metric,
            "seconds": time.perf_counter() - t}


def _fmt(v: Any, pct: bool) -> str:
    if not isinstance(v, (int, float)):
        return "–"
    return f"{100 * v:.2f}%" if pct else f"{v:.4g}"


def table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table printed at the end."""
    out = ["| recipe | epochs | validation metric | value | chance | status | findings | dense .tflite vs Keras | s |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] == "error":
            out.append(f"| {r['recipe']} | | | | | **error** | {r['error'][:160]} | | {r['seconds']:.0f} |")
            continue
        pct = r["metric"] in ("accuracy", "auc") or str(r["metric"]).endswith(("/accuracy", "/auc"))
        tfl = "–" if r["tflite_drop"] is None else f"{r['tflite_drop']:+.3g} {r['tflite_unit'] or ''}".strip()
        if r.get("tflite_agreement") is not None:
            tfl += f", agreement {100 * r['tflite_agreement']:.2f}%"
        shared = f" (= {r['same_as']})" if r.get("same_as") else ""
        out.append(f"| {r['recipe']}{shared} | {r['epochs']} | {r['metric']} | {_fmt(r['value'], pct)} | "
                   f"{_fmt(r['chance'], pct)} | {r['status']} | {', '.join(r['findings']) or 'none'} | {tfl} | "
                   f"{r['seconds']:.0f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", default=",".join(sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml"))))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "health.json"))
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    seen: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as d:
        for name in args.recipes.split(","):
            key = _key(_baseline_only(name, Path(d)))
            if key in seen:  # the same dense model: its figures, not a second training
                rows.append({**seen[key], "recipe": name, "same_as": seen[key]["recipe"], "seconds": 0.0})
            else:
                seen[key] = one(name, Path(d))
                rows.append(seen[key])
            print(json.dumps(rows[-1]), flush=True)
    Path(args.out).write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    print(table(rows))
    sys.exit(0 if all(r["status"] == "ok" for r in rows) else 1)


if __name__ == "__main__":
    main()
