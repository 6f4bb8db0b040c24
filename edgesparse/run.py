"""The orchestrator: one run of a recipe, baseline -> sparsity -> quantization -> export.

It owns the run directory, its resume state and the :class:`~edgesparse.summary.RunSummary`; the
stages it calls (``data``, ``models``, ``train``, ``export``) never import it or each other
sideways. Run directory::

    RUN_DIR/recipe.lock.yaml   resolved recipe        RUN_DIR/state.json    finished phases
    RUN_DIR/baseline.keras     dense baseline         RUN_DIR/sparse.keras  pruned, stripped
    RUN_DIR/channels.keras     thinned (channel pruning), fine-tuned
    RUN_DIR/final.weights.h5   QAT/PQAT weights       RUN_DIR/history.csv   every epoch
    RUN_DIR/logs/<phase>/      TensorBoard (pruning summaries included)
    RUN_DIR/backup/<phase>/    per-epoch checkpoints of the phase in progress (for --resume)
    RUN_DIR/summary.json       figures of the run (RunSummary)

Progress goes to the ``edgesparse.run`` logger (the CLI renders it).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesparse import _io, _tf, budget, rundir
from edgesparse import progress as _progress
from edgesparse.check import bind_task
from edgesparse.data import Dataset, load_dataset
from edgesparse.data import checks as data_checks
from edgesparse.data.factory import on_sys_path
from edgesparse.data.objects import dataset_from_objects
from edgesparse.data.python import PythonDataConfig
from edgesparse.errors import EdgesparseError, ExportError, InterruptedRun, RecipeError, RunDirError, TrainError
from edgesparse.export import ExportResult, default_bundle_dir, export_models, keep_float
from edgesparse.export.convert import check_recurrent, convert
from edgesparse.export.latency import time_paired
from edgesparse.export.verify import verify
from edgesparse.models import PythonModelConfig, build_model, prepare_model
from edgesparse.models.keras3 import KERAS3_TAG, is_keras3_model, to_keras3
from edgesparse.recipe import (
    ChannelsConfig,
    ExportConfig,
    Recipe,
    dump_recipe,
    load_recipe,
    recipe_dir,
    set_recipe_dir,
)
from edgesparse.summary import (
    BaselineInfo,
    ChannelsInfo,
    DataInfo,
    ModelInfo,
    QuantizationInfo,
    RunSummary,
    SparsityInfo,
    SparsityMeasure,
    TFLiteInfo,
    TimingInfo,
    TrainingInfo,
)
from edgesparse.train import channels, coverage, dynamic, fit, health, quantize, sparsity
from edgesparse.train.distill import teacher_for

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What ``train`` produced."""

    run_dir: Path
    summary: RunSummary
    warnings: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        """The summary's table, the warnings and where the files are (what ``edgesparse train`` prints)."""
        lines = [f"RunResult: {self.summary.name}", self.summary.table()]
        lines += [f"warning: {w}" for w in self.warnings]
        bundle = self.summary.tflite.bundle if self.summary.tflite else None
        lines.append(f"run directory: {self.run_dir}" + (f"; bundle: {bundle}" if bundle else ""))
        return "\n".join(lines)


@dataclass
class LoadedRun:
    """Models and data re-created from a run directory."""

    recipe: Recipe
    data: Dataset
    dense_model: Any
    final_model: Any


def default_run_dir(recipe: Recipe) -> Path:
    """``output_dir`` of the recipe, else ``runs/<name>``."""
    return Path(recipe.output_dir) if recipe.output_dir else Path("runs") / recipe.name


def bundle_dir(recipe: Recipe, run_dir: Path) -> Path:
    """Where a run's bundle goes: ``export.dir`` if the recipe sets it; ``export/<name>`` beside the default run
    directory ``runs/<name>``; otherwise inside the run directory (``RUN_DIR/bundle``), so that runs moved with
    ``-o`` never share a bundle."""
    if recipe.export is not None and recipe.export.dir:
        return Path(recipe.export.dir)
    if Path(run_dir) == default_run_dir(recipe):
        return default_bundle_dir(recipe)
    return Path(run_dir) / "bundle"


#: What a run writes into its directory (``--force`` removes them before a new run starts there).
RUN_ARTIFACTS = ("state.json", "summary.json", "history.csv", "baseline.keras", "sparse.keras", "final.weights.h5",
                 "recipe.lock.yaml", "channels.keras")


def _claim_run_dir(out: Path, *, resume: bool, force: bool) -> None:
    """Refuse to start over a directory that holds another run's results, unless resuming or forced.

    Raises:
        RunDirError: ``out`` holds a run and neither ``resume`` nor ``force`` was given.
    """
    held = [name for name in ("summary.json", "state.json") if (out / name).exists()]
    if not held or resume:
        return
    if not force:
        what = "a finished run" if "summary.json" in held else "an unfinished run"
        raise RunDirError(
            f"'{out}' already holds {what} ({', '.join(held)}); starting here would overwrite its results. "
            "Give another run directory with -o DIR (or --set output_dir=DIR), continue it with --resume, "
            "or replace it with --force."
        )
    for name in (*RUN_ARTIFACTS, "backup", "logs"):  # all checked before any is deleted
        rundir.inside(out, out / name)  # a planted symlink is refused, its target never touched
    for name in RUN_ARTIFACTS:
        rundir.unlink(out, out / name)
    for folder in ("backup", "logs"):
        rundir.remove_tree(out, out / folder)


def claim_bundle(bundle: Path, run_dir: Path, *, force: bool) -> None:
    """Refuse to write a bundle over one that another run directory exported, unless forced.

    Raises:
        RunDirError: ``bundle/export.json`` names another run directory (or none) and ``force`` is off.
    """
    info_path = bundle / "export.json"
    if force or not info_path.exists():
        return
    try:
        owner = json.loads(info_path.read_text(encoding="utf-8")).get("run_dir")
    except (OSError, ValueError):
        owner = None
    if owner is not None and Path(owner).resolve() == Path(run_dir).resolve():
        return
    raise RunDirError(
        f"the bundle folder '{bundle}' holds the export of {f'the run in {owner!r}' if owner else 'another run'}; "
        "writing this run's model there would leave that run's summary pointing at a file that is not its own. "
        "Give this run its own bundle (export.dir, or -o for the run directory, which moves the bundle with it), "
        "or replace it with --force."
    )


def _check_writable(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)  # a new file: never a planted link's target
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise RecipeError(
            f"cannot write to the output directory '{path}' ({exc.strerror or exc}). Choose another with "
            "`--set output_dir=PATH` (or `-o PATH`) or fix its permissions."
        ) from None


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
        found: dict[str, Any] | None = self.data["done"].get(phase)
        return found

    def mark(self, phase: str, info: dict[str, Any]) -> None:
        self.data["done"][phase] = info
        _io.write_json(self.path, self.data)


def _save_model(model: Any, path: Path) -> None:
    with _io.atomic_path(path, suffix=".keras") as tmp:
        tmp.unlink()
        model.save(str(tmp))


def _load_model(path: Path) -> Any:
    keras = _tf.keras()
    with _tf.tfmot().quantization.keras.quantize_scope():
        return keras.models.load_model(str(path), compile=False)


def load_model(path: str | Path) -> Any:
    """Load a Keras model a run saved (``baseline.keras`` or ``sparse.keras``) without compiling it."""
    return _load_model(Path(path))


def _load_quantized(model: Any, mode: str, weights: Path) -> Any:
    """Rebuild a QAT/PQAT model from its float model and load its trained weights.

    tfmot's quantization wrappers do not round-trip through the .keras format, so the run keeps
    the float model (sparse.keras) and the QAT weights (final.weights.h5).
    """
    qmodel = quantize.prepare(model, mode)
    qmodel.load_weights(str(weights))
    return qmodel


