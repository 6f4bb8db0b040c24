"""Which Keras applications edgesparse can prune, in both Keras flavours (issue 10).

Every architecture is built with ``weights=None`` at a small input (32x32, or the minimum it accepts),
once with tf_keras and once with Keras 3 (imported through edgesparse's Keras 3 translation), pruned to
50% for a few steps on generated ``shapes`` images, exported as int8 .tflite with the sparse encoding
and verified with LiteRT. Writes one JSON line per run and the table ``docs/prunability.md``.

    python benchmarks/prunability.py                        # everything (about half an hour on 2 cores)
    python benchmarks/prunability.py --arch MobileNetV2 --flavour keras3
    python benchmarks/prunability.py --stage surgery        # channel surgery only (about 7 minutes on 2 cores)

Each run is an ordinary ``edgesparse`` run (baseline epochs 0, sparsity 2 epochs of 3 steps, int8) in
its own process, so one architecture's failure or memory does not affect the next. ``--stage surgery``
(issue 11, 7d) runs the channel stage instead (:func:`surgery_one`: dependency graph, l2 importance, uniform
ratio 0.5, the thinned model checked against the masked one) and adds its result to each architecture's row.
Finished rows are kept (``--redo`` runs them again).
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
#: Channel surgery: fraction of every group's channels removed, and the allowed |thinned - masked| difference.
SURGERY_RATIO = 0.5
SURGERY_TOLERANCE = 1e-4


def build(arch: str, flavour: str, input_shape: tuple[int, ...], num_classes: int, logits: bool = False) -> Any:
    """Model factory used by the runs' recipes (``factory: benchmarks.prunability:build``).

    ``logits``: no softmax on the classifier (the surgery check compares logits, which a softmax would squash).
    """
    from edgesparse import _tf
    from edgesparse.errors import ModelError

    keras = _tf.keras3() if flavour == "keras3" else _tf.keras()
    ctor = getattr(keras.applications, arch, None)
    if ctor is None:
        raise ModelError(f"{arch} is not among the applications of {flavour} {keras.__version__}")
    extra = {"classifier_activation": None} if logits else {}
    return ctor(weights=None, input_shape=tuple(input_shape), classes=num_classes, **extra)


def _randomize_scales(model: Any, seed: int = 0) -> None:
    """Non-trivial per-channel statistics and scales, so that a wrongly sliced channel changes the outputs.

    BatchNormalization gets random statistics, gamma and beta; ConvNeXt's LayerScale (initialised at 1e-6, which
    would hide what its block computes) a random scale.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "BatchNormalization":
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(w.dtype)
                               if "variance" in v.name or "gamma" in v.name
                               else rng.normal(0.0, 0.1, w.shape).astype(w.dtype)
                               for w, v in zip(layer.get_weights(), layer.weights)])
        elif kind == "LayerScale":
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(w.dtype) for w in layer.get_weights()])


