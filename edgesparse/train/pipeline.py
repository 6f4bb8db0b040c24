"""The ``train`` job: baseline -> sparsify -> quantize -> export, with a resumable run directory.

Run directory::

    RUN_DIR/recipe.lock.yaml   resolved recipe        RUN_DIR/state.json    finished phases
    RUN_DIR/baseline.keras     dense baseline         RUN_DIR/sparse.keras  pruned, stripped
    RUN_DIR/final.weights.h5   QAT/PQAT weights       RUN_DIR/history.csv   every epoch
    RUN_DIR/logs/<phase>/      TensorBoard (pruning summaries included)
    RUN_DIR/backup/<phase>/    per-epoch checkpoints of the phase in progress (for --resume)
    RUN_DIR/summary.json       figures of the run
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse import _io, _tf
from edgesparse.data import load_dataset
from edgesparse.errors import DataError, EdgesparseError, InterruptedRun, RecipeError, TrainError
from edgesparse.models import build_model
from edgesparse.models.keras3 import KERAS3_TAG, to_keras3
from edgesparse.recipe import Recipe, dump_recipe, load_recipe, recipe_dir
from edgesparse.train import coverage, fit, sparsity
from edgesparse.train.quantize import MODES

Log = Callable[[str], None]


@dataclass
class RunResult:
    """What ``train`` produced."""

    run_dir: Path
    summary: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


@dataclass
class LoadedRun:
    """Models and data re-created from a run directory."""

    recipe: Recipe
    data: Any
    dense_model: Any
    final_model: Any


def default_run_dir(recipe: Recipe) -> Path:
    """``output_dir`` of the recipe, else ``runs/<name>``."""
    return Path(recipe.output_dir) if recipe.output_dir else Path("runs") / recipe.name


def _check_writable(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise RecipeError(
            f"cannot write to the output directory '{path}' ({exc.strerror or exc}). Choose another with "
            "`--set output_dir=PATH` (or `-o PATH`) or fix its permissions."
        ) from None


def check_compatibility(model: Any, data: Any) -> None:
    """Fail early when the data cannot feed the model.

    Raises:
        DataError: input shape or label range does not match the model.
    """
    expected = tuple(model.input_shape[1:])
    got = tuple(data.input_shape)
    if len(expected) != len(got) or any(e is not None and e != g for e, g in zip(expected, got)):
        raise DataError(
            f"the data's samples have shape {got} but the model '{model.name}' expects {expected}. "
            "Resize the data (image_size/channels in the data section) or build the model for this input."
        )
    outputs = model.output_shape[-1]
    for split, y in (("train", data.y_train), ("validation", data.y_val), ("test", data.y_test)):
        if len(y) and (int(np.max(y)) >= outputs or int(np.min(y)) < 0):
            raise DataError(
                f"{split} labels range over [{int(np.min(y))}, {int(np.max(y))}] but the model has {outputs} "
                f"outputs (classes 0..{outputs - 1}). Give the model one output per class, or fix the labels."
            )


class _State:
    """Phases finished in a run directory, keyed to the recipe they were run with."""

    def __init__(self, run_dir: Path, recipe_hash: str, resume: bool) -> None:
        self.path = run_dir / "state.json"
        self.data: dict[str, Any] = {"recipe_hash": recipe_hash, "done": {}, "recipe_dir": None}
        if resume and self.path.exists():
            old = json.loads(self.path.read_text())
            if old.get("recipe_hash") != recipe_hash:
                raise RecipeError(
                    f"--resume: the recipe changed since the run in '{run_dir}' started; run without "
                    "--resume to start over, or restore the recipe."
                )
            self.data = old

    def done(self, phase: str) -> dict[str, Any] | None:
        return self.data["done"].get(phase)

    def mark(self, phase: str, info: dict[str, Any]) -> None:
        self.data["done"][phase] = info
        _io.write_json(self.path, self.data)


def _save_model(model: Any, path: Path) -> None:
    with _io.atomic_path(path, suffix=".keras") as tmp:
        tmp.unlink()
        model.save(str(tmp))


def _load_quantized(model: Any, qm: Any, weights: Path) -> Any:
    """Rebuild a QAT/PQAT model from its float model and load its trained weights.

    tfmot's quantization wrappers do not round-trip through the .keras format, so the run keeps
    the float model (sparse.keras) and the QAT weights (final.weights.h5).
    """
    qmodel = qm.prepare(model)
    qmodel.load_weights(str(weights))
    return qmodel


def _load_model(path: Path) -> Any:
    keras = _tf.keras()
    with _tf.tfmot().quantization.keras.quantize_scope():
        return keras.models.load_model(str(path), compile=False)


def train(
    recipe: Recipe,
    *,
    resume: bool = False,
    run_dir: str | Path | None = None,
    export: bool = True,
    log: Log | None = None,
    dense_model: Any | None = None,
) -> RunResult:
    """Run a recipe end to end.

    Args:
        recipe: The validated recipe.
        resume: Continue an interrupted run in ``run_dir`` from its last checkpoint.
        run_dir: Where to write; default ``recipe.output_dir`` or ``runs/<name>``.
        export: Export and verify the .tflite when the recipe has an export section.
        log: Callable receiving progress lines.
        dense_model: A trained dense baseline to start from instead of training one (the sweep
            shares one baseline between trials); it is cloned, never modified.

    Returns:
        The run directory and its summary (also written as summary.json).

    Raises:
        EdgesparseError: any stage failed; InterruptedRun on Ctrl-C.
    """
    say: Log = log or (lambda _m: None)
    t_start = time.perf_counter()
    out = Path(run_dir) if run_dir is not None else default_run_dir(recipe)
    _check_writable(out)
    lock = dump_recipe(recipe)
    state = _State(out, hashlib.sha256(lock.encode()).hexdigest()[:16], resume)
    state.data["recipe_dir"] = str(recipe_dir(recipe))
    _io.write_text(out / "recipe.lock.yaml", lock)
    try:
        with fit.graceful_interrupt(), _tf.strategy_scope(recipe.training.distribution):
            return _train(recipe, out, state, resume, export, say, dense_model, t_start)
    except KeyboardInterrupt:
        raise InterruptedRun(
            f"interrupted during a training phase. Finished phases and per-epoch checkpoints are in '{out}'; "
            "run the same command with --resume to continue from the last completed epoch."
        ) from None


def _train(recipe: Recipe, out: Path, state: _State, resume: bool, export: bool, say: Log, dense_model: Any,
           t_start: float) -> RunResult:
    """The body of :func:`train`, run inside the recipe's distribution scope."""
    _tf.set_seed(recipe.seed)
    data = load_dataset(recipe.data, recipe.seed, base_dir=recipe_dir(recipe))
    say(f"data: {data.name} train/val/test = {len(data.x_train)}/{len(data.x_val)}/{len(data.x_test)}, "
        f"input {tuple(data.input_shape)}, {data.num_classes} classes")
    history = fit.History(out / "history.csv")
    if not resume:
        history.rows = []
    common = dict(batch_size=recipe.data.batch_size, seed=recipe.seed, run_dir=out, history=history,
                  resume=resume, data=data, shuffle=recipe.training.shuffle)
    summary: dict[str, Any] = {"name": recipe.name, "run_dir": str(out), "seed": recipe.seed,
                               "data": data.describe()}
    warnings: list[str] = []
    steps_per_epoch = int(np.ceil(len(data.x_train) / recipe.data.batch_size))

    # ---- dense baseline ----------------------------------------------------------------
    if state.done("baseline"):
        dense = _load_model(out / "baseline.keras")
        base_info = state.done("baseline")
        say("baseline: reused from the interrupted run")
    else:
        if dense_model is not None:
            dense = sparsity.clone_dense(dense_model)
            base_info = {"epochs": 0, "seconds": 0.0, "step_ms": None, "shared": True}
        else:
            dense = build_model(recipe.model, tuple(data.input_shape), data.num_classes, recipe_dir(recipe))
            check_compatibility(dense, data)
            base_info = {"epochs": recipe.baseline.epochs, "seconds": 0.0, "step_ms": None,
                         "keras3_input": bool(getattr(dense, KERAS3_TAG, False)),
                         "keras3_translation_diff": getattr(dense, "_edgesparse_translation_diff", None)}
            if recipe.baseline.epochs:
                say(f"baseline: training {dense.name} ({dense.count_params():,} params) for "
                    f"{recipe.baseline.epochs} epochs")
                r = fit.run_phase("baseline", dense, epochs=recipe.baseline.epochs,
                                  optimizer=recipe.baseline.optimizer, **common)
                base_info.update(seconds=r.seconds, step_ms=r.step_ms)
        _save_model(dense, out / "baseline.keras")
        state.mark("baseline", base_info)
    check_compatibility(dense, data)
    base_acc, base_out = fit.evaluate(dense, data.x_test, data.y_test)
    say(f"baseline: test accuracy {base_acc:.2%}")
    summary["baseline"] = {"accuracy": base_acc, "params": int(dense.count_params()), **base_info}

    # ---- sparsity -------------------------------------------------------------------------
    model = dense
    plan = None
    if recipe.sparsity is not None:
        scfg = recipe.sparsity
        plan = sparsity.plan_sparsity(dense, scfg, steps_per_epoch)
        if state.done("sparsity"):
            model = _load_model(out / "sparse.keras")
            sp_info = state.done("sparsity")
            say("sparsity: reused from the interrupted run")
        else:
            pruned = sparsity.apply_pruning(dense, scfg, plan)
            names = [lp.name for lp in plan.pruned]
            say(f"sparsity: pruning {len(names)} layers to {scfg.final:.0%} ({scfg.schedule}, steps "
                f"{plan.begin_step}->{plan.end_step} every {plan.frequency}) for {scfg.epochs} epochs")
            tfmot_sp = _tf.tfmot().sparsity.keras
            r = fit.run_phase(
                "sparsity", pruned, epochs=scfg.epochs, optimizer=scfg.optimizer,
                extra_callbacks=[tfmot_sp.UpdatePruningStep(),
                                 tfmot_sp.PruningSummaries(log_dir=str(out / "logs" / "pruning"))],
                epoch_metrics=lambda m: {"sparsity": sparsity.measure_sparsity(m, names)["overall"]},
                **common,
            )
            model = sparsity.strip(pruned)
            _save_model(model, out / "sparse.keras")
            sp_info = {"epochs": scfg.epochs, "seconds": r.seconds, "step_ms": r.step_ms}
            state.mark("sparsity", sp_info)
        measured = sparsity.measure_sparsity(model, [lp.name for lp in plan.pruned])
        warnings += sparsity.check_sparsity(measured, plan, scfg.tolerance, scfg.on_shortfall)
        dense_left = sparsity.measure_sparsity(dense)["overall"]
        if recipe.baseline.epochs and dense_left > 0.05:
            raise TrainError(
                f"the dense baseline has {dense_left:.0%} zeros after pruning: its layers were shared with "
                "the pruned model. This is a bug in edgesparse; please report it."
            )
        summary["sparsity"] = {**sp_info, "plan": plan.to_dict(), "achieved": measured}
        say(f"sparsity: achieved {measured['overall']:.2%} over the pruned kernels")

    # ---- quantization ---------------------------------------------------------------------
    qcfg = recipe.quantization
    qm = MODES.get(qcfg.mode)
    final = model
    quant_info: dict[str, Any] = {"mode": qcfg.mode}
    if qm.trains and qcfg.epochs > 0:
        if state.done("quantization"):
            final = _load_quantized(model, qm, out / "final.weights.h5")
            quant_info.update(state.done("quantization") or {})
            say("quantization: reused from the interrupted run")
        else:
            assert qm.prepare is not None
            qmodel = qm.prepare(model)
            say(f"quantization: {qcfg.mode} fine-tuning for {qcfg.epochs} epochs")
            r = fit.run_phase("quantization", qmodel, epochs=qcfg.epochs, optimizer=qcfg.optimizer, **common)
            final = qmodel
            with _io.atomic_path(out / "final.weights.h5", suffix=".weights.h5") as tmp:
                final.save_weights(str(tmp))
            quant_info.update(epochs=qcfg.epochs, seconds=r.seconds, step_ms=r.step_ms)
            state.mark("quantization", {k: v for k, v in quant_info.items() if k != "mode"})
    elif qm.trains:
        assert qm.prepare is not None
        final = qm.prepare(model)
    if plan is not None:
        before = sparsity.measure_sparsity(model, [lp.name for lp in plan.pruned])
        after = sparsity.measure_sparsity(final, [lp.name for lp in plan.pruned])
        kept = after["overall"] >= before["overall"] - recipe.sparsity.tolerance  # type: ignore[union-attr]
        quant_info.update(sparsity_before=before["overall"], sparsity_after=after["overall"],
                          sparsity_preserved=bool(kept))
        if qm.trains and not kept:
            msg = (f"{qcfg.mode} lost sparsity: {before['overall']:.2%} before, {after['overall']:.2%} after "
                   "quantization-aware training")
            if qcfg.mode == "pqat":
                raise TrainError(msg + ". Prune-preserving QAT should keep every zero; please report it.")
            warnings.append(msg + "; use mode pqat to keep the zeros.")
    summary["quantization"] = quant_info
    final_acc, final_out = fit.evaluate(final, data.x_test, data.y_test)
    final_sp = sparsity.measure_sparsity(final)
    cov = coverage.parameter_stats(final, [lp.name for lp in plan.pruned] if plan is not None else [])
    summary["model"] = {"accuracy": final_acc, "sparsity": final_sp["overall"],
                        "params": int(final_sp["params"]), "zeros": int(final_sp["zeros"]), **cov}
    say(f"final Keras model: test accuracy {final_acc:.2%}, sparsity {cov['sparsity_pruned_kernels']:.2%} over "
        f"the pruned kernels, {cov['sparsity_all_params']:.2%} over all {cov['all_params']:,} parameters "
        f"(coverage {cov['coverage']:.1%})")
    low = coverage.coverage_warning(cov, plan) if plan is not None else None
    if low:
        warnings.append(low)
    base_step = summary["baseline"].get("step_ms")
    sp_step = summary.get("sparsity", {}).get("step_ms")
    summary["timing"] = {
        "train_seconds": time.perf_counter() - t_start,
        "baseline_step_ms": base_step,
        "sparsity_step_ms": sp_step,
        "step_time_ratio": (sp_step / base_step) if base_step and sp_step else None,
        "batch_size": recipe.data.batch_size,
    }

    # ---- export -------------------------------------------------------------------------
    if export and recipe.export is not None:
        from edgesparse.export import default_bundle_dir, export_models

        res = export_models(final, dense, recipe=recipe, data=data, bundle=default_bundle_dir(recipe),
                            final_outputs=final_out, dense_outputs=base_out, log=say)
        info = res.info
        v = info.get("verification", {})
        dv = info.get("dense_verification", {})
        summary["baseline"].update(tflite_bytes=info["dense"]["bytes"], tflite_gzip_bytes=info["dense"]["gzip_bytes"],
                                   tflite_path=str(res.dense_path), tflite_accuracy=dv.get("accuracy"))
        if v.get("resolver") == "builtin":
            warnings.append(
                "XNNPACK refused model.tflite (" + str(v.get("fallback_reason")) + "), so LiteRT's slower builtin "
                "kernels run it; sparse int8 FULLY_CONNECTED weights in CSR cause this: give int8 dense layers the "
                "block:1x16 pattern (read natively, XNNPACK-compatible) or skip pruning them.")
        summary["tflite"] = {
            "path": str(res.model_path), "bytes": info["model"]["bytes"], "gzip_bytes": info["model"]["gzip_bytes"],
            "accuracy": v.get("accuracy"), "agreement": v.get("agreement"), "max_abs_diff": v.get("max_abs_diff"),
            "resolver": v.get("resolver"), "fallback_reason": v.get("fallback_reason"),
            "ratio_vs_dense": info.get("ratio"), "densify_ops": info["model"].get("densify_ops"),
            "encodings": info["model"].get("encodings"), "bundle": str(res.bundle),
        }
    if summary["baseline"].get("keras3_input"):
        # The model came as Keras 3: hand it back as Keras 3 too (float weights; QAT wrappers do not translate).
        try:
            summary["keras3"] = to_keras3(model, out / "final_keras3.keras")
            say(f"Keras 3 model written to {out / 'final_keras3.keras'}")
        except EdgesparseError as exc:
            summary["keras3"] = {"error": str(exc)}
            warnings.append(f"the final model could not be written back as Keras 3: {exc}")
    summary["timing"]["total_seconds"] = time.perf_counter() - t_start
    summary["warnings"] = warnings
    summary["versions"] = _tf.versions()
    summary["training"] = {"distribution": recipe.training.distribution,
                           "replicas": int(_tf.tf().distribute.get_strategy().num_replicas_in_sync)}
    _io.write_json(out / "summary.json", summary)
    return RunResult(run_dir=out, summary=summary, warnings=warnings)


