"""Progress of long work: one record per epoch of every training phase, ``i/N`` records of long loops.

Everything goes to the logger ``edgesparse.progress`` as INFO records, which a library user reads without
parsing text: every record carries structured attributes (``record.phase``, ``record.epoch``,
``record.eta`` ...; see :class:`EpochProgress` and :func:`item`).

The Python API (``edgesparse.train(..., progress=None)``) shows progress through :func:`shown`: when the
user configured no logging, the records are printed as plain lines on stderr, and when the session is
interactive, live bars show too (:class:`NotebookDisplay` in a Jupyter kernel, :class:`RichDisplay` on a
terminal). ``progress=False`` shows nothing (the records are still logged).

Within-epoch progress (batch j of the epoch's steps) is not logged (it would be thousands of records);
it goes only to the :class:`Listener` objects installed with :func:`listening`, such as
:class:`RichDisplay`, the live bars ``edgesparse train`` shows on a terminal.

This module imports neither TensorFlow nor rich at import time: the Keras callback class is built
when :func:`callback` is called (through ``_tf``), rich when a :class:`RichDisplay` starts a phase.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from edgesparse.task import Task, unwrapped_name

logger = logging.getLogger("edgesparse.progress")

#: Task metric names whose Keras counterpart is compiled under another name.
_KERAS_NAMES = {"reconstruction_mse": "mse"}


@dataclass(frozen=True)
class EpochProgress:
    """One finished epoch of a training phase: what the per-epoch record says, and carries as attributes.

    Attributes:
        phase: ``baseline``, ``channels``, ``sparsity`` or ``quantization``.
        epoch: The epoch just finished, counted from 1.
        epochs: Epochs of the phase.
        loss: Training loss of the epoch (None when Keras logged none).
        metric_name: The primary metric as people read it (``accuracy``, ``cls accuracy``), or None when
            training computes no Keras counterpart of it (then only the loss is reported).
        metric: Its value on the training batches of the epoch.
        val_loss: Validation loss (None without a validation split).
        val_metric: The primary metric on the validation split.
        sparsity: Overall sparsity of the pruned kernels after the epoch (pruning phases only).
        seconds: Duration of this epoch.
        elapsed: Seconds since the phase started (in this process).
        eta: Estimated seconds left: the mean epoch time so far times the epochs left.
    """

    phase: str
    epoch: int
    epochs: int
    loss: float | None
    metric_name: str | None
    metric: float | None
    val_loss: float | None
    val_metric: float | None
    sparsity: float | None
    seconds: float
    elapsed: float
    eta: float

    def message(self) -> str:
        """The record's text: ``baseline epoch 3/30: loss 0.412, accuracy 0.875, ... elapsed 6.2s, ETA 58s``."""
        parts = [f"loss {_num(self.loss)}"]
        if self.metric_name is not None:
            parts.append(f"{self.metric_name} {_num(self.metric)}")
        if self.val_loss is not None:
            parts.append(f"val loss {_num(self.val_loss)}")
        if self.metric_name is not None and self.val_metric is not None:
            parts.append(f"val {self.metric_name} {_num(self.val_metric)}")
        if self.sparsity is not None:
            parts.append(f"sparsity {100 * self.sparsity:.1f}%")
        parts.append(f"{duration(self.seconds)}/epoch, elapsed {duration(self.elapsed)}, ETA {duration(self.eta)}")
        return f"{self.phase} epoch {self.epoch}/{self.epochs}: " + ", ".join(parts)

    def extra(self) -> dict[str, Any]:
        """The attributes a log record carries (``extra=``): every field, plus ``event="epoch"``."""
        return {"event": "epoch", **asdict(self)}


def _num(v: float | None) -> str:
    return "—" if v is None else f"{v:.4g}"