@dataclass
class _Run:
    """What every phase of one run shares."""

    recipe: Recipe
    out: Path
    state: _State
    resume: bool
    data: Dataset
    history: fit.History
    warnings: list[str] = field(default_factory=list)
    dense_validation: float = 0.0  # the dense baseline's guard metric on the validation split (the guard's reference)
    dense: Any = None  # the dense baseline: the teacher when the recipe distils
    model_object: Any = None  # the model given to train(model=...), never modified (a copy is trained)
    budget_plan: budget.BudgetPlan | None = None  # sparsity.target.bytes: the search's plan, then the export's figure
    sensitivity: list[sparsity.LayerSensitivity] | None = None  # allocation auto's rows, measured once

    def teacher(self, phase: str) -> dict[str, Any]:
        """``run.fit`` arguments for distillation from the dense model in ``phase`` (none when not configured)."""
        teacher = teacher_for(self.recipe.distillation, phase, self.dense)
        return {"teacher": teacher, "distillation": self.recipe.distillation} if teacher is not None else {}

    @property
    def steps_per_epoch(self) -> int:
        return self.data.steps_per_epoch(self.recipe.data.batch_size)

    def fit(self, phase: str, model: Any, **kwargs: Any) -> fit.PhaseResult:
        """Train ``model`` for one phase with the run's data, seed, history and checkpoints."""
        r = self.recipe
        return fit.run_phase(phase, model, self.data, batch_size=r.data.batch_size, seed=r.seed, run_dir=self.out,
                             history=self.history, resume=self.resume, shuffle=r.training.shuffle,
                             shuffle_buffer=r.data.shuffle_buffer, **kwargs)


# long: about 25 lines of code; the rest is the docstring (an example and nine arguments)
def train(
    recipe: Recipe,
    *,
    model: Any | None = None,
    data: Any | None = None,
    resume: bool = False,
    run_dir: str | Path | None = None,
    export: bool = True,
    dense_model: Any | None = None,
    force: bool = False,
    progress: bool = True,
) -> RunResult:
    """Run a recipe end to end.

    Example, from a notebook (the recipe has no model or data section)::

        recipe = Recipe(name="mine", baseline={"epochs": 0}, sparsity={"final": 0.8}, quantization={"mode": "int8"})
        result = train(recipe, model=keras_model, data={"train": (x, y), "validation": (xv, yv),
                                                         "test": (xt, yt)}, run_dir="runs/mine")

    Args:
        recipe: The validated recipe.
        model: A tf_keras or Keras 3 model object (compiled or not) instead of the recipe's ``model:`` section;
            it is copied (Keras 3 translated, as a Keras 3 file is), never trained in place.
        data: ``{"train": ..., "validation": ..., "test": ...}``, each a ``tf.data.Dataset`` of unbatched
            ``(x, y)`` elements (streamed) or an ``(x, y)`` tuple of arrays, instead of the recipe's ``data:``
            section (see :mod:`edgesparse.data.objects`). Batch size: ``data: {python: name, batch_size: 32}``.
        resume: Continue an interrupted run in ``run_dir`` from its last checkpoint.
        run_dir: Where to write; default ``recipe.output_dir`` or ``runs/<name>``.
        export: Export and verify the .tflite when the recipe has an export section.
        dense_model: A trained dense baseline to start from instead of training one (the sweep
            shares one baseline between trials); it is cloned, never modified.
        force: Replace the results of an earlier run in ``run_dir`` (and in its bundle folder).
        progress: Show progress (see :func:`edgesparse.progress.shown`): live bars in a notebook or on a
            terminal, one line per epoch on stderr when no logging is configured. False shows nothing.

    Returns:
        The run directory and its summary (also written as summary.json); printing it shows the
        dense-vs-final table.

    Raises:
        RunDirError: the run directory or the bundle folder holds another run's results (before any work).
        RecipeError: ``model=``/``data=`` given together with the recipe's own section, or neither given.
        DataError: ``data`` is not the splits mapping (see :mod:`edgesparse.data.objects`).
        EdgesparseError: any stage failed; InterruptedRun on Ctrl-C.
    """
    objects = python_objects(recipe, model, data)
    t_start = time.perf_counter()
    out = Path(run_dir) if run_dir is not None else default_run_dir(recipe)
    _check_writable(out)
    with contextlib.ExitStack() as held:
        held.enter_context(rundir.lock(out))  # before anything is written or removed: --force never races a run
        _claim_run_dir(out, resume=resume, force=force)
        if export and recipe.export is not None:
            held.enter_context(rundir.lock_bundle(bundle_dir(recipe, out)))
            claim_bundle(bundle_dir(recipe, out), out, force=force)
        lock = dump_recipe(recipe)
        state = _State(out, hashlib.sha256(lock.encode()).hexdigest()[:16], resume)
        state.data["recipe_dir"] = str(recipe_dir(recipe))
        _io.write_text(rundir.inside(out, out / "recipe.lock.yaml"), lock)
        try:
            with (_progress.shown(progress), on_sys_path(recipe_dir(recipe)), fit.graceful_interrupt(),
                  _tf.strategy_scope(recipe.training.distribution)):
                _log_replicas(recipe.training.distribution)
                return _train(recipe, out, state, resume, export, dense_model, t_start, objects)
        except KeyboardInterrupt:
            raise InterruptedRun(
                f"interrupted during a training phase. Finished phases and per-epoch checkpoints are in '{out}'; "
                "run the same command with --resume to continue from the last completed epoch."
            ) from None
    raise AssertionError("unreachable")  # pragma: no cover - the with block returns or raises


def _log_replicas(distribution: str) -> None:
    """``training.distribution: mirrored`` says how many replicas it got (one CPU device: one replica)."""
    if distribution == "none":
        return
    strategy = _tf.tf().distribute.get_strategy()
    devices = list(getattr(strategy.extended, "worker_devices", ()) or ())
    replicas = int(strategy.num_replicas_in_sync)
    log.info("training.distribution %s: %d replica(s) on %s", distribution, replicas, ", ".join(devices) or "?")
    if replicas == 1:
        log.warning("training.distribution %s has 1 replica here (%s): it trains like distribution none. "
                    "MirroredStrategy puts one replica on each GPU; on a CPU-only machine set EDGESPARSE_CPU_DEVICES=N "
                    "before the process starts to split the CPU into N devices", distribution,
                    ", ".join(devices) or "one device")


def _before_training(run: _Run) -> None:
    """Checks and notes before the first phase: validation and test streams must be fixed (they are compared
    across passes: epochs, guards, verification); a resumed run says it cannot reproduce the uninterrupted one
    (log and summary.json warnings); skipped unreadable images are listed."""
    batch = run.recipe.data.batch_size if hasattr(run.recipe.data, "batch_size") else 256
    for split in (run.data.val, run.data.test):
        data_checks.check_stable(split, batch)
    note = _resume_note(run.out, run.state) if run.resume else None
    if note:
        log.warning(note)
        run.warnings.append(note)
    skipped = run.data.source.get("skipped_images") or []
    if skipped:
        run.warnings.append(f"data: skipped {len(skipped)} unreadable image(s), e.g. {skipped[0]['file']} "
                            "(all listed in summary.json under data.source.skipped_images)")


def _resume_note(out: Path, state: _State) -> str | None:
    """What a resumed run says about reproducing the uninterrupted one (None when nothing is reused)."""
    done = list(state.data.get("done", {}))
    backup = out / "backup"
    interrupted = sorted(p.name for p in backup.iterdir() if p.is_dir()) if backup.is_dir() else []
    if not done and not interrupted:
        return None
    what = ", ".join([*(f"finished {p}" for p in done), *(f"{p} from its last epoch checkpoint" for p in interrupted)])
    return (f"resumed ({what}): not bit-reproducible. The data order, shuffling and dropout restart from the seed "
            "where this process took over instead of continuing the interrupted process's random state, so the "
            "final model (and model.tflite) can differ from an uninterrupted run's; run without --resume (or with "
            "--force) for the reproducible run.")


