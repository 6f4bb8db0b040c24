"""One training phase: compile, fit with checkpoints/resume, history and step timing."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgesparse import _io, _tf, progress, rundir
from edgesparse.data.stream import Split
from edgesparse.errors import TrainError
from edgesparse.recipe import DistillationConfig, OptimizerConfig
from edgesparse.task import Task
from edgesparse.train import distill
from edgesparse.train.compile import compile_model

logger = logging.getLogger(__name__)

_STOP = threading.Event()
_IN_FIT = threading.Event()


@contextlib.contextmanager
def graceful_interrupt() -> Iterator[None]:
    """Turn the first Ctrl-C during training into a stop at the end of the current epoch.

    An interrupt delivered while TensorFlow runs native code can corrupt its heap (seen in CI:
    "free(): invalid next size", SIGABRT). So inside ``fit`` the first SIGINT only sets a flag; the
    epoch finishes, its checkpoint is written, and training stops with KeyboardInterrupt. A second
    Ctrl-C, or one outside ``fit``, interrupts at once. Only installed from the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if _IN_FIT.is_set() and not _STOP.is_set():
            _STOP.set()
            print("\ninterrupt: stopping at the end of this epoch (Ctrl-C again to abort now)", flush=True)
            return
        raise KeyboardInterrupt

    _STOP.clear()
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _STOP.clear()


@dataclass
class PhaseResult:
    """What one phase's fit measured."""

    phase: str
    epochs: int
    seconds: float
    step_ms: float | None  # median train step, first epoch (tracing) excluded
    history: list[dict[str, Any]] = field(default_factory=list)