def _reason_counts(frozen: dict[str, str]) -> dict[str, int]:
    """Frozen layers per reason (the reason's head: the class or the rule, without per-layer numbers)."""
    import re

    counts: dict[str, int] = {}
    for why in frozen.values():
        head = re.split(r"[:(]", why, maxsplit=1)[0].strip()
        counts[head] = counts.get(head, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def surgery_one(arch: str, flavour: str, samples: int = 4) -> dict[str, Any]:
    """Channel-prune one architecture (l2, uniform, ratio 0.5) and check the thinned model against the masked one.

    The model is built with ``weights=None`` and logits out, prepared as every run prepares it (Keras 3
    translated, nested models flattened), its BatchNorm statistics and LayerScale scales randomised; the check
    runs on ``samples`` random inputs at :data:`SURGERY_TOLERANCE`.
    """
    import numpy as np

    from edgesparse import _tf
    from edgesparse.errors import EdgesparseError
    from edgesparse.models import prepare_model
    from edgesparse.recipe import ChannelsConfig
    from edgesparse.train.channels import plan_channels
    from edgesparse.train.channels.surgery import check_equal, mask_model, thin_model

    size = ARCHS[arch]
    out: dict[str, Any] = {"ratio": SURGERY_RATIO, "importance": "l2", "allocation": "uniform"}
    t0 = time.perf_counter()
    _tf.set_seed(0)  # the random initial weights too: the same figures every time
    try:
        model = prepare_model(build(arch, flavour, (size, size, 3), 4, logits=True))
    except EdgesparseError as exc:
        return {**out, "passed": False, "absent": "is not among the applications" in str(exc),
                "reason": str(exc).splitlines()[0][:300]}
    _randomize_scales(model)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.0, 1.0, (samples, size, size, 3)).astype(np.float32)
    cfg = ChannelsConfig(ratio=SURGERY_RATIO, importance="l2", allocation="uniform")
    try:
        plan = plan_channels(model, cfg, x, np.zeros(samples, dtype=np.int64))
        info = plan.describe()
        masked, thinned = mask_model(model, plan.graph, plan.keep), thin_model(model, plan.graph, plan.keep)
    except Exception as exc:  # noqa: BLE001 - a benchmark records every failure
        return {**out, "passed": False, "reason": f"{type(exc).__name__}: {str(exc).splitlines()[0][:280]}",
                "seconds": round(time.perf_counter() - t0, 1)}
    pruned = sum(g["kept"] < g["channels"] for g in info["groups"])
    out.update(groups=len(info["groups"]), pruned_groups=pruned, frozen_layers=len(info["frozen"]),
               frozen_reasons=_reason_counts(info["frozen"]), dense_macs=info["dense_macs"], macs=info["macs"],
               dense_params=int(model.count_params()), params=int(thinned.count_params()))
    dense_out, masked_out = model.predict(x, verbose=0), masked.predict(x, verbose=0)
    # the logits' scale, and how much removing the channels changed them (what a wrong slice would show)
    out.update(output_scale=float(np.max(np.abs(dense_out))),
               masked_vs_dense=float(np.max(np.abs(masked_out - dense_out))))
    problems = []
    try:
        out["max_abs_diff"] = check_equal(masked, thinned, x, SURGERY_TOLERANCE)
    except EdgesparseError as exc:
        out["max_abs_diff"] = float(np.max(np.abs(masked_out - thinned.predict(x, verbose=0))))
        problems.append(str(exc).splitlines()[0][:200])
    if not pruned:
        problems.append("no group was pruned (every channel-making layer frozen)")
    if out["params"] != info["params"]:
        problems.append(f"thinned model has {out['params']:,} parameters, the cost model predicted {info['params']:,}")
    out.update(passed=not problems, reason="; ".join(problems), seconds=round(time.perf_counter() - t0, 1))
    return out


