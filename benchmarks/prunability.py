"""Which Keras applications edgesparse can prune, in both Keras flavours (issue 10).

Every architecture is built with ``weights=None`` at a small input (32x32, or the minimum it accepts),
once with tf_keras and once with Keras 3 (imported through edgesparse's Keras 3 translation), pruned to
50% for a few steps on generated ``shapes`` images, exported as int8 .tflite with the sparse encoding
and verified with LiteRT. Writes one JSON line per run and the table ``docs/prunability.md``.

    python benchmarks/prunability.py                        # everything (about half an hour on 2 cores)
    python benchmarks/prunability.py --arch MobileNetV2 --flavour keras3

Each run is an ordinary ``edgesparse`` run (baseline epochs 0, sparsity 2 epochs of 3 steps, int8) in
its own process, so one architecture's failure or memory does not affect the next.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: architecture -> smallest square input it accepts (32 where it builds at 32x32).
ARCHS: dict[str, int] = {
    "MobileNet": 32, "MobileNetV2": 32, "MobileNetV3Small": 32, "MobileNetV3Large": 32,
    "EfficientNetB0": 32, "EfficientNetV2B0": 32, "ResNet50": 32, "ResNet50V2": 32, "DenseNet121": 32,
    "NASNetMobile": 32, "Xception": 71, "InceptionV3": 75, "ConvNeXtTiny": 32, "RegNetX002": 32,
}
FLAVOURS = ("tf_keras", "keras3")
TARGET = 0.5


def build(arch: str, flavour: str, input_shape: tuple[int, ...], num_classes: int) -> Any:
    """Model factory used by the runs' recipes (``factory: benchmarks.prunability:build``)."""
    from edgesparse import _tf
    from edgesparse.errors import ModelError

    keras = _tf.keras3() if flavour == "keras3" else _tf.keras()
    ctor = getattr(keras.applications, arch, None)
    if ctor is None:
        raise ModelError(f"{arch} is not among the applications of {flavour} {keras.__version__}")
    return ctor(weights=None, input_shape=tuple(input_shape), classes=num_classes)


def recipe_for(arch: str, flavour: str, workdir: Path) -> dict[str, Any]:
    """The recipe of one run: pretrained-style (no baseline epochs), 50% in a few steps, int8 export."""
    return {
        "name": f"{arch}_{flavour}",
        "seed": 0,
        "output_dir": str(workdir / "run"),
        "data": {"builtin": "shapes", "image_size": ARCHS[arch], "num_classes": 4, "samples_per_class": 16,
                 "batch_size": 16},
        "model": {"factory": "benchmarks.prunability:build", "kwargs": {"arch": arch, "flavour": flavour}},
        "baseline": {"epochs": 0},
        # random weights: the accuracy guard against dense means nothing here
        "sparsity": {"final": TARGET, "start": 0, "end": 1, "epochs": 2, "frequency": 1, "on_shortfall": "warn",
                     "on_drop": "warn"},
        "quantization": {"mode": "int8"},
        # Random-weight models: accuracy means nothing, agreement is reported instead.
        "export": {"sparse_encoding": True, "objective": "size", "representative_samples": 8, "max_accuracy_drop": 100.0,
                   "dir": str(workdir / "bundle")},
    }


def run_one(arch: str, flavour: str, workdir: Path) -> dict[str, Any]:
    """Run one architecture in this process and return its table row."""
    from edgesparse.errors import EdgesparseError
    from edgesparse.recipe import validate_recipe
    from edgesparse.run import train

    row: dict[str, Any] = {"architecture": arch, "flavour": flavour, "input": ARCHS[arch]}
    t0 = time.perf_counter()
    try:
        s = train(validate_recipe(recipe_for(arch, flavour, workdir))).summary.to_json()
    except EdgesparseError as exc:
        row.update(passed=False, reason=str(exc).splitlines()[0][:300])
        return row
    except Exception as exc:  # noqa: BLE001 - a benchmark records every failure
        row.update(passed=False, reason=f"{type(exc).__name__}: {str(exc).splitlines()[0][:280] if str(exc) else ''}")
        return row
    m, t = s["model"], s.get("tflite", {})
    row.update(
        params=m["all_params"], coverage=m["coverage"], sparsity_pruned=m["sparsity_pruned_kernels"],
        sparsity_all=m["sparsity_all_params"], dense_bytes=s["baseline"].get("tflite_bytes"),
        sparse_bytes=t.get("bytes"), agreement=t.get("agreement"), tflite_max_abs_diff=t.get("max_abs_diff"), seconds=round(time.perf_counter() - t0, 1),
        translation_diff=s["baseline"].get("keras3_translation_diff"), keras3_back=None,
    )
    problems = []
    if m["sparsity_pruned_kernels"] < TARGET - 0.01:
        problems.append(f"sparsity {m['sparsity_pruned_kernels']:.1%} < {TARGET:.0%}")
    if t.get("bytes") is None:
        problems.append("no verified .tflite")
    if flavour == "keras3":
        back = s.get("keras3") or {}
        row["keras3_back"] = back.get("max_abs_diff")
        if "error" in back or back.get("max_abs_diff") is None:
            problems.append("Keras 3 write-back failed: " + str(back.get("error", "missing"))[:200])
    row.update(passed=not problems, reason="; ".join(problems))
    return row


def _child(arch: str, flavour: str) -> None:
    with tempfile.TemporaryDirectory(prefix="prunability-") as tmp:
        print("ROW " + json.dumps(run_one(arch, flavour, Path(tmp))), flush=True)


def _fmt(v: Any, kind: str) -> str:
    if v is None:
        return "—"
    if kind == "sci":
        return f"{v:.1e}"
    return {"pct": f"{v:.1%}", "int": f"{int(v):,}", "str": str(v)}[kind]