def load_run(run_dir: Path) -> LoadedRun:
    """Re-create the data and the saved models of a run directory.

    Raises:
        EdgesparseError: the folder is not a finished run directory.
    """
    from edgesparse.errors import ExportError

    lock = run_dir / "recipe.lock.yaml"
    if not lock.exists():
        raise ExportError(f"'{run_dir}' is not a run directory (no recipe.lock.yaml); give the folder `train` wrote.")
    recipe = load_recipe(lock)
    state = json.loads((run_dir / "state.json").read_text()) if (run_dir / "state.json").exists() else {"done": {}}
    done = state.get("done", {})
    if state.get("recipe_dir"):
        from edgesparse.recipe import set_recipe_dir

        set_recipe_dir(recipe, Path(state["recipe_dir"]))
    if "baseline" not in done:
        raise ExportError(f"the run in '{run_dir}' has not finished its baseline; run train (with --resume) first.")
    final_name = "sparse.keras" if "sparsity" in done else "baseline.keras"
    if recipe.sparsity is not None and "sparsity" not in done:
        raise ExportError(f"the run in '{run_dir}' has not finished its sparsity phase; run train --resume first.")
    _tf.set_seed(recipe.seed)
    data = load_dataset(recipe.data, recipe.seed, base_dir=recipe_dir(recipe))
    dense = _load_model(run_dir / "baseline.keras")
    final = _load_model(run_dir / final_name)
    qm = MODES.get(recipe.quantization.mode)
    if qm.trains and "quantization" in done:
        final = _load_quantized(final, qm, run_dir / "final.weights.h5")
    elif qm.trains:
        assert qm.prepare is not None
        final = qm.prepare(final)
    return LoadedRun(recipe=recipe, data=data, dense_model=dense, final_model=final)