class _StepTimer:
    """Times every train step (batch begin -> end); the first epoch is warm-up (graph tracing)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._t0 = 0.0
        self._epoch = 0

    def callback(self) -> Any:
        keras = _tf.keras()
        timer = self

        class StepTimer(keras.callbacks.Callback):  # type: ignore[name-defined]
            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                timer._epoch = epoch

            def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
                timer._t0 = time.perf_counter()

            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                if timer._epoch > 0 or batch > 2:
                    timer.samples.append(time.perf_counter() - timer._t0)

        return StepTimer()

    def median_ms(self) -> float | None:
        return float(np.median(self.samples) * 1000) if self.samples else None


class History:
    """history.csv of every phase, rewritten atomically after each epoch."""

    #: the columns every history has, in this order; every other compiled metric follows (``auc``, ``cls_accuracy``)
    COLUMNS: ClassVar[list[str]] = ["phase", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "sparsity",
                                    "seconds"]

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        if path.exists():
            with path.open(newline="") as f:
                self.rows = list(csv.DictReader(f))

    def drop_phase(self, phase: str) -> None:
        self.rows = [r for r in self.rows if r.get("phase") != phase]

    def add(self, row: dict[str, Any]) -> None:
        same = (row["phase"], str(row["epoch"]))
        self.rows = [r for r in self.rows if (r.get("phase"), str(r.get("epoch"))) != same]
        self.rows.append(row)
        columns = list(self.COLUMNS)
        for r in self.rows:
            columns += [k for k in r if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for r in self.rows:
            writer.writerow({k: _fmt(r.get(k)) for k in columns})
        _io.write_text(self.path, buf.getvalue())


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else ("" if v is None else v)


# long: about 35 lines of code; the rest is the docstring of its fifteen keyword arguments
def run_phase(
    phase: str,
    model: Any,
    data: Any,
    *,
    epochs: int,
    optimizer: OptimizerConfig,
    batch_size: int,
    seed: int,
    run_dir: Path,
    history: History,
    resume: bool,
    extra_callbacks: list[Any] = (),  # type: ignore[assignment]
    epoch_metrics: Callable[[Any], dict[str, Any]] | None = None,
    shuffle: bool = True,
    teacher: Any | None = None,
    distillation: DistillationConfig | None = None,
    shuffle_buffer: int | None = None,
) -> PhaseResult:
    """Compile and fit ``model`` for one phase.

    Checkpoints (model + optimizer + epoch) are written every epoch under ``run_dir/backup/<phase>``;
    with ``resume`` an interrupted phase continues from its last completed epoch.

    Args:
        phase: "baseline", "sparsity" or "quantization".
        model: The model to train (compiled here).
        data: A ``Dataset``.
        epochs: Epochs of this phase.
        optimizer: Optimizer settings.
        batch_size: Batch size.
        seed: Shuffle seed.
        run_dir: The run directory.
        history: Where per-epoch rows go.
        resume: Continue from the phase's last checkpoint if there is one.
        extra_callbacks: Phase-specific callbacks (pruning step updates ...).
        epoch_metrics: Extra per-epoch columns computed from the model (e.g. sparsity).
        shuffle: Shuffle the training data each epoch.
        teacher: A trained model to distil from (see :mod:`edgesparse.train.distill`); needs
            ``distillation``. None trains on the labels only.
        distillation: Weight and temperature of the distillation loss (ignored without ``teacher``).
        shuffle_buffer: Samples in a streamed training split's shuffle buffer (default: what 64 MB holds).

    Returns:
        The phase's timing and history.

    Raises:
        TrainError: the loss diverged.
        TypeError: a ``teacher`` without ``distillation``.
    """
    _compile_for_phase(phase, model, optimizer, teacher, distillation, data.task)
    backup = rundir.inside(run_dir, run_dir / "backup" / phase)  # no symlink followed out of the run directory
    logs = rundir.inside(run_dir, run_dir / "logs" / phase)
    if not resume and backup.exists():
        rundir.remove_tree(run_dir, backup)
    if not resume:
        history.drop_phase(phase)
    timer = _StepTimer()
    callbacks = [
        _tf.keras().callbacks.TerminateOnNaN(),
        timer.callback(),
        *extra_callbacks,
        *_lr_schedule(optimizer, epochs),
        # Deleted below only once the phase completed: a graceful stop must keep it for --resume.
        _tf.keras().callbacks.BackupAndRestore(str(backup), delete_checkpoint=False),
        *([_resume_report(phase, epochs, backup)] if resume else []),
        _tf.keras().callbacks.TensorBoard(str(logs), profile_batch=0, write_graph=False),
        _recorder(phase, history, epoch_metrics),
        # last: reads the row the recorder just wrote (its sparsity column)
        progress.callback(phase, epochs, data.task, columns=lambda: history.rows[-1] if history.rows else {}),
    ]
    train_ds = data.train.dataset(batch_size, shuffle=shuffle, seed=seed, targets=data.fit_targets,
                                  shuffle_buffer=shuffle_buffer)
    val = data.val.dataset(batch_size, targets=data.fit_targets) if data.val.n else None
    t0 = time.perf_counter()
    _IN_FIT.set()
    try:
        model.fit(train_ds, epochs=epochs, validation_data=val, callbacks=callbacks, verbose=0)
    finally:
        _IN_FIT.clear()
        if teacher is not None:
            distill.remove_distillation(model)
    if _STOP.is_set():
        raise KeyboardInterrupt
    rundir.remove_tree(run_dir, backup)
    seconds = time.perf_counter() - t0
    _check_finite(phase, model, optimizer, data, batch_size)
    rows = [r for r in history.rows if r.get("phase") == phase]
    return PhaseResult(phase=phase, epochs=epochs, seconds=seconds, step_ms=timer.median_ms(), history=rows)


def _lr_schedule(optimizer: OptimizerConfig, epochs: int) -> list[Any]:
    """The learning-rate callback of ``optimizer.schedule`` (none for constant).

    Per epoch, so a resumed phase continues on the same curve: epoch ``e`` of ``epochs`` trains at
    ``learning_rate * (1 + cos(pi * e / epochs)) / 2``.
    """
    if optimizer.schedule != "cosine" or epochs <= 0:
        return []
    base = float(optimizer.learning_rate)

    def rate(epoch: int, lr: float) -> float:
        return base * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))

    return [_tf.keras().callbacks.LearningRateScheduler(rate)]


def _compile_for_phase(phase: str, model: Any, optimizer: OptimizerConfig, teacher: Any | None,
                       distillation: DistillationConfig | None, task: Task | None) -> None:
    """Compile ``model`` for plain training, or for distillation from ``teacher``."""
    if teacher is not None and distillation is None:
        raise TypeError("run_phase: a teacher needs its distillation settings (weight, temperature)")
    if teacher is not None and distillation is not None:
        distill.compile_for_distillation(model, teacher, distillation, optimizer, task)
        logger.info("%s: distilling from '%s' (weight %g, temperature %g)", phase, teacher.name,
                    distillation.weight, distillation.temperature)
    else:
        compile_model(model, optimizer, task)


def _recorder(phase: str, history: History, epoch_metrics: Callable[[Any], dict[str, Any]] | None) -> Any:
    """A callback writing one history row per epoch (and stopping after a graceful Ctrl-C)."""
    t_epoch = [time.perf_counter()]

    class Recorder(_tf.keras().callbacks.Callback):  # type: ignore[misc]
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            t_epoch[0] = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            row = {"phase": phase, "epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
            row["seconds"] = time.perf_counter() - t_epoch[0]
            if epoch_metrics is not None:
                row.update(epoch_metrics(self.model))
            history.add(row)
            if _STOP.is_set():  # after BackupAndRestore saved this epoch
                self.model.stop_training = True

    return Recorder()


def _resume_report(phase: str, epochs: int, backup: Path) -> Any:
    """A callback saying where an interrupted phase continues (runs after BackupAndRestore restored it)."""

    class ResumeReport(_tf.keras().callbacks.Callback):  # type: ignore[misc]
        def on_train_begin(self, logs: Any = None) -> None:
            state = getattr(self.model, "_training_state", None)
            saved = getattr(state, "_ckpt_saved_epoch", None)
            done = int(saved.numpy()) + 1 if saved is not None else 0  # -1: nothing restored
            if done > 0:
                logger.info("resume: %s phase continues from epoch %d of %d (%d completed, restored from %s)",
                            phase, done + 1, epochs, done, backup)
            else:
                logger.info("resume: %s phase has no checkpoint; starting it at epoch 1 of %d", phase, epochs)

    return ResumeReport()


def _check_finite(phase: str, model: Any, optimizer: OptimizerConfig, data: Any = None, batch_size: int = 256) -> None:
    """Raise TrainError when the phase's loss became NaN or inf; DataError first when the data holds NaN/Inf."""
    losses = (model.history.history or {}).get("loss", []) if getattr(model, "history", None) else []
    if any(not np.isfinite(v) for v in losses):
        if data is not None:  # broken data is named (split, batch) before any advice on learning rates
            from edgesparse.data.checks import raise_if_nonfinite

            raise_if_nonfinite([data.train, data.val], batch_size, f"training diverged in the {phase} phase")
        raise TrainError(f"training diverged in the {phase} phase (loss became NaN/inf); lower its learning rate "
                         f"(currently {optimizer.learning_rate:g}) or check the data for NaNs.")