def _absent(r: dict[str, Any]) -> bool:
    return not r["passed"] and "is not among the applications" in str(r.get("reason", ""))


def _diffs(r: dict[str, Any]) -> str:
    if r["flavour"] != "keras3" or r.get("translation_diff") is None:
        return "—"
    back = r.get("keras3_back")
    return f"{r['translation_diff']:.1e} / {'—' if back is None else f'{back:.1e}'}"


def write_markdown(rows: list[dict[str, Any]], path: Path, command: str) -> None:
    """The table of docs/prunability.md, with pass rates per flavour."""
    lines = [
        "# Prunability of the Keras applications",
        "",
        f"Generated by `{command}` (TF 2.21, tf_keras 2.21, Keras 3, tfmot 0.8.1, ai-edge-litert 2.3, 2-core x86-64).",
        "Each architecture: `weights=None` at the input size shown, pruned to 50% (unstructured, every layer "
        "tfmot's prune registry supports) for 6 steps on generated `shapes` images, int8 .tflite with the sparse "
        "encoding, verified with LiteRT. *Coverage* is pruned-kernel parameters / all parameters; *sparsity "
        "(all)* is zeros among all parameters, read from the weights. Agreement is top-1 TFLite vs Keras on the "
        "test split; with random weights the softmax outputs are nearly uniform and top-1 is decided by "
        "differences far below int8 resolution, so agreement means little here (0% and 100% both occur); the "
        "largest absolute difference of the output probabilities (TFLite int8 vs Keras float, test split) is the "
        "better figure (recorded from the seventh row on; '—' before). The Keras 3 rows are "
        "imported through edgesparse's translation and written back as Keras 3 (`final_keras3.keras`), both "
        "checked to 1e-5 on random inputs.",
        "",
    ]
    for fl in FLAVOURS:
        mine = [r for r in rows if r["flavour"] == fl and not _absent(r)]
        if mine:
            ok = sum(r["passed"] for r in mine)
            absent = [r["architecture"] for r in rows if r["flavour"] == fl and _absent(r)]
            note = f" ({', '.join(absent)}: not among this flavour's applications, not counted)" if absent else ""
            lines.append(f"- **{fl}**: {ok}/{len(mine)} pass ({ok / len(mine):.0%}){note}")
    missing = [f"{a} ({fl})" for a in ARCHS for fl in FLAVOURS
               if not any(r["architecture"] == a and r["flavour"] == fl for r in rows)]
    if missing:
        lines.append(f"- not run yet (out of time in this sitting; `python benchmarks/prunability.py` resumes): "
                     f"{', '.join(missing)}")
    lines += ["", "| architecture | flavour | input | parameters | coverage | sparsity (all) | dense .tflite B | "
              "sparse .tflite B | agreement | TFLite max abs diff | Keras 3 diff in / back | result |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        result = "pass" if r["passed"] else ("n/a: " if _absent(r) else "FAIL: ") + str(r.get("reason", ""))
        lines.append(
            f"| {r['architecture']} | {r['flavour']} | {r['input']} | {_fmt(r.get('params'), 'int')} | "
            f"{_fmt(r.get('coverage'), 'pct')} | {_fmt(r.get('sparsity_all'), 'pct')} | "
            f"{_fmt(r.get('dense_bytes'), 'int')} | {_fmt(r.get('sparse_bytes'), 'int')} | "
            f"{_fmt(r.get('agreement'), 'pct')} | {_fmt(r.get('tflite_max_abs_diff'), 'sci')} | {_diffs(r)} | {result} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", nargs="*", default=list(ARCHS))
    ap.add_argument("--flavour", nargs="*", default=list(FLAVOURS), choices=FLAVOURS)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "prunability.md")
    ap.add_argument("--jsonl", type=Path, default=ROOT / "docs" / "prunability.jsonl")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--report-only", action="store_true", help="rewrite the table from the JSON lines")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(*args.child)
        return
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done: dict[tuple[str, str], dict[str, Any]] = {}
    if args.jsonl.exists():  # resume: keep finished rows
        for line in args.jsonl.read_text().splitlines():
            r = json.loads(line)
            done[(r["architecture"], r["flavour"])] = r
    for arch in [] if args.report_only else args.arch:
        for fl in args.flavour:
            if (arch, fl) in done:
                continue
            t0 = time.perf_counter()
            try:
                proc = subprocess.run([sys.executable, __file__, "--child", arch, fl], capture_output=True, text=True,
                                      env=env, cwd=ROOT, timeout=args.timeout)
                rows = [json.loads(x[4:]) for x in proc.stdout.splitlines() if x.startswith("ROW ")]
                row = rows[0] if rows else {"architecture": arch, "flavour": fl, "input": ARCHS[arch], "passed": False,
                                            "reason": f"crashed (exit {proc.returncode}): {proc.stderr.strip()[-200:]}"}
            except subprocess.TimeoutExpired:
                row = {"architecture": arch, "flavour": fl, "input": ARCHS[arch], "passed": False,
                       "reason": f"timed out after {args.timeout:.0f} s"}
            done[(arch, fl)] = row
            with args.jsonl.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{arch:18s} {fl:8s} {'pass' if row['passed'] else 'FAIL'} {time.perf_counter() - t0:6.1f}s "
                  f"{row.get('reason', '')}", flush=True)
    order = {a: i for i, a in enumerate(ARCHS)}
    rows = sorted(done.values(), key=lambda r: (order.get(r["architecture"], 99), r["flavour"]))
    write_markdown(rows, args.out, "python benchmarks/prunability.py")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