def _train(recipe: Recipe, out: Path, state: _State, resume: bool, export: bool, dense_model: Any,
           t_start: float, objects: PythonObjects) -> RunResult:
    """The body of :func:`train`, run inside the recipe's distribution scope."""
    _tf.set_seed(recipe.seed)
    data = objects.dataset() or load_dataset(recipe.data, recipe.seed, base_dir=recipe_dir(recipe))
    n_train, n_val, n_test = data.sizes()
    classes = f", {data.num_classes} classes" if data.num_classes else ""
    log.info("data: %s train/val/test = %d/%d/%d, input %s%s", data.name, n_train, n_val, n_test,
             tuple(data.input_shape) if not data.multi_input else data.describe()["input_shapes"], classes)
    history = fit.History(out / "history.csv")
    if not resume:
        history.rows = []
    run = _Run(recipe=recipe, out=out, state=state, resume=resume, data=data, history=history,
               model_object=objects.model)
    _before_training(run)

    dense, baseline = _baseline_phase(run, dense_model)
    data, task = run.data, run.data.task
    run.dense = dense
    base_scores, base_out = fit.scores(dense, data.test, task=task)
    _fill_metrics(baseline, task, base_scores)
    baseline.validation_metric = run.dense_validation = _validation_metric(run, dense)
    baseline.validation_accuracy = _as_accuracy(task, run.dense_validation)
    log.info("baseline: test %s %s", task.metric_name, task.fmt(baseline.metric))
    baseline.health = _baseline_health(run, dense, baseline, export)
    thinned, channels_info = _channels_phase(run, dense)
    # the validation figure of the latest model: each guard measures it, the final model's is the last one
    channels_val = channels_info.validation_metric if channels_info is not None else run.dense_validation
    _solve_budget(run, thinned, recipe.sparsity)
    for attempt in (1, 2):  # a size budget that the export missed is corrected once
        c = _compress(run, thinned, channels_val)
        if not (export and recipe.export is not None):
            break
        res = export_models(c.final, dense, recipe=recipe, data=data, bundle=bundle_dir(recipe, out),
                            final_outputs=c.final_out, dense_outputs=base_out, run_dir=out, float_model=c.model)
        if not _budget_missed(run, thinned, recipe.sparsity, res, attempt):
            break
    summary = RunSummary(
        name=recipe.name, run_dir=str(out), seed=recipe.seed, data=DataInfo(**data.describe()), baseline=baseline,
        task=task.to_json(),
        channels=channels_info, sparsity=c.sparsity_info, quantization=c.quant_info, model=c.model_info,
        timing=_timing(baseline, c.sparsity_info, recipe.data.batch_size, t_start),
        distillation=recipe.distillation.model_dump(mode="json") if recipe.distillation is not None else None,
    )
    if export and recipe.export is not None:
        summary.tflite = _record_export(summary.baseline, res, run.warnings)
        if c.sparsity_info is not None and run.budget_plan is not None:
            c.sparsity_info.budget = run.budget_plan.to_dict()
    if summary.baseline.keras3_input:
        summary.keras3 = _keras3_back(run, c.model)
    summary.timing.total_seconds = time.perf_counter() - t_start
    summary.warnings = run.warnings
    summary.versions = _tf.versions()
    summary.training = TrainingInfo(distribution=recipe.training.distribution,
                                    replicas=int(_tf.tf().distribute.get_strategy().num_replicas_in_sync))
    summary.write(out)
    return RunResult(run_dir=out, summary=summary, warnings=run.warnings)


@dataclass
class _Compressed:
    """What the sparsity and quantization phases made of the thinned model."""

    model: Any  # the stripped pruned float model (or the thinned model without a sparsity section)
    plan: sparsity.SparsityPlan | None
    sparsity_info: SparsityInfo | None
    final: Any  # the model to export (after QAT/PQAT)
    quant_info: QuantizationInfo
    model_info: ModelInfo
    final_out: Any  # the final model's outputs on the test split


def _compress(run: _Run, thinned: Any, final_val: float | None) -> _Compressed:
    """Prune (the sparsity phase), quantize (QAT/PQAT), each checked by the accuracy guard, and describe the result."""
    task = run.data.task
    model, plan, sparsity_info = _sparsity_phase(run, thinned)
    if sparsity_info is not None:
        final_val = sparsity_info.validation_metric = _accuracy_guard(run, "sparsity", model)
        sparsity_info.validation_accuracy = _as_accuracy(task, final_val)
    final, quant_info = _quantization_phase(run, model, plan)
    if quantize.trains(quant_info.mode):
        final_val = quant_info.validation_metric = _accuracy_guard(run, f"quantization ({quant_info.mode})", final)
        quant_info.validation_accuracy = _as_accuracy(task, final_val)
    model_info, final_out = _final_model_info(run, final, plan, final_val)
    return _Compressed(model, plan, sparsity_info, final, quant_info, model_info, final_out)


def _solve_budget(run: _Run, thinned: Any, base: Any, aim: int | None = None) -> None:
    """``sparsity.target.bytes``: search the sparsity whose file fits and make it the sparsity section's ``final``.

    Args:
        run: The run; its recipe's sparsity section is replaced by one with the found ``final``.
        thinned: The model the sparsity phase prunes.
        base: The recipe's own sparsity section (with its ``target``), or None.
        aim: The corrected number of bytes to aim at (after a miss); default the budget.
    """
    if base is None or base.target is None:
        return
    rep = run.data.representative(budget.TRIAL_SAMPLES, seed=run.recipe.seed)
    found = budget.solve(thinned, base, run.recipe, run.steps_per_epoch, rep, _auto_sensitivity(run, thinned), aim)
    first = run.budget_plan
    if first is not None:  # a correction: keep the first search's figures beside the new one
        found.correction = {"first_final": first.final, "first_predicted": first.predicted,
                            "first_actual": first.actual, "aimed_at": aim}
        found.smallest = found.smallest or first.smallest
    run.budget_plan = found
    if found.final == 0.0:
        if run.recipe.quantization.mode == "pqat":
            raise RecipeError(
                f"sparsity.target.bytes = {found.budget:,} B: the unpruned model already fits ({found.unpruned:,} B "
                f"{found.mode}), so there is nothing to prune and prune-preserving QAT has no zeros to keep; use "
                "quantization.mode: qat, or a smaller budget")
        run.warnings.append(f"sparsity.target.bytes = {found.budget:,} B: the unpruned model already fits "
                            f"({found.unpruned:,} B, {found.mode}); the sparsity phase was skipped")
        run.recipe = run.recipe.model_copy(update={"sparsity": None})
        return
    run.recipe = run.recipe.model_copy(update={"sparsity": budget.set_final(base, found.final)})