def duration(seconds: float) -> str:
    """Seconds for people: ``0.42s``, ``12.3s``, ``4m05s``, ``1h02m``."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 10:
        return f"{seconds:.2g}s" if seconds < 1 else f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        m, s = divmod(round(seconds), 60)
        return f"{m}m{s:02d}s"
    h, m = divmod(round(seconds) // 60, 60)
    return f"{h}h{m:02d}m"


def item(step: str, index: int, total: int, what: str) -> None:
    """Log that item ``index`` of ``total`` of a long step starts: ``"sensitivity 3/12: conv2 (16 channels)"``.

    One record per item (a candidate, a channel group, a layer, a model timed), never per timing run.
    The record carries ``event="item"``, ``step``, ``index``, ``total`` and ``item`` attributes.

    Args:
        step: What the loop does, e.g. ``"export candidate"``, ``"sensitivity"``, ``"latency"``.
        index: The item's number, from 1.
        total: How many items the loop has.
        what: The item, for people.
    """
    logger.info("%s %d/%d: %s", step, index, total, what,
                extra={"event": "item", "step": step, "index": index, "total": total, "item": what})


class Listener:
    """Receives live training progress, including batches within an epoch (install with :func:`listening`).

    Every method is a no-op here; override the ones you need. They are called from the training thread.
    """

    def phase_begin(self, phase: str, epochs: int, first_epoch: int, steps: int | None) -> None:
        """A phase starts fitting at ``first_epoch`` (0, or later when resumed) of ``epochs``."""

    def batch_end(self, phase: str, epoch: int, step: int, steps: int | None, loss: float | None,
                  elapsed: float, eta: float | None) -> None:
        """Training batch ``step`` (from 1) of epoch ``epoch`` (from 1) finished."""

    def epoch_end(self, progress: EpochProgress) -> None:
        """An epoch finished (the same figures as its log record)."""

    def phase_end(self, phase: str) -> None:
        """The phase stopped fitting (finished, or stopped early)."""


_LISTENERS: list[Listener] = []
_LOCK = threading.Lock()


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[Listener]:
    """Send live progress to ``listener`` while the block runs.

    Args:
        listener: E.g. a :class:`RichDisplay`.

    Yields:
        The listener.
    """
    with _LOCK:
        _LISTENERS.append(listener)
    try:
        yield listener
    finally:
        with _LOCK:
            _LISTENERS.remove(listener)
        listener.phase_end("")


def _notify(method: str, *args: Any) -> None:
    for listener in list(_LISTENERS):
        try:
            getattr(listener, method)(*args)
        except Exception:  # noqa: BLE001  (a broken display must not stop training)
            logger.debug("progress listener %r failed in %s", listener, method, exc_info=True)


def metric_log_key(task: Task | None, keys: Iterable[str]) -> tuple[str, str] | None:
    """The Keras logs key of the task's primary metric, and its name for people (None: loss only).

    Keras names compiled metrics after the metric (``accuracy``, ``auc``, ``mae``), and, for several
    outputs, after the output layer too (``cls_accuracy``, or ``prune_low_magnitude_cls_accuracy`` while
    pruning). The primary metric is looked for first, then the guard metric (an autoencoder's
    reconstruction error, compiled as ``mse``).

    Args:
        task: The data's task; None: a classifier compiled with ``accuracy``.
        keys: The keys of an epoch's logs.

    Returns:
        ``(logs key, name)`` or None when training computes neither metric.
    """
    train = [k for k in keys if not k.startswith("val_")]
    if task is None:
        return ("accuracy", "accuracy") if "accuracy" in train else None
    for key in dict.fromkeys((task.metric_key, task.guard_key)):
        head, _, metric = key.rpartition("/")
        wanted = _KERAS_NAMES.get(metric, metric)
        name = key.replace("/", " ")
        if not head and wanted in train:
            return wanted, name
        for k in train:
            if head and k.endswith(f"_{wanted}") and unwrapped_name(k[: -len(wanted) - 1], [head]) == head:
                return k, name
    return None


class _Tracker:
    """The per-phase bookkeeping behind the Keras callback: times epochs, logs records, feeds listeners."""

    def __init__(self, phase: str, epochs: int, task: Task | None,
                 columns: Callable[[], Mapping[str, Any]] | None = None) -> None:
        self.phase, self.epochs, self.task, self.columns = phase, epochs, task, columns
        self.steps: int | None = None
        self.key: tuple[str, str] | None = None
        self.t_begin = self.t_epoch = time.perf_counter()
        self.epoch_seconds: list[float] = []
        self.first_epoch: int | None = None
        self.epoch = 0  # the running epoch, from 1

    def begin(self, steps: int | None) -> None:
        self.steps = steps
        self.t_begin = time.perf_counter()

    def epoch_begin(self, epoch: int) -> None:
        if self.first_epoch is None:
            self.first_epoch = epoch
            _notify("phase_begin", self.phase, self.epochs, epoch, self.steps)
        self.epoch = epoch + 1
        self.t_epoch = time.perf_counter()

    def batch_end(self, batch: int, logs: Mapping[str, Any] | None) -> None:
        if not _LISTENERS:
            return
        now = time.perf_counter()
        loss = _float((logs or {}).get("loss"))
        eta = None
        done_here = self.epoch - 1 - (self.first_epoch or 0)  # epochs finished in this process
        if self.steps:
            fraction = (done_here + (batch + 1) / self.steps) / max(1, self.epochs - (self.first_epoch or 0))
            eta = (now - self.t_begin) * (1 - fraction) / fraction if fraction > 0 else None
        _notify("batch_end", self.phase, self.epoch, batch + 1, self.steps, loss, now - self.t_begin, eta)

    def epoch_end(self, epoch: int, logs: Mapping[str, Any] | None) -> EpochProgress:
        now = time.perf_counter()
        logs = dict(logs or {})
        self.epoch_seconds.append(now - self.t_epoch)
        if self.key is None:
            self.key = metric_log_key(self.task, list(logs))
        extra = dict(self.columns() or {}) if self.columns is not None else {}
        mean = sum(self.epoch_seconds) / len(self.epoch_seconds)
        p = EpochProgress(
            phase=self.phase, epoch=epoch + 1, epochs=self.epochs, loss=_float(logs.get("loss")),
            metric_name=self.key[1] if self.key else None,
            metric=_float(logs.get(self.key[0])) if self.key else None,
            val_loss=_float(logs.get("val_loss")),
            val_metric=_float(logs.get(f"val_{self.key[0]}")) if self.key else None,
            sparsity=_float(extra.get("sparsity")), seconds=self.epoch_seconds[-1], elapsed=now - self.t_begin,
            eta=mean * max(0, self.epochs - epoch - 1))
        logger.info("%s", p.message(), extra=p.extra())
        _notify("epoch_end", p)
        return p

    def end(self) -> None:
        _notify("phase_end", self.phase)


def _float(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def callback(phase: str, epochs: int, task: Task | None,
             columns: Callable[[], Mapping[str, Any]] | None = None) -> Any:
    """A Keras callback reporting the progress of one training phase (see the module's docstring).

    Place it after the callbacks that compute the epoch's extra columns: it reads them on epoch end.

    Args:
        phase: The phase's name.
        epochs: Epochs of the phase.
        task: The data's task (which metric of the logs is the primary one); None: a classifier.
        columns: Returns the latest epoch's extra columns (``sparsity`` is reported while pruning).

    Returns:
        A ``tf_keras.callbacks.Callback``.
    """
    from edgesparse import _tf

    tracker = _Tracker(phase, epochs, task, columns)

    class Progress(_tf.keras().callbacks.Callback):  # type: ignore[misc]
        def on_train_begin(self, logs: Any = None) -> None:
            tracker.begin((self.params or {}).get("steps"))

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            tracker.epoch_begin(epoch)

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            tracker.batch_end(batch, logs)

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            tracker.epoch_end(epoch, logs)

        def on_train_end(self, logs: Any = None) -> None:
            tracker.end()

    return Progress()


class RichDisplay(Listener):
    """Live bars on a terminal: the phase's epochs and the batches of the current epoch, loss, metric, ETA.

    Bars appear when a phase starts fitting and vanish when it ends (its per-epoch log records stay).
    While a phase runs, print other output through :attr:`console` (when :attr:`active`), so it lands
    above the bars instead of through them.

    Args:
        console: A ``rich.console.Console`` on a terminal (e.g. stderr).
    """

    def __init__(self, console: Any) -> None:
        self.console = console
        self._bars: Any = None
        self._epochs: Any = None
        self._batches: Any = None
        self._info = ""
        self._steps: int | None = None

    @property
    def active(self) -> bool:
        """Whether the bars are on screen."""
        return self._bars is not None

    def phase_begin(self, phase: str, epochs: int, first_epoch: int, steps: int | None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.phase_end(phase)
        self._bars = Progress(TextColumn("{task.description:>16}"), BarColumn(bar_width=30), MofNCompleteColumn(),
                              TextColumn("{task.fields[info]}"), console=self.console, transient=True,
                              refresh_per_second=4)
        self._epochs = self._bars.add_task(f"{phase} epoch", total=epochs, completed=first_epoch, info="")
        self._batches = self._bars.add_task("batch", total=steps, info="")
        self._info, self._steps = "", steps
        self._bars.start()

    def batch_end(self, phase: str, epoch: int, step: int, steps: int | None, loss: float | None,
                  elapsed: float, eta: float | None) -> None:
        if self._bars is None:
            return
        self._bars.update(self._batches, completed=step, total=steps, info=f"loss {_num(loss)}")
        self._bars.update(self._epochs, info=f"{self._info}elapsed {duration(elapsed)}, ETA "
                                             f"{duration(eta) if eta is not None else '?'}")

    def epoch_end(self, progress: EpochProgress) -> None:
        if self._bars is None:
            return
        p = progress
        metric = f"{p.metric_name} {_num(p.metric)}, " if p.metric_name else ""
        val = f"val {p.metric_name} {_num(p.val_metric)}, " if p.metric_name and p.val_metric is not None else ""
        self._info = f"loss {_num(p.loss)}, {metric}{val}"
        self._bars.update(self._epochs, completed=p.epoch,
                          info=f"{self._info}elapsed {duration(p.elapsed)}, ETA {duration(p.eta)}")
        self._bars.reset(self._batches, total=self._steps, info="")

    def phase_end(self, phase: str) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None


class _Board:
    """What a notebook cell shows for one phase: its bars as HTML (``_repr_html_``) and as text (``repr``)."""

    def __init__(self, phase: str, epochs: int, epoch: int, steps: int | None, step: int, info: str,
                 lines: list[str], running: bool) -> None:
        self.phase, self.epochs, self.epoch, self.steps, self.step = phase, epochs, epoch, steps, step
        self.info, self.lines, self.running = info, list(lines), running

    def _rows(self) -> list[tuple[str, int, int | None]]:
        rows: list[tuple[str, int, int | None]] = [(f"{self.phase} epoch", self.epoch, self.epochs)]
        if self.running:
            rows.append(("batch", self.step, self.steps))
        return rows

    def __repr__(self) -> str:
        out = []
        for label, done, total in self._rows():
            width = 30
            filled = round(width * done / total) if total else 0
            out.append(f"{label:>16} [{'#' * filled}{'.' * (width - filled)}] {done}/{total if total else '?'}")
        if self.info:
            out.append(f"{'':>16} {self.info}")
        return "\n".join(out + self.lines)

    def _repr_html_(self) -> str:
        from html import escape

        rows = "".join(
            f"<tr><td style='text-align:right'>{escape(label)}</td><td><progress value='{done}' "
            f"max='{total or 1}' style='width:16em'></progress></td><td>{done}/{total if total else '?'}</td></tr>"
            for label, done, total in self._rows())
        info = f"<div>{escape(self.info)}</div>" if self.info else ""
        lines = "".join(f"<div><code>{escape(line)}</code></div>" for line in self.lines)
        return f"<div><table>{rows}</table>{info}{lines}</div>"


class NotebookDisplay(Listener):
    """Bars in a Jupyter cell: the phase's epochs, the batches of the running epoch, loss, metric, ETA.

    Each phase gets one output area, updated in place (at most every ``interval`` seconds within an
    epoch) and left in the cell when the phase ends, with one line per finished epoch under the bars.
    Needs only IPython's display machinery (no widgets).

    Args:
        display: Shows an object and returns a handle with ``update(obj)``; default
            ``IPython.display.display(obj, display_id=True)``.
        interval: Seconds between two redraws within an epoch.
    """

    def __init__(self, display: Callable[[Any], Any] | None = None, interval: float = 0.5) -> None:
        self._display = display
        self.interval = interval
        self._handle: Any = None
        self._state: dict[str, Any] = {}
        self._last = 0.0

    def _show(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        board = _Board(**self._state)
        if self._handle is None:
            if self._display is None:
                from IPython.display import display

                self._handle = display(board, display_id=True)
            else:
                self._handle = self._display(board)
        else:
            self._handle.update(board)

    def phase_begin(self, phase: str, epochs: int, first_epoch: int, steps: int | None) -> None:
        self.phase_end(phase)
        self._handle = None
        self._state = {"phase": phase, "epochs": epochs, "epoch": first_epoch, "steps": steps, "step": 0,
                       "info": "", "lines": [], "running": True}
        self._show(force=True)

    def batch_end(self, phase: str, epoch: int, step: int, steps: int | None, loss: float | None,
                  elapsed: float, eta: float | None) -> None:
        if not self._state:
            return
        self._state.update(step=step, steps=steps, info=f"loss {_num(loss)}, elapsed {duration(elapsed)}, ETA "
                                                         f"{duration(eta) if eta is not None else '?'}")
        self._show(force=step == steps)

    def epoch_end(self, progress: EpochProgress) -> None:
        if not self._state:
            return
        self._state["lines"].append(progress.message())
        self._state.update(epoch=progress.epoch, step=0, info="")
        self._show(force=True)

    def phase_end(self, phase: str) -> None:
        if self._state and self._state["running"]:
            self._state["running"] = False
            self._show(force=True)


def interactive() -> str | None:
    """Where this process shows output to a person: ``"notebook"`` (a Jupyter kernel), ``"terminal"`` (stderr is
    a terminal), or None (a pipe, a file, a batch job)."""
    shell = sys.modules.get("IPython")
    if shell is not None:
        try:
            ip = shell.get_ipython()
        except Exception:  # noqa: BLE001  (an IPython too old or too broken to ask: not a notebook)
            ip = None
        kernel = ip is not None and "IPKernelApp" in getattr(ip, "config", {})
        if kernel or type(ip).__name__ == "ZMQInteractiveShell":
            return "notebook"
    try:
        return "terminal" if sys.stderr.isatty() else None
    except (AttributeError, ValueError):
        return None


class _LineHandler(logging.Handler):
    """Prints the package's INFO records as ``· line`` on stderr (above the live bars while they show)."""

    def __init__(self, live: Listener | None) -> None:
        super().__init__(logging.INFO)
        self.live = live

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
            if isinstance(self.live, NotebookDisplay) and getattr(record, "event", None) == "epoch":
                return  # the notebook's bars list the epochs themselves
            text = f"warning: {msg}" if record.levelno >= logging.WARNING else f"· {msg}"
            if isinstance(self.live, RichDisplay) and self.live.active:
                self.live.console.print(text, markup=False, highlight=False)
            else:
                print(text, file=sys.stderr, flush=True)
        except Exception:  # noqa: BLE001  (logging must never stop training)
            self.handleError(record)


def logging_configured() -> bool:
    """Whether something already receives the progress records (a handler on ``edgesparse.progress`` or above)."""
    return logger.hasHandlers()


@contextlib.contextmanager
def shown(enabled: bool = True) -> Iterator[None]:
    """Show progress to the person running the API while the block runs.

    When enabled: the package's INFO records (one per epoch, ``i/N`` of long steps, warnings) are printed
    as ``· line`` on stderr if no logging is configured (:func:`logging_configured`; otherwise the user's
    handlers get them), and live bars show when :func:`interactive` (a notebook or a terminal) unless
    another display (the CLI's) is already listening.

    Args:
        enabled: False shows nothing (the records are still logged).

    Yields:
        Nothing.
    """
    if enabled is False:
        yield
        return
    where = interactive()
    live: Listener | None = None
    if not _LISTENERS:
        if where == "notebook":
            live = NotebookDisplay()
        elif where == "terminal":
            from rich.console import Console

            live = RichDisplay(Console(stderr=True))
    handler = None if logging_configured() else _LineHandler(live)
    logger_ = logging.getLogger("edgesparse")
    old_level, old_propagate = logger_.level, logger_.propagate
    if handler is not None:
        logger_.addHandler(handler)
        if logger_.getEffectiveLevel() > logging.INFO:
            logger_.setLevel(logging.INFO)
        # a library may call logging.info() meanwhile, which configures the root logger (basicConfig):
        # the records must not be printed twice
        logger_.propagate = False
    try:
        with listening(live) if live is not None else contextlib.nullcontext():
            yield
    finally:
        if handler is not None:
            logger_.removeHandler(handler)
            logger_.setLevel(old_level)
            logger_.propagate = old_propagate


__all__ = ["EpochProgress", "Listener", "NotebookDisplay", "RichDisplay", "callback", "duration", "interactive",
           "item", "listening", "logging_configured", "metric_log_key", "shown"]