def recipe_for(arch: str, flavour: str, workdir: Path) -> dict[str, Any]:
    """The recipe of one run: pretrained-style (no baseline epochs), 50% in a few steps, int8 export."""
    return {
        "name": f"{arch}_{flavour}",
        "seed": 0,
        "output_dir": str(workdir / "run"),
        "data": {"builtin": "shapes", "image_size": ARCHS[arch], "num_classes": 4, "samples_per_class": 16,
                 "batch_size": 16},
        "model": {"factory": "benchmarks.prunability:build", "kwargs": {"arch": arch, "flavour": flavour}},
        "baseline": {"epochs": 0, "on_broken": "warn"},  # random weights are at chance: the health check warns
        # random weights: the accuracy guard against dense means nothing here
        "sparsity": {"final": TARGET, "start": 0, "end": 1, "epochs": 2, "frequency": 1, "on_shortfall": "warn",
                     "on_drop": "warn"},
        "quantization": {"mode": "int8"},
        # Random-weight models: accuracy means nothing, and top-1 agreement on 12 near-tied random outputs is not a
        # gate either (export.min_agreement 0): it is reported in the table instead.
        "export": {"sparse_encoding": True, "objective": "size", "representative_samples": 8, "max_accuracy_drop": 100.0,
                   "min_agreement": 0.0, "dir": str(workdir / "bundle")},
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


def _child(arch: str, flavour: str, stage: str) -> None:
    if stage == "surgery":
        print("ROW " + json.dumps(surgery_one(arch, flavour)), flush=True)
        return
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


def _surgery_cell(r: dict[str, Any]) -> str:
    sg = r.get("surgery")
    if sg is None:
        return "—"
    if sg.get("absent"):
        return "n/a"
    return "pass" if sg["passed"] else "FAIL"


def _pass_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Pass rates per flavour: the pruning runs, then the channel surgery."""
    lines = []
    for fl in FLAVOURS:
        mine = [r for r in rows if r["flavour"] == fl and "passed" in r and not _absent(r)]
        if mine:
            ok = sum(r["passed"] for r in mine)
            absent = [r["architecture"] for r in rows if r["flavour"] == fl and _absent(r)]
            note = f" ({', '.join(absent)}: not among this flavour's applications, not counted)" if absent else ""
            lines.append(f"- **{fl}**: {ok}/{len(mine)} pass ({ok / len(mine):.0%}){note}")
    surgery = [r for r in rows if "surgery" in r and not r["surgery"].get("absent")]
    if surgery:
        per = ", ".join(f"{fl} {sum(r['surgery']['passed'] for r in surgery if r['flavour'] == fl)}/"
                        f"{sum(r['flavour'] == fl for r in surgery)}" for fl in FLAVOURS)
        ok = sum(r["surgery"]["passed"] for r in surgery)
        lines.append(f"- **channel surgery** (issue 11, 7d; see below): {ok}/{len(surgery)} pass "
                     f"({ok / len(surgery):.0%}; {per})")
    missing = [f"{a} ({fl})" for a in ARCHS for fl in FLAVOURS
               if not any(r["architecture"] == a and r["flavour"] == fl and "passed" in r for r in rows)]
    if missing:
        lines.append(f"- not run yet (out of time in this sitting; `python benchmarks/prunability.py` resumes): "
                     f"{', '.join(missing)}")
    return lines


def _prune_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| architecture | flavour | input | parameters | coverage | sparsity (all) | dense .tflite B | "
             "sparse .tflite B | agreement | TFLite max abs diff | Keras 3 diff in / back | result | channel surgery |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "passed" not in r:
            result = "not run"
        else:
            result = "pass" if r["passed"] else ("n/a: " if _absent(r) else "FAIL: ") + str(r.get("reason", ""))
        lines.append(
            f"| {r['architecture']} | {r['flavour']} | {r['input']} | {_fmt(r.get('params'), 'int')} | "
            f"{_fmt(r.get('coverage'), 'pct')} | {_fmt(r.get('sparsity_all'), 'pct')} | "
            f"{_fmt(r.get('dense_bytes'), 'int')} | {_fmt(r.get('sparse_bytes'), 'int')} | "
            f"{_fmt(r.get('agreement'), 'pct')} | {_fmt(r.get('tflite_max_abs_diff'), 'sci')} | {_diffs(r)} | "
            f"{result} | {_surgery_cell(r)} |")
    return lines


def _tol() -> str:
    return f"{SURGERY_TOLERANCE:.0e}".replace("e-0", "e-")


def _surgery_section(rows: list[dict[str, Any]]) -> list[str]:
    """The channel surgery table: groups, frozen layers and why, costs, the three output differences."""
    lines = [
        "", "## Channel surgery (issue 11)", "",
        f"Generated by `python benchmarks/prunability.py --stage surgery`. Each architecture is built again with "
        "`weights=None` at the same input but with logits out (no softmax, which would hide differences), prepared "
        "as a run prepares it (Keras 3 translated, nested models flattened) and its BatchNormalization statistics "
        "and scales (and ConvNeXt's LayerScale, initialised at 1e-6) randomised, so that a wrongly sliced channel "
        "changes the outputs. Then the channel stage: "
        f"`build_graph`, importance `l2`, allocation `uniform` at ratio {SURGERY_RATIO} (every group loses half its "
        "channels), `mask_model` (removed channels zeroed) against `thin_model` (a rebuilt, smaller model), "
        f"`check_equal` at {_tol()} on 4 random inputs. *Groups* counts the prunable groups (all "
        "were pruned where it says so); *frozen* lists the layers the graph froze and why (the model input and "
        "output always are); MACs and parameters are the cost model's (batch 1; its parameters are checked "
        "against the thinned model's `count_params()`). *Masked vs dense* shows that removing the channels "
        "changed the logits (of magnitude *logits max*); *thinned vs masked* must stay within the tolerance. "
        "A row passes when the thinned model computes what the masked one does and at least one group was pruned.",
        "", "| architecture | flavour | groups (pruned) | frozen layers | MACs dense → thinned | parameters dense → "
        "thinned | logits max | masked vs dense | thinned vs masked | result |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sg = r.get("surgery")
        if sg is None or sg.get("absent"):
            continue
        reasons = ", ".join(f"{k} {v}" for k, v in (sg.get("frozen_reasons") or {}).items())
        frozen = f"{sg['frozen_layers']} ({reasons})" if "frozen_layers" in sg else "—"
        groups = f"{sg['groups']} ({sg['pruned_groups']})" if "groups" in sg else "—"
        result = "pass" if sg["passed"] else f"FAIL: {sg.get('reason', '')}"
        lines.append(
            f"| {r['architecture']} | {r['flavour']} | {groups} | {frozen} | "
            f"{_fmt(sg.get('dense_macs'), 'int')} → {_fmt(sg.get('macs'), 'int')} | "
            f"{_fmt(sg.get('dense_params'), 'int')} → {_fmt(sg.get('params'), 'int')} | "
            f"{_fmt(sg.get('output_scale'), 'sci')} | {_fmt(sg.get('masked_vs_dense'), 'sci')} | "
            f"{_fmt(sg.get('max_abs_diff'), 'sci')} | {result} |")
    return lines


def write_markdown(rows: list[dict[str, Any]], path: Path, command: str) -> None:
    """The tables of docs/prunability.md, with pass rates per flavour."""
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
        "checked to 1e-5 on random inputs. *Channel surgery* is the channel-pruning check of the section below.",
        "",
    ]
    lines += _pass_lines(rows) + [""] + _prune_table(rows)
    if any("surgery" in r for r in rows):
        lines += _surgery_section(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _in_child(arch: str, flavour: str, stage: str, timeout: float) -> dict[str, Any]:
    """One architecture's run (or surgery) in its own process; a crash or a timeout is a failed row."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    try:
        proc = subprocess.run([sys.executable, __file__, "--child", arch, flavour, "--stage", stage],
                              capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"passed": False, "reason": f"timed out after {timeout:.0f} s"}
    rows = [json.loads(x[4:]) for x in proc.stdout.splitlines() if x.startswith("ROW ")]
    return rows[0] if rows else {"passed": False,
                                 "reason": f"crashed (exit {proc.returncode}): {proc.stderr.strip()[-200:]}"}


def _load(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    done: dict[tuple[str, str], dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            done.setdefault((r["architecture"], r["flavour"]), {}).update(r)
    return done


def _save(rows: dict[tuple[str, str], dict[str, Any]], path: Path) -> None:
    """All rows, written atomically (a surgery result updates its architecture's row)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in _ordered(rows)))
    tmp.replace(path)


def _ordered(rows: dict[tuple[str, str], dict[str, Any]]) -> list[dict[str, Any]]:
    order = {a: i for i, a in enumerate(ARCHS)}
    return sorted(rows.values(), key=lambda r: (order.get(r["architecture"], 99), r["flavour"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", nargs="*", default=list(ARCHS))
    ap.add_argument("--flavour", nargs="*", default=list(FLAVOURS), choices=FLAVOURS)
    ap.add_argument("--stage", choices=("prune", "surgery"), default="prune",
                    help="prune: the pruning runs (issue 10); surgery: channel pruning surgery only (issue 11)")
    ap.add_argument("--redo", action="store_true", help="run again what the JSON lines already hold")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "prunability.md")
    ap.add_argument("--jsonl", type=Path, default=ROOT / "docs" / "prunability.jsonl")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--report-only", action="store_true", help="rewrite the table from the JSON lines")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(*args.child, args.stage)
        return
    done = _load(args.jsonl)  # resume: keep finished rows
    for arch in [] if args.report_only else args.arch:
        for fl in args.flavour:
            row = done.setdefault((arch, fl), {"architecture": arch, "flavour": fl, "input": ARCHS[arch]})
            if not args.redo and ("surgery" in row if args.stage == "surgery" else "passed" in row):
                continue
            t0 = time.perf_counter()
            result = _in_child(arch, fl, args.stage, args.timeout)
            if args.stage == "surgery":
                row["surgery"] = result
            else:
                row.update({"architecture": arch, "flavour": fl, "input": ARCHS[arch], **result})
            _save(done, args.jsonl)
            print(f"{arch:18s} {fl:8s} {args.stage} {'pass' if result['passed'] else 'FAIL'} "
                  f"{time.perf_counter() - t0:6.1f}s {result.get('reason', '')}", flush=True)
    write_markdown(_ordered(done), args.out, "python benchmarks/prunability.py")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