def _budget_missed(run: _Run, thinned: Any, base: Any, res: ExportResult, attempt: int) -> bool:
    """Record the exported file against the budget; on a first miss, search again and say the phases must rerun."""
    bp = run.budget_plan
    if bp is None:
        return False
    actual = res.model_path.stat().st_size
    kept = str(res.info.get("quantization") or run.recipe.quantization.mode)
    bp.actual, bp.met = actual, actual <= bp.budget
    if not budget.missed(bp, actual, kept):
        log.info("budget: model.tflite is %s B for %s B (predicted %s B)", f"{actual:,}", f"{bp.budget:,}",
                 f"{bp.predicted:,}")
        return False
    # ops kept float: the debugger's quantizer has no sparse encoding, so the kernels are stored dense and no
    # sparsity makes the file smaller (measured on an unseen model: 36,448 B at 94% as at 80%)
    dense_kept = bool(res.info.get("float_ops")) and not res.info.get("sparse_encoding")
    aim = budget.correction(bp, actual) if attempt == 1 and not dense_kept else None
    if aim is None:
        why = ("it does not fit: the export kept a conversion with ops float (quantization.keep_float), which is "
               "written without the sparse encoding, so its kernels are stored dense and more sparsity cannot make "
               "it smaller. Raise the budget, or make plain int8 pass (quantization.mode: qat, or inputs of one "
               "scale) so the sparse int8 file the budget predicted is kept" if dense_kept and actual > bp.budget
               else "it does not fit; export.json lists the conversions and why each was kept or rejected"
               if actual > bp.budget else "it fits but uses under 90% of the budget")
        run.warnings.append(
            f"sparsity.target.bytes: model.tflite is {actual:,} B for a budget of {bp.budget:,} B (predicted "
            f"{bp.predicted:,} B in {bp.mode}; the export kept {kept}" + (", after one correction" if attempt > 1
                                                                         else "") + "): " + why)
        return False
    log.warning("budget: model.tflite is %s B, predicted %s B for %s B; correcting once (aiming at %s B)",
                f"{actual:,}", f"{bp.predicted:,}", f"{bp.budget:,}", f"{aim:,}")
    _solve_budget(run, thinned, base, aim)
    for phase in ("sparsity", "quantization"):
        run.state.data["done"].pop(phase, None)
    return True


@dataclass
class PythonObjects:
    """The model and data a caller gave as objects (``train(model=..., data=...)``), checked against the recipe."""

    model: Any = None
    data: Any = None
    data_name: str = "data"

    def dataset(self) -> Dataset | None:
        """The data as a :class:`Dataset` (None when the recipe's data section is used)."""
        if self.data is None:
            return None
        if isinstance(self.data, Dataset):
            return self.data
        return dataset_from_objects(self.data, self.data_name, "train(data=...)", {"python": self.data_name})


def python_objects(recipe: Recipe, model: Any | None, data: Any | None) -> PythonObjects:
    """Check that each of model and data comes from exactly one place: the recipe, or the call.

    Raises:
        RecipeError: an object given together with the recipe's section, or neither.
    """
    has_model = not isinstance(recipe.model, PythonModelConfig)
    has_data = not isinstance(recipe.data, PythonDataConfig)
    for what, obj, has in (("model", model, has_model), ("data", data, has_data)):
        if obj is not None and has:
            raise RecipeError(f"{what}= was given together with the recipe's own {what}: section; use one of them: "
                              f"drop {what}= from the call, or the {what} section from the recipe.")
        if obj is None and not has:
            example = "model: {path: model.keras}" if what == "model" else "data: {npz: data.npz}"
            raise RecipeError(f"the recipe has no {what} section and the call gives no {what}=; add a {what} section "
                              f"to the recipe (e.g. {example}) or pass {what}= to train() / analyze().")
    name = recipe.data.python if isinstance(recipe.data, PythonDataConfig) else "data"
    return PythonObjects(model=model, data=data, data_name=name)


def model_from_object(model: Any) -> Any:
    """A trainable copy of a model object: Keras 3 translated to tf_keras, tf_keras cloned (the object is not
    modified), nested models inlined.

    Raises:
        ModelError: not a Keras model, or a subclassed one.
    """
    prepared = prepare_model(model)
    return sparsity.clone_dense(prepared) if prepared is model else prepared


def describe_object(model: Any) -> dict[str, Any]:
    """What summary.json records of a model object: its class, Keras flavour, name and input/output shapes."""
    def shape(t: Any) -> list[int | None]:
        return [None if d is None else int(d) for d in tuple(t.shape)[1:]]

    return {"python": f"{type(model).__module__}.{type(model).__qualname__}", "name": str(getattr(model, "name", "")),
            "keras": "3" if is_keras3_model(model) else "tf_keras",
            "inputs": [shape(t) for t in model.inputs], "outputs": [shape(t) for t in model.outputs]}


def _baseline_phase(run: _Run, dense_model: Any | None) -> tuple[Any, BaselineInfo]:
    """Train, reuse (``--resume``) or clone (a sweep's shared model) the dense baseline."""
    recipe, out = run.recipe, run.out
    done = run.state.done("baseline")
    if done:
        dense = _load_model(out / "baseline.keras")
        run.data = bind_task(dense, run.data, recipe.task)
        info = dict(done)
        log.info("baseline: reused from the interrupted run")
    else:
        if dense_model is not None:
            dense = sparsity.clone_dense(dense_model)
            run.data = bind_task(dense, run.data, recipe.task)
            info = {"epochs": 0, "seconds": 0.0, "step_ms": None, "shared": True}
        else:
            dense = (model_from_object(run.model_object) if run.model_object is not None else
                     build_model(recipe.model, tuple(run.data.input_shape), run.data.num_classes, recipe_dir(recipe)))
            run.data = bind_task(dense, run.data, recipe.task)
            keep_float.check_layers(dense, recipe.quantization.keep_float)  # a regex matching no layer: now
            check_recurrent(dense)  # a stateful RNN or a None time axis cannot convert: now, not after training
            if recipe.sparsity is not None:  # refuse overrides that match nothing, blocks that do not divide: now
                # (with a size budget, final is the search's to choose, capped where the blocks allow: not checked here)
                shape_only = {"final": 0.01, "target": None} if recipe.sparsity.target is not None else {}
                sparsity.plan_sparsity(dense, recipe.sparsity.model_copy(update=shape_only), run.steps_per_epoch)
                if recipe.sparsity.target is not None:  # and a size budget below the smallest reachable file
                    budget.smallest_reachable(dense, recipe.sparsity, recipe, run.steps_per_epoch,
                                              run.data.representative(budget.TRIAL_SAMPLES, seed=recipe.seed))
            if recipe.channels is not None and recipe.channels.schedule == "gradual":  # a window without updates
                channels.schedule_steps(recipe.channels, run.steps_per_epoch)
            info = {"epochs": recipe.baseline.epochs, "seconds": 0.0, "step_ms": None,
                    "keras3_input": bool(getattr(dense, KERAS3_TAG, False)),
                    "keras3_translation_diff": getattr(dense, "_edgesparse_translation_diff", None)}
            if run.model_object is not None:
                info["model_source"] = describe_object(run.model_object)
            if recipe.baseline.bn_momentum is not None:
                log.info("baseline: BatchNormalization momentum %g in %d layers (baseline.bn_momentum)",
                         recipe.baseline.bn_momentum, health.set_bn_momentum(dense, recipe.baseline.bn_momentum))
            if recipe.baseline.epochs:
                log.info("baseline: training %s (%s params) for %d epochs", dense.name, f"{dense.count_params():,}",
                         recipe.baseline.epochs)
                r = run.fit("baseline", dense, epochs=recipe.baseline.epochs, optimizer=recipe.baseline.optimizer)
                info.update(seconds=r.seconds, step_ms=r.step_ms)
        _save_model(dense, out / "baseline.keras")
        run.state.mark("baseline", info)
    return dense, BaselineInfo(params=int(dense.count_params()), **info)


