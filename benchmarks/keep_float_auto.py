"""``quantization.keep_float: auto`` on the sensor-fusion MLP (issue 32, item 4): does the search reach the
allowed drop, and what does each step measure?

The model (``tests.factories:scaled_input_mlp``) reads 15 unit-scale features and one raw reading about 1000x
their scale; plain int8 loses tens of points. Each seed trains it (8 epochs, 2,000 samples) and exports int8 with
``keep_float: auto`` and the default ``export.max_accuracy_drop`` (2 points), objective size, and prints: plain
int8's drop, every set of float ops the search measured (from export.json's ``keep_float.tried``), the kept
conversion and its drop. Target (PASS/FAIL): every seed ends in an int8 model within the allowed drop, unless no
op is left to keep float.

Usage::

    python benchmarks/keep_float_auto.py --seeds 0,1,2 [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run_one(seed: int, work: Path, max_drop: float) -> dict[str, Any]:
    from edgesparse.recipe import validate_recipe
    from edgesparse.run import train
    from tests.conftest import tiny_recipe
    from tests.test_int16x8 import _fusion_data

    recipe = validate_recipe(tiny_recipe(
        work, data={"npz": _fusion_data(work, n=2000), "batch_size": 64},
        model={"factory": "tests.factories:scaled_input_mlp"}, seed=seed,
        baseline={"epochs": 8, "optimizer": {"learning_rate": 0.01}}, sparsity=None,
        quantization={"mode": "int8", "keep_float": "auto"},
        export={"objective": "size", "sparse_encoding": False, "max_accuracy_drop": max_drop}))
    s = train(recipe, progress=False).summary
    exp = json.loads((Path(s.tflite.bundle) / "export.json").read_text()) if s.tflite else {}
    plain = [c for c in exp.get("candidates", []) if c.get("mode") == "int8" and not c.get("keep_float")]
    return {"seed": seed, "int8_drop": min((c["drop"] for c in plain if c.get("drop") is not None), default=None),
            "tried": (exp.get("keep_float") or {}).get("tried", []),
            "kept": s.tflite.quantization if s.tflite else None, "float_ops": s.tflite.float_ops if s.tflite else None,
            "drop": None if not s.tflite or s.tflite.metric is None or s.baseline.metric is None else
            round(100 * (s.baseline.metric - s.tflite.metric), 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--max-drop", type=float, default=2.0)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        with tempfile.TemporaryDirectory(prefix="edgesparse-keepfloat-") as tmp:
            r = run_one(seed, Path(tmp), args.max_drop)
        results.append(r)
        steps = "; ".join(f"{'+'.join(t['ops'])}: {t['drop'] if t['drop'] is None else round(t['drop'], 2)}"
                          for t in r["tried"])
        print(f"seed {seed}: int8 alone loses {r['int8_drop']}; tried {steps or 'nothing'}; kept {r['kept']} "
              f"(float ops {r['float_ops']}), {r['drop']} points below the Keras baseline")
    ok = all(r["kept"] == "int8" for r in results)
    print(f"every seed int8 within {args.max_drop}: {'PASS' if ok else 'FAIL'}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