def _named(model: Any, out: Any) -> Any:
    if isinstance(out, (list, tuple)):
        names = list(getattr(model, "output_names", None) or [f"output_{i}" for i in range(len(out))])
        return {n: np.asarray(o) for n, o in zip(names, out)}
    if isinstance(out, dict):
        return {k: np.asarray(v) for k, v in out.items()}
    return np.asarray(out)


def predict(model: Any, x: Any, batch_size: int = 256) -> Any:
    """The model's outputs on ``x`` (arrays, or a :class:`~edgesparse.data.stream.Split` read batch by batch):
    one array, or a dict by output name for several outputs."""
    if isinstance(x, Split):
        return collect(model, x, batch_size)[0]
    return _named(model, model.predict(x, batch_size=batch_size, verbose=0))


def collect(model: Any, split: Split, batch_size: int = 256, inputs: bool = False) -> tuple[Any, Any, Any]:
    """Run ``model`` over a split batch by batch: ``(outputs, targets, inputs or None)`` (see :meth:`Split.apply`)."""
    if not split.is_stream:
        return split.apply(lambda x: predict(model, x, batch_size), batch_size, inputs)
    return split.apply(lambda x: _named(model, model.predict_on_batch(x)), batch_size, inputs)


def _needs_inputs(task: Task | None) -> bool:
    return task is not None and any(h.kind == "anomaly" for h in task.heads)


def evaluate(model: Any, x: Any, y: Any = None, batch_size: int = 256, task: Task | None = None
             ) -> tuple[float, Any]:
    """The primary metric and the outputs of ``model`` on ``(x, y)`` or on a split.

    Args:
        model: The model.
        x: Inputs (array or dict by input name), or a :class:`~edgesparse.data.stream.Split` (``y`` unused).
        y: Targets (for anomaly the 0/1 labels).
        batch_size: Prediction batch size.
        task: The data's task; None scores top-1 accuracy (a classifier).

    Returns:
        ``(primary metric, outputs)``; for anomaly on a split without both labels the primary is the
        reconstruction error (:attr:`~edgesparse.task.Task.guard_key`).
    """
    if isinstance(x, Split):
        out, y, x = collect(model, x, batch_size, _needs_inputs(task))
    else:
        out = predict(model, x, batch_size)
    if task is None:
        return float(np.mean(np.argmax(out, axis=-1) == y)), out
    scores = task.evaluate(out, y, x)
    return float(scores.get(task.metric_key, scores.get(task.guard_key, float("nan")))), out


def scores(model: Any, x: Any, y: Any = None, task: Task | None = None, batch_size: int = 256
           ) -> tuple[dict[str, float], Any]:
    """Every metric of the task on ``(x, y)`` or on a :class:`~edgesparse.data.stream.Split`, and the outputs."""
    if task is None:
        raise TypeError("fit.scores needs the task")
    if isinstance(x, Split):
        out, y, x = collect(model, x, batch_size, _needs_inputs(task))
    else:
        out = predict(model, x, batch_size)
    return task.evaluate(out, y, x), out