def _baseline_health(run: _Run, dense: Any, baseline: BaselineInfo, export: bool) -> dict[str, Any]:
    """The dense baseline against chance before any compression (``baseline.on_broken``: fail raises TrainError),
    then, when the run exports and verifies, its float32 .tflite against it on the validation split (a converter or
    runtime that breaks the dense model fails here, as such, before hours of compression; ExportError)."""
    rows = [r for r in run.history.rows if r.get("phase") == "baseline"]
    steps = 0 if baseline.shared else baseline.epochs * run.steps_per_epoch
    report = health.check_baseline(dense, run.data, history=rows, steps=steps, batch_size=run.recipe.data.batch_size,
                                   value=run.dense_validation)
    scfg = run.recipe.sparsity
    scratch = steps == 0 and not baseline.shared and scfg is not None and scfg.method != "magnitude"
    # sparse training from scratch (baseline.epochs: 0 and rigl/set): an untrained dense model at chance is expected
    warning = health.enforce(report, "warn" if scratch else run.recipe.baseline.on_broken)
    if warning and scratch and scfg is not None:
        warning = (f"baseline: at chance on {report.split} ({report.metric} {report.fmt_value}, chance "
                   f"{report.fmt_chance}) and not trained (baseline.epochs: 0): sparsity.method {scfg.method} trains "
                   "the model sparse from scratch, so the baseline's figures are the untrained model's. If the model "
                   "was meant to be trained already, its weights are not (baseline.on_broken does not stop a "
                   "from-scratch run).")
    if warning:
        run.warnings.append(warning)
    log.info("baseline health: %s %s %s vs chance %s: %s", report.split, report.metric.replace("/", " "),
             report.fmt_value, report.fmt_chance, report.status)
    record = report.to_dict()
    ecfg = run.recipe.export
    if export and ecfg is not None and ecfg.verify:
        split, task = run.data.validation(), run.data.task
        # on validation the guard's metric (an anomaly task's reconstruction error: no labels there for its AUC)
        v = verify(convert(dense, "none", sparse_encoding=False), split, None, fit.predict(dense, split),
                   threads=ecfg.threads, float_model=True,
                   max_drop_points=task.max_drop(ecfg.max_accuracy_drop, task.guard_key),
                   label="dense.tflite", task=task, metric_key=task.guard_key)
        record["tflite_validation"] = health.tflite_figures(v.to_dict(), split=report.split)
    return record


def _channels_phase(run: _Run, dense: Any) -> tuple[Any, ChannelsInfo | None]:
    """Plan channel pruning on ``dense``, thin a copy (``oneshot`` or ``gradual``), check the surgery, fine-tune."""
    ccfg = run.recipe.channels
    if ccfg is None:
        return dense, None
    done = run.state.done("channels")
    if done:
        log.info("channels: reused from the interrupted run")
        return _load_model(run.out / "channels.keras"), ChannelsInfo(**done)
    data = run.data
    x_val, y_val = data.validation().in_memory()
    x_train, y_train = data.train.in_memory()

    @functools.cache
    def dense_tflite() -> bytes:
        """The dense model as float32 .tflite, converted once for every timing of this phase."""
        return convert(dense, "none")

    def latency(model: Any) -> float:
        return float(time_paired(convert(model, "none"), dense_tflite(), threads=1)["ratio_median"])

    plan = channels.plan_channels(dense, ccfg, x_val, y_val, x_train=x_train, y_train=y_train,
                                  latency_fn=latency, task=data.task)
    info = ChannelsInfo(allocation=ccfg.allocation, importance=ccfg.importance, schedule=ccfg.schedule,
                        epochs=ccfg.epochs, **plan.describe())
    log.info("channels: %s params -> %s, %s MACs -> %s (%d groups); %s, %d epochs of fine-tuning",
             f"{info.dense_params:,}", f"{info.params:,}", f"{info.dense_macs:,}", f"{info.macs:,}",
             len(info.groups), ccfg.schedule, ccfg.epochs)
    thinned = (_channels_gradual if ccfg.schedule == "gradual" else _channels_oneshot)(run, dense, plan, ccfg, info)
    log.info("channels: max |thinned - masked| %.2g", info.max_abs_diff)
    info.validation_metric = _accuracy_guard(run, "channels", thinned)
    info.validation_accuracy = _as_accuracy(data.task, info.validation_metric)
    if run.recipe.export is not None:
        _time_thinned(run, thinned, info, dense_tflite)
    _save_model(thinned, run.out / "channels.keras")
    run.state.mark("channels", info.model_dump(mode="json"))
    return thinned, info


def _channels_oneshot(run: _Run, dense: Any, plan: channels.ChannelPlan, ccfg: ChannelsConfig,
                      info: ChannelsInfo) -> Any:
    """Thin at once (checked against the masked model), then fine-tune the thinned model."""
    thinned, info.max_abs_diff = channels.thin(dense, plan, run.data.validation().head(256)[0],
                                               ccfg.tolerance)
    info.validation_metric_pruned = _validation_metric(run, thinned)
    info.validation_accuracy_pruned = _as_accuracy(run.data.task, info.validation_metric_pruned)
    if ccfg.epochs:
        r = run.fit("channels", thinned, epochs=ccfg.epochs, optimizer=ccfg.optimizer, **run.teacher("channels"))
        info.seconds, info.step_ms = r.seconds, r.step_ms
    return thinned


def _channels_gradual(run: _Run, dense: Any, plan: channels.ChannelPlan, ccfg: ChannelsConfig,
                      info: ChannelsInfo) -> Any:
    """Fine-tune a copy of ``dense`` while its planned channels are masked step by step, then thin it (checked)."""
    masker = channels.start_gradual(dense, plan, ccfg, run.steps_per_epoch)
    info.schedule_steps = masker.schedule.to_dict()
    r = run.fit("channels", masker.model, epochs=ccfg.epochs, optimizer=ccfg.optimizer,
                extra_callbacks=[masker.callback()], **run.teacher("channels"))
    info.seconds, info.step_ms = r.seconds, r.step_ms
    thinned, info.max_abs_diff = masker.finish(run.data.validation().head(256)[0], ccfg.tolerance)
    return thinned


def _time_thinned(run: _Run, thinned: Any, info: ChannelsInfo, dense_tflite: Callable[[], bytes]) -> None:
    """Paired latency and file size of the thinned vs the dense model, both float32 .tflite, on this machine."""
    try:
        r = time_paired(convert(thinned, "none"), dense_tflite(), threads=1)
    except EdgesparseError as exc:
        run.warnings.append(f"the thinned model could not be timed against the dense one: {exc}")
        return
    info.latency_ratio, info.tflite_bytes, info.dense_tflite_bytes = r["ratio_median"], r["bytes"], r["reference_bytes"]
    log.info("channels: thinned float .tflite %s B vs dense %s B, paired latency %.2fx dense", f"{r['bytes']:,}",
             f"{r['reference_bytes']:,}", r["ratio_median"])


def _sparsity_phase(run: _Run, dense: Any) -> tuple[Any, sparsity.SparsityPlan | None, SparsityInfo | None]:
    """Prune a clone of ``dense`` with tfmot, strip it, and check the achieved sparsity per layer."""
    scfg = run.recipe.sparsity
    if scfg is None:
        return dense, None, None
    plan = sparsity.plan_sparsity(dense, scfg, run.steps_per_epoch, sensitivity=_auto_sensitivity(run, dense))
    if plan.allocation != "uniform":
        log.info("sparsity: allocation %s, %.2f%% planned over the pruned kernels: %s", plan.allocation,
                 100 * (plan.planned or 0.0), ", ".join(f"{lp.name} {lp.target:.1%}" for lp in plan.pruned))
    names = [lp.name for lp in plan.pruned]
    done = run.state.done("sparsity")
    if done:
        model = _load_model(run.out / "sparse.keras")
        info = dict(done)
        log.info("sparsity: reused from the interrupted run")
    else:
        pruned = sparsity.apply_pruning(dense, scfg, plan)
        log.info("sparsity: pruning %d layers to %.0f%%%s (%s, steps %d->%d every %d) for %d epochs", len(names),
                 100 * scfg.final, "" if plan.allocation == "uniform" else f" overall ({plan.allocation})",
                 scfg.schedule if scfg.method == "magnitude" else f"{scfg.method}: the target from step 0, drop/grow "
                 f"{scfg.update.drop_fraction:g} cosine-decayed", plan.begin_step, plan.end_step, plan.frequency,
                 scfg.epochs)
        tfmot_sp = _tf.tfmot().sparsity.keras
        updater = _dynamic_updater(run, plan)
        pruning_logs = rundir.inside(run.out, run.out / "logs" / "pruning")  # no symlink followed out
        r = run.fit(
            "sparsity", pruned, epochs=scfg.epochs, optimizer=scfg.optimizer,
            extra_callbacks=[tfmot_sp.UpdatePruningStep(),
                             *([updater.callback()] if updater is not None else []),
                             tfmot_sp.PruningSummaries(log_dir=str(pruning_logs))],
            epoch_metrics=lambda m: {"sparsity": sparsity.measure_sparsity(m, names)["overall"]},
            **run.teacher("sparsity"),
        )
        model = sparsity.strip(pruned)
        _save_model(model, run.out / "sparse.keras")
        info = {"epochs": scfg.epochs, "seconds": r.seconds, "step_ms": r.step_ms}
        if updater is not None:
            info["dynamic"] = updater.stats.to_dict()
        run.state.mark("sparsity", info)
    measured = sparsity.measure_sparsity(model, names)
    plan.record_achieved(measured["layers"])
    run.warnings += sparsity.check_sparsity(measured, plan, scfg.tolerance, scfg.on_shortfall)
    run.warnings += sparsity.emptied_outputs(model, plan)
    dense_left = sparsity.measure_sparsity(dense)["overall"]
    if run.recipe.baseline.epochs and dense_left > 0.05:
        raise TrainError(
            f"the dense baseline has {dense_left:.0%} zeros after pruning: its layers were shared with "
            "the pruned model. This is a bug in edgesparse; please report it."
        )
    log.info("sparsity: achieved %.2f%% over the pruned kernels", 100 * measured["overall"])
    return model, plan, SparsityInfo(plan=plan.to_dict(), achieved=SparsityMeasure(**measured), **info)


def _dynamic_updater(run: _Run, plan: sparsity.SparsityPlan) -> dynamic.DynamicSparsity | None:
    """``method: rigl | set``: the mask owner of the phase (rigl reads its own shuffled training batches)."""
    if plan.method == "magnitude" or plan.drop_fraction is None:
        return None
    batches = None
    if plan.method == "rigl":
        ds = run.data.train.dataset(run.recipe.data.batch_size, shuffle=True, seed=run.recipe.seed + 1,
                                    targets=run.data.fit_targets)
        batches = iter(ds.repeat())
    return dynamic.DynamicSparsity(plan.method, plan.frequency, plan.end_step, plan.drop_fraction, batches,
                                   seed=run.recipe.seed)


def _auto_sensitivity(run: _Run, dense: Any) -> list[sparsity.LayerSensitivity] | None:
    """``allocation: auto``: each prunable layer of the trained dense model pruned alone on validation."""
    scfg = run.recipe.sparsity
    if scfg is None or scfg.allocation != "auto":
        return None
    if run.sensitivity is not None:
        return run.sensitivity
    levels = sorted(lv for lv in {0.5, 0.75, 0.9, 0.95, round(scfg.final, 4), scfg.max_layer} if lv <= scfg.max_layer)
    x, y = run.data.validation().in_memory()
    log.info("sparsity: allocation auto measures each prunable layer alone at %s on validation",
             ", ".join(f"{lv:g}" for lv in levels))
    run.sensitivity = sparsity.layer_sensitivity(dense, x, y, tuple(levels), task=run.data.task)
    return run.sensitivity


def _quantization_phase(run: _Run, model: Any, plan: sparsity.SparsityPlan | None) -> tuple[Any, QuantizationInfo]:
    """QAT/PQAT fine-tuning (post-training modes pass through), then check that the zeros survived."""
    qcfg = run.recipe.quantization
    info = QuantizationInfo(mode=qcfg.mode)
    final = model
    if quantize.trains(qcfg.mode):
        done = run.state.done("quantization")
        if qcfg.epochs > 0 and done:
            final = _load_quantized(model, qcfg.mode, run.out / "final.weights.h5")
            info = QuantizationInfo(mode=qcfg.mode, **done)
            log.info("quantization: reused from the interrupted run")
        elif qcfg.epochs > 0:
            final = quantize.prepare(model, qcfg.mode)
            log.info("quantization: %s fine-tuning for %d epochs", qcfg.mode, qcfg.epochs)
            r = run.fit("quantization", final, epochs=qcfg.epochs, optimizer=qcfg.optimizer,
                        **run.teacher("quantization"))
            with _io.atomic_path(run.out / "final.weights.h5", suffix=".weights.h5") as tmp:
                final.save_weights(str(tmp))
            info = QuantizationInfo(mode=qcfg.mode, epochs=qcfg.epochs, seconds=r.seconds, step_ms=r.step_ms)
            run.state.mark("quantization", info.model_dump(exclude={"mode"}, exclude_none=True))
        else:
            final = quantize.prepare(model, qcfg.mode)
    if plan is not None and run.recipe.sparsity is not None:
        _check_zeros_kept(run, model, final, plan, info)
    return final, info


def _check_zeros_kept(run: _Run, model: Any, final: Any, plan: sparsity.SparsityPlan,
                      info: QuantizationInfo) -> None:
    """Record the sparsity before/after quantization; QAT that lost zeros fails (pqat) or warns (qat)."""
    names = [lp.name for lp in plan.pruned]
    before = sparsity.measure_sparsity(model, names)["overall"]
    after = sparsity.measure_sparsity(final, names)["overall"]
    tolerance = run.recipe.sparsity.tolerance if run.recipe.sparsity is not None else 0.0
    kept = after >= before - tolerance
    info.sparsity_before, info.sparsity_after, info.sparsity_preserved = before, after, bool(kept)
    mode = info.mode
    if quantize.trains(mode) and not kept:
        msg = f"{mode} lost sparsity: {before:.2%} before, {after:.2%} after quantization-aware training"
        if mode == "pqat":
            raise TrainError(msg + ". Prune-preserving QAT should keep every zero; please report it.")
        run.warnings.append(msg + "; use mode pqat to keep the zeros.")


def _final_model_info(run: _Run, final: Any, plan: sparsity.SparsityPlan | None,
                      validation_metric: float | None) -> tuple[ModelInfo, Any]:
    """The task's metrics, and sparsity read back from the weights over the pruned kernels and over all parameters."""
    task = run.data.task
    final_scores, final_out = fit.scores(final, run.data.test, task=task)
    final_sp = sparsity.measure_sparsity(final)
    pruned = sparsity.measure_sparsity(final, [lp.name for lp in plan.pruned] if plan is not None else [])
    cov = coverage.parameter_stats(final, pruned)
    info = ModelInfo(sparsity=final_sp["overall"], params=int(final_sp["params"]), zeros=int(final_sp["zeros"]),
                     validation_metric=validation_metric,
                     validation_accuracy=_as_accuracy(task, validation_metric), **cov)
    _fill_metrics(info, task, final_scores)
    if plan is None:  # no sparsity phase (e.g. channels only): no pruned kernels, so no coverage to report
        log.info("final Keras model: test %s %s, %s parameters (no sparsity phase)", task.metric_name,
                 task.fmt(info.metric), f"{cov['all_params']:,}")
    else:
        log.info("final Keras model: test %s %s, sparsity %.2f%% over the pruned kernels, %.2f%% over all "
                 "%s parameters (coverage %.1f%%)", task.metric_name, task.fmt(info.metric),
                 100 * cov["sparsity_pruned_kernels"],
                 100 * cov["sparsity_all_params"], f"{cov['all_params']:,}", 100 * cov["coverage"])
    low = coverage.coverage_warning(cov, plan) if plan is not None else None
    if low:
        run.warnings.append(low)
    return info, final_out


def _keras3_back(run: _Run, model: Any) -> dict[str, Any]:
    """The model came as Keras 3: hand it back as Keras 3 too (float weights; QAT wrappers do not translate)."""
    path = run.out / "final_keras3.keras"
    try:
        info: dict[str, Any] = to_keras3(model, path)
    except EdgesparseError as exc:
        run.warnings.append(f"the final model could not be written back as Keras 3: {exc}")
        return {"error": str(exc)}
    log.info("Keras 3 model written to %s", path)
    return info


def _fill_metrics(section: Any, task: Any, scores: dict[str, float]) -> None:
    """Set ``metric``, ``metrics`` and (where the task has it) ``accuracy`` of a summary section."""
    section.metrics = scores
    section.metric = scores.get(task.metric_key)
    acc_key = task.metric_key.rsplit("/", 1)[0] + "/accuracy" if task.multi_output else "accuracy"
    section.accuracy = scores.get(acc_key)


def _as_accuracy(task: Any, value: float | None) -> float | None:
    """``value`` when the guard metric is an accuracy (the summary's old ``validation_accuracy`` keys), else None."""
    return value if task.guard_key.rsplit("/", 1)[-1] == "accuracy" else None


def _validation_metric(run: _Run, model: Any) -> float:
    """The task's guard metric on the validation split (the test split when the data has no validation split)."""
    return fit.evaluate(model, run.data.validation(), task=run.data.task)[0]


_ADVICE_UNIT = {"points": "points", "%": "% (relative)"}


def _accuracy_guard(run: _Run, stage: str, model: Any) -> float:
    """Compare ``model`` with the dense baseline on the validation split in the task's guard metric.

    Fractions (accuracy, AUC) are compared in points, errors (mae, reconstruction error) as a relative
    increase in percent; ``max_drop`` is read in that unit.

    Returns:
        The model's validation figure.

    Raises:
        TrainError: the degradation exceeds ``max_drop`` and ``on_drop`` is fail.
    """
    task = run.data.task
    value = _validation_metric(run, model)
    scfg = run.recipe.sparsity
    max_drop, on_drop = (scfg.max_drop, scfg.on_drop) if scfg is not None else (None, "fail")
    section = "sparsity"
    if stage == "channels" and run.recipe.channels is not None:  # the channel phase has its own guard settings
        max_drop, on_drop, section = run.recipe.channels.max_drop, run.recipe.channels.on_drop, "channels"
    qcfg = run.recipe.quantization
    if stage.startswith("quantization") and qcfg is not None:  # its own settings, else the sparsity section's
        own = qcfg.max_drop is not None or qcfg.on_drop is not None or scfg is None
        max_drop = qcfg.max_drop if qcfg.max_drop is not None else max_drop
        on_drop = qcfg.on_drop or on_drop
        section = "quantization" if own else section
    key = task.guard_key
    max_drop = task.max_drop(max_drop, key)
    drop = task.degradation(run.dense_validation, value, key)
    if drop <= max_drop:
        return value
    split = "validation" if run.data.sizes()[1] else "test"
    unit = task.unit(key)
    advice = ("more quantization.epochs, a lower learning rate for it, or mode int8 (post-training)"
              if stage.startswith("quantization") else
              "more channels.epochs, a milder channels target, or allocation auto" if stage == "channels" else
              f"more sparsity.epochs (now {scfg.epochs}), {_milder(scfg)}, or distillation from the dense model"
              if scfg is not None else "more epochs")
    metric = key.replace("/", " ")
    worse = "below" if task.direction_of(key) == "higher" else "above"
    msg = (f"after {stage} the model's {split} {metric} is {task.fmt(value, key)}, {abs(drop):.2f} "
           f"{_ADVICE_UNIT[unit]} {worse} the dense baseline's {task.fmt(run.dense_validation, key)} "
           f"({section}.max_drop allows {max_drop:g} {_ADVICE_UNIT[unit]}). ")
    phase = stage.split(" ", maxsplit=1)[0]
    findings = health.diagnose_compressed(model, run.data, [r for r in run.history.rows if r.get("phase") == phase])
    if findings:
        causes = " ".join(f"({i}) {f.message}" for i, f in enumerate(findings, 1))
        hard = any(f.code in ("constant", "dead_units") for f in findings)  # more epochs cannot bring these back
        msg += (("The model collapsed in the phase rather than recovering too slowly" if hard else
                 "The model scores at chance") + f": {causes} "
                f"{_collapse_advice(run, stage, dead=any(f.code == 'dead_units' for f in findings), epochs=not hard)}")
    else:
        msg += f"Try {advice}"
    msg += f"; or set {section}.on_drop: warn to keep this model anyway."
    if on_drop == "fail":
        raise TrainError(msg)
    run.warnings.append(msg)
    return value


def _collapse_advice(run: _Run, stage: str, dead: bool, epochs: bool) -> str:
    """What to change when a compression phase collapsed the model (its learning rate, a gentler schedule)."""
    r = run.recipe
    if stage.startswith("quantization"):
        lr = r.quantization.optimizer.learning_rate if r.quantization is not None else None
        return f"Lower quantization.optimizer.learning_rate (now {lr:g}), or use mode int8 (post-training)"
    if stage == "channels" and r.channels is not None:
        return (f"Lower channels.optimizer.learning_rate (now {r.channels.optimizer.learning_rate:g}), or a milder "
                "channels target")
    scfg = r.sparsity
    if scfg is None:
        return "Lower the learning rate"
    gentle = (f"prune more gradually (sparsity.end later than epoch {scfg.end:g})" if scfg.method == "magnitude"
              and scfg.end is not None else "a smaller sparsity.update.drop_fraction")
    more = f", more sparsity.epochs (now {scfg.epochs})" if epochs else ""
    keep = ", or keep the layers named above dense (sparsity.layers: [{match: ..., skip: true}])" if dead else ""
    return (f"Lower sparsity.optimizer.learning_rate (now {scfg.optimizer.learning_rate:g}), {gentle}, "
            f"{_milder(scfg)}{more}{keep}")


def _milder(scfg: Any) -> str:
    """The sparsity section's milder target: a larger size budget, or a lower final."""
    return (f"a larger sparsity.target.bytes (now {scfg.target.bytes:,} B)" if scfg.target is not None else
            f"a lower sparsity.final (now {scfg.final:g})")


def _timing(baseline: BaselineInfo, sp: SparsityInfo | None, batch_size: int, t_start: float) -> TimingInfo:
    base_step = baseline.step_ms
    sp_step = sp.step_ms if sp is not None else None
    return TimingInfo(train_seconds=time.perf_counter() - t_start, baseline_step_ms=base_step,
                      sparsity_step_ms=sp_step, batch_size=batch_size,
                      step_time_ratio=(sp_step / base_step) if base_step and sp_step else None)


def _larger_than_dense(info: dict[str, Any]) -> list[str]:
    """A warning when the kept model.tflite is larger than the dense float32 file (never kept silently)."""
    dense_b, model_b = (info.get("dense") or {}).get("bytes"), info["model"]["bytes"]
    if not dense_b or model_b <= dense_b:  # larger: e.g. an unrolled RNN's int8 file, a sparse encoding's indices
        return []
    return [f"model.tflite ({model_b:,} B) is LARGER than the dense float32 file dense.tflite ({dense_b:,} B, "
            f"1/{dense_b / model_b:.2f}); export.objective {info.get('objective')} kept it as the best of the "
            "candidates that passed (export.json lists them). Check the sparse encoding (export.sparse_encoding: "
            "false or auto), the pattern, and for recurrent layers unroll=False (rolled: fused ops, one copy of the "
            "weights)."]


def _record_export(baseline: BaselineInfo, res: ExportResult, warnings: list[str]) -> TFLiteInfo:
    """Copy the bundle's figures into the summary (dense figures onto the baseline)."""
    info = res.info
    v = info.get("verification", {})
    dv = info.get("dense_verification", {})
    if "dense" in info:
        baseline.tflite_bytes = info["dense"]["bytes"]
        baseline.tflite_gzip_bytes = info["dense"]["gzip_bytes"]
        baseline.tflite_path = str(res.dense_path)
        baseline.tflite_accuracy = dv.get("accuracy")
        baseline.tflite_metric = dv.get("metric")
        if baseline.health is not None and dv:
            baseline.health["tflite"] = health.tflite_figures(dv)
    chosen: dict[str, Any] = next((c for c in info.get("candidates", []) if c.get("chosen")), {})
    if info.get("quantization") != info.get("requested_quantization"):
        kept = "float32" if info.get("quantization") == "none" else info.get("quantization")
        why = chosen.get("tried_because") or "it was the objective's choice"
        tip = ("" if "max_accuracy_drop" in why else
               "; set export.objective: size to keep the smallest file regardless")
        warnings.append(
            f"export kept the {kept} conversion of the "
            f"{'pruned float' if chosen.get('source') == 'float' else 'final'} model, not "
            f"{info.get('requested_quantization')}: "
            f"{why} (export.json lists every candidate with its accuracy, latency and why it was rejected{tip}).")
    diagnosis, kept_float = info.get("quantization_diagnosis"), info.get("keep_float") or {}
    if kept_float.get("requested") == "auto" and chosen.get("keep_float"):
        warnings.append(f"export kept {', '.join(chosen['keep_float'])} float32 in the int8 model.tflite "
                        f"(quantization.keep_float: auto): {kept_float.get('why')}.")
    elif diagnosis:
        warnings.append(f"export: {diagnosis['message']}")
    builtin_ops = chosen.get("builtin_ops") or {}
    if info.get("quantization") == "int16x8" and builtin_ops and v.get("resolver") != "builtin":
        warnings.append(
            f"XNNPACK took {chosen.get('xnnpack_ops')} ops of the int16x8 model.tflite: LiteRT's builtin reference "
            "kernels run its int16 ops (" + ", ".join(f"{k} x{n}" for k, n in builtin_ops.items()) + "), slower "
            "than XNNPACK's int8 and float32 kernels; int8 with QAT/pqat, or float32, run faster where they keep "
            "the accuracy.")
    if chosen.get("latency_ratio") is not None and chosen["latency_ratio"] > 1.0:
        warnings.append(f"model.tflite runs {chosen['latency_ratio']:.2f}x the dense float model's latency on this "
                        f"machine (paired), and no other conversion was faster (export.objective: "
                        f"{info.get('objective')}).")
    warnings += _larger_than_dense(info)
    if v.get("resolver") == "builtin":
        warnings.append(
            "XNNPACK refused model.tflite (" + str(v.get("fallback_reason")) + "), so LiteRT's slower builtin "
            "kernels run it; sparse int8 FULLY_CONNECTED weights in CSR cause this: give int8 dense layers the "
            "block:1x16 pattern (read natively, XNNPACK-compatible) or skip pruning them.")
    return TFLiteInfo(
        path=str(res.model_path), bytes=info["model"]["bytes"], gzip_bytes=info["model"]["gzip_bytes"],
        accuracy=v.get("accuracy"), metric=v.get("metric"), metrics=v.get("metrics") or {},
        agreement=v.get("agreement"), max_abs_diff=v.get("max_abs_diff"), max_rel_diff=v.get("max_rel_diff"),
        resolver=v.get("resolver"), fallback_reason=v.get("fallback_reason"), ratio_vs_dense=info.get("ratio"),
        densify_ops=info["model"].get("densify_ops"), encodings=info["model"].get("encodings"), bundle=str(res.bundle),
        quantization=info.get("quantization"), objective=info.get("objective"),
        latency_ratio=chosen.get("latency_ratio"),
        float_ops=[f"{o.get('layer') or o.get('tensor')} ({o.get('op')})" for o in info.get("float_ops") or []],
    )


def load_run(run_dir: str | Path, *, data: Any | None = None) -> LoadedRun:
    """Re-create the data and the saved models of a run directory.

    Args:
        run_dir: The run directory.
        data: The data objects the run was trained on, when it had them from Python (``train(data=...)``).

    Raises:
        ExportError: the folder is not a finished run directory.
    """
    run_dir = Path(run_dir)
    lock = run_dir / "recipe.lock.yaml"
    if not lock.exists():
        raise ExportError(f"'{run_dir}' is not a run directory (no recipe.lock.yaml); give the folder `train` wrote.")
    recipe = load_recipe(lock)
    state = json.loads((run_dir / "state.json").read_text()) if (run_dir / "state.json").exists() else {"done": {}}
    done = state.get("done", {})
    if state.get("recipe_dir"):
        set_recipe_dir(recipe, Path(state["recipe_dir"]))
    if "baseline" not in done:
        raise ExportError(f"the run in '{run_dir}' has not finished its baseline; run train (with --resume) first.")
    if recipe.sparsity is not None and "sparsity" not in done:
        raise ExportError(f"the run in '{run_dir}' has not finished its sparsity phase; run train --resume first.")
    _tf.set_seed(recipe.seed)
    if data is not None and not isinstance(recipe.data, PythonDataConfig):
        raise RecipeError(f"data= was given but the run in '{run_dir}' read its data from the recipe's data section; "
                          "drop data=.")
    dataset = (PythonObjects(data=data, data_name=getattr(recipe.data, "python", "data")).dataset()
               if data is not None else load_dataset(recipe.data, recipe.seed, base_dir=recipe_dir(recipe)))
    dense = _load_model(run_dir / "baseline.keras")
    dataset = bind_task(dense, dataset, recipe.task)
    before_sparsity = "channels.keras" if "channels" in done else "baseline.keras"
    final = _load_model(run_dir / ("sparse.keras" if "sparsity" in done else before_sparsity))
    mode = recipe.quantization.mode
    if quantize.trains(mode) and "quantization" in done:
        final = _load_quantized(final, mode, run_dir / "final.weights.h5")
    elif quantize.trains(mode):
        final = quantize.prepare(final, mode)
    return LoadedRun(recipe=recipe, data=dataset, dense_model=dense, final_model=final)


def export(run_dir: str | Path, bundle: str | Path | None = None, *, force: bool = False) -> ExportResult:
    """Export the models a finished ``train`` run saved (``edgesparse export RUN_DIR``).

    Args:
        run_dir: The run directory (with recipe.lock.yaml and the saved Keras models).
        bundle: Output folder; default: where ``train`` puts it (see :func:`bundle_dir`).
        force: Write over a bundle that another run exported.

    Returns:
        The written bundle.

    Raises:
        ExportError: the run directory is incomplete, or conversion/verification failed.
        RunDirError: the bundle folder holds another run's export and ``force`` is off.
    """
    run = load_run(run_dir)
    recipe = run.recipe
    if recipe.export is None:
        recipe = recipe.model_copy(update={"export": ExportConfig()})
    out = Path(bundle) if bundle is not None else bundle_dir(recipe, Path(run_dir))
    # a run still training there holds the run directory's lock; a read-only run directory cannot be trained in
    held = rundir.lock(Path(run_dir)) if os.access(run_dir, os.W_OK) else contextlib.nullcontext()
    with held, rundir.lock_bundle(out):
        claim_bundle(out, Path(run_dir), force=force)
        return export_models(run.final_model, run.dense_model, recipe=recipe, data=run.data, bundle=out,
                             run_dir=Path(run_dir))
