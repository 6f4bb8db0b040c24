"""The baseline health check: is the dense model worth compressing?

After the baseline phase (trained, or ``baseline.epochs: 0``) and before channel pruning or sparsity,
the dense model's guard metric on the validation split is compared with the task's *chance level*:
what a model that ignores its input scores there. The trivial model predicts, for every sample,

* classification: the training split's class frequencies (so its top-1 is the majority class);
* binary / multilabel: each unit's positive rate in the training split (accuracy = majority share,
  AUC 0.5);
* regression: the training targets' mean;
* anomaly: the training split's mean sample as every reconstruction (the validation split holds
  normal samples only, so the reconstruction error is compared, not the AUC).

A baseline that closes less than :data:`NEAR_CHANCE` (10%) of the gap between chance and a perfect
score (fractions), or whose error is less than that much below the trivial one (errors; 1% for the
reconstruction error, see :data:`NEAR_CHANCE_BY_METRIC`), is *broken*. The
check then looks for causes it can verify cheaply (:func:`check_baseline` lists them) and the run fails
(``baseline.on_broken: fail``, the default) or warns. Nothing here changes the model:
the one forward pass in training mode restores the BatchNormalization statistics it updates.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgesparse.data.dataset import n_samples, take
from edgesparse.data.stream import ANALYSIS_SAMPLES
from edgesparse.errors import TrainError
from edgesparse.task import Head, Task, predicted_classes
from edgesparse.task import segmentation as seg
from edgesparse.train import fit
from edgesparse.train.compile import output_info

log = logging.getLogger(__name__)

#: the share of the way from chance to perfect (fractions), or the relative error reduction below the trivial
#: predictor (errors), under which a baseline counts as broken
NEAR_CHANCE = 0.1
#: per metric where the default does not fit: most of normal frames' variance is noise no bottleneck reconstructs, so
#: an autoencoder 1.5% below the mean sample's error already separates anomalies (measured: the suite's shrunk
#: anomaly recipe, test AUC 0.72 at 0.9926 vs 0.9987; the shipped recipe reaches 0.74 vs 1.00, AUC 0.87)
NEAR_CHANCE_BY_METRIC = {"reconstruction_mse": 0.01}
#: a BatchNormalization layer whose moving statistics still hold more than this share of their initial values
#: (momentum ** steps) has not converged
BN_RESIDUAL = 0.05
#: momenta suggested for ``baseline.bn_momentum``, largest first
_MOMENTA = (0.99, 0.95, 0.9, 0.8)
#: samples of the validation split run once in training mode (batch statistics) to tell BN collapse from overfitting
_TRAINING_MODE_SAMPLES = 256
_LOG_NAMES = {"reconstruction_mse": "mse"}  # the Keras metric logged in history.csv for a guard metric


@dataclass
class Finding:
    """One cause the check verified: a short code and the sentence that explains it."""

    code: str  # untrained nan loss_flat collapse underfit bn_unconverged bn_untrained labels_range constant threshold
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class HealthReport:
    """The dense baseline against chance, on the validation split."""

    metric: str  # the guard metric's key (``accuracy``, ``mae``, ``reconstruction_mse``, ``cls/accuracy``)
    value: float | None  # the baseline's figure
    chance: float | None  # the trivial predictor's figure
    split: str  # validation | test (data without a validation split)
    threshold: float | None  # a healthy baseline is better than this
    broken: bool
    findings: list[Finding] = field(default_factory=list)
    status: str = "ok"  # ok | warn (broken, on_broken warn) | fail (broken, the run stopped)
    fmt_value: str = ""
    fmt_chance: str = ""

    def to_dict(self) -> dict[str, Any]:
        """``baseline.health`` in summary.json."""
        d = asdict(self)
        d.pop("fmt_value"), d.pop("fmt_chance")
        return d

    def message(self, on_broken: str = "fail") -> str:
        """The failure (or warning) text: both figures, the causes found, what to change."""
        metric = self.metric.replace("/", " ")
        head = (f"the dense baseline is at chance before any compression: its {self.split} {metric} is "
                f"{self.fmt_value}, and a model that ignores its input scores {self.fmt_chance} there (chance "
                f"level). Channel pruning, sparsity and quantization can only preserve that, so every later figure "
                "would look like success.")
        if self.findings:
            causes = " ".join(f"({i}) {f.message}" for i, f in enumerate(self.findings, 1))
            body = f" Likely causes found: {causes}"
        else:
            body = (" None of the checked causes holds (inference-mode collapse, an underfit training split, "
                    "unconverged BatchNormalization, a NaN or flat loss, labels out of the output's range, a constant "
                    "prediction): look at the "
                    "learning rate (baseline.optimizer), the number of epochs, and whether inputs and labels match.")
        tail = (" Set baseline.on_broken: warn to compress it anyway." if on_broken == "fail" else
                " (baseline.on_broken: warn, so the run compresses it anyway.)")
        return head + body + tail


def bn_layers(model: Any) -> list[Any]:
    """Every BatchNormalization layer of ``model`` (nested models and wrappers included)."""
    found: list[Any] = []
    seen: set[int] = set()

    def walk(layer: Any) -> None:
        if id(layer) in seen:
            return
        seen.add(id(layer))
        inner = getattr(layer, "layer", None)  # tfmot wrappers
        if inner is not None:
            walk(inner)
        if hasattr(layer, "moving_mean") and hasattr(layer, "momentum"):
            found.append(layer)
        for sub in getattr(layer, "layers", None) or []:
            walk(sub)

    walk(model)
    return found


def set_bn_momentum(model: Any, momentum: float) -> int:
    """Set the momentum of every BatchNormalization layer (``baseline.bn_momentum``).

    Keras reads the attribute when it traces the training step, so this takes effect in the next ``fit``;
    the layers' configs (and the saved model) carry the new value.

    Returns:
        How many layers were changed.
    """
    layers = bn_layers(model)
    for layer in layers:
        layer.momentum = float(momentum)
    return len(layers)


def check_baseline(
    model: Any,
    data: Any,
    *,
    history: list[dict[str, Any]],
    steps: int,
    batch_size: int,
    value: float | None = None,
) -> HealthReport:
    """Compare the dense baseline with chance on the validation split; look for causes when it is broken.

    Causes named when they hold: inference-mode collapse (training metric far above validation in the same
    epoch, and the model scoring well on the validation samples in training mode); BatchNormalization layers
    whose momentum leaves their moving statistics unconverged after ``steps`` (or, untrained, at their
    initial values); a NaN or flat loss (or NaN outputs); labels out of the output's range; a constant
    prediction on the validation split.

    Args:
        model: The dense baseline.
        data: The Dataset, bound to its task.
        history: The baseline phase's history rows (``loss``, ``accuracy``, ``val_accuracy`` ... per epoch).
        steps: Training steps the baseline phase ran (0: not trained here, ``baseline.epochs: 0``).
        batch_size: The recipe's batch size (the training-mode pass uses it, as training did).
        value: The baseline's guard metric on the validation split, if already measured.

    Returns:
        The report (``status`` ok; :func:`enforce` turns a broken one into an error or a warning).
    """
    task: Task = data.task
    key = task.guard_key
    val = data.validation()
    split = "validation" if data.val.n else "test"
    # scored batch by batch over the whole split; only its outputs and targets are kept (inputs: an autoencoder's)
    out, y_val, x_val = fit.collect(model, val, inputs=any(h.kind == "anomaly" for h in task.heads))
    if not val.is_stream:
        x_val = val.x
    scores = task.evaluate(out, y_val, x_val)
    if value is None:
        value = scores.get(key)
    chance = task.evaluate(trivial_outputs(task, data, n_samples(out if not isinstance(out, Mapping) else
                                                                next(iter(out.values())))), y_val, x_val).get(key)
    threshold, broken = _verdict(task, key, value, chance)
    report = HealthReport(metric=key, value=_num(value), chance=_num(chance), split=split,
                          threshold=_num(threshold), broken=broken,
                          fmt_value=task.fmt(value, key), fmt_chance=task.fmt(chance, key))
    if broken:
        if x_val is None:  # a streamed split: the diagnosis reads its first samples, in memory
            x_val, y_val = val.in_memory()
            out = fit.predict(model, x_val)
        report.findings = _diagnose(model, data, task, key, out, x_val, y_val, history, steps, batch_size, chance,
                                    threshold)
    return report


def enforce(report: HealthReport, on_broken: str) -> str | None:
    """Fail or warn on a broken baseline (setting ``report.status``).

    Returns:
        The warning text when the baseline is broken and ``on_broken`` is warn, else None.

    Raises:
        TrainError: the baseline is broken and ``on_broken`` is fail.
    """
    if not report.broken:
        report.status = "ok"
        return None
    if on_broken == "fail":
        report.status = "fail"
        raise TrainError(report.message(on_broken))
    report.status = "warn"
    return report.message(on_broken)


def trivial_outputs(task: Task, data: Any, n: int) -> Any:
    """What a model that ignores its input outputs for ``n`` samples, from the training split alone."""
    anomaly = any(h.kind == "anomaly" for h in task.heads)
    # only an anomaly head needs the inputs: a stream's first samples are otherwise read for their targets alone
    if anomaly or not data.train.is_stream:
        x_train, y_train = data.train.in_memory()
    else:
        x_train, y_train = None, data.train.targets(ANALYSIS_SAMPLES)
    own = getattr(task, "trivial_outputs", None)  # a kind that spans heads (detection) knows its own
    if own is not None:
        return own(y_train, n)
    ys = task.targets_dict(y_train)
    outs: dict[str, np.ndarray] = {}
    for h in task.heads:
        if h.kind == "anomaly":
            x = x_train
            if isinstance(x, Mapping):
                x = x[h.name] if h.name in x else next(iter(x.values()))
            const = np.asarray(x, dtype=np.float64).mean(axis=0)
        elif h.kind == "segmentation":  # every pixel the training maps' majority class
            y = np.asarray(ys[h.name])
            outs[h.name] = seg.trivial_output(y, h.units, h.logits, h.ignore_index, n, tuple(y.shape[1:3]))
            continue
        elif h.kind == "classification":
            y = ys[h.name].reshape(-1).astype(np.int64)
            prior = np.bincount(y[(y >= 0) & (y < h.units)], minlength=h.units).astype(np.float64)
            prior = (prior + 1e-6) / (prior.sum() + 1e-6 * h.units)
            const = np.log(prior) if h.logits else prior
        elif h.kind in ("binary", "multilabel"):
            p = np.clip(np.asarray(ys[h.name], dtype=np.float64).mean(axis=0), 1e-6, 1 - 1e-6)
            const = np.log(p / (1 - p)) if h.logits else p
        else:
            const = np.asarray(ys[h.name], dtype=np.float64).mean(axis=0)
        outs[h.name] = np.broadcast_to(const, (n, *np.shape(const))).copy()
    return outs if task.multi_output else outs[task.heads[0].name]


def _num(v: float | None) -> float | None:
    return None if v is None else float(v)


def _verdict(task: Task, key: str, value: float | None, chance: float | None) -> tuple[float | None, bool]:
    """``(threshold, broken)``: the figure a healthy baseline must beat, and whether this one does not."""
    if value is None or chance is None:
        return None, False
    if not math.isfinite(value):
        return None, True
    higher = task.direction_of(key) == "higher"
    near = NEAR_CHANCE_BY_METRIC.get(key.rsplit("/", 1)[-1], NEAR_CHANCE)
    if task.unit(key) == "points" and higher:
        threshold = chance + near * (1.0 - chance)
    elif chance == 0:
        return None, False  # a trivial predictor that is perfect: nothing to beat
    else:
        threshold = chance * (1.0 + near) if higher else chance * (1.0 - near)
        if chance < 0:
            threshold = chance * (1.0 - near) if higher else chance * (1.0 + near)
    broken = value <= threshold if higher else value >= threshold
    return threshold, bool(broken)


# ------------------------------------------------------------------------------------------------ diagnoses


def _diagnose(model: Any, data: Any, task: Task, key: str, out: Any, x_val: Any, y_val: Any,
              history: list[dict[str, Any]], steps: int, batch_size: int, chance: float | None,
              threshold: float | None) -> list[Finding]:
    findings: list[Finding] = []
    if steps <= 0:
        findings.append(Finding("untrained", "baseline.epochs is 0, so the model is compressed as it came: if its "
                                "weights are not trained (a fresh factory, weights=None, a new file) it can only score "
                                "chance. Train it (baseline.epochs) or load trained weights.", {}))
    for check in (_nan, _loss_flat):
        found = check(task, out, history)
        if found is not None:
            findings.append(found)
    collapse = _collapse(model, task, key, x_val, y_val, history, batch_size, threshold, steps)
    if collapse is not None:
        findings.append(collapse)
    else:
        underfit = _underfit(task, key, history, chance, steps)
        if underfit is not None:
            findings.append(underfit)
    bn = _bn_unconverged(model, steps, data.steps_per_epoch(batch_size))
    if bn is not None:
        findings.append(bn)
    findings += _labels_out_of_range(model, task, data)
    constant = _constant(task, out, x_val, y_val, data.class_names)
    if constant is not None:
        findings.append(constant)
    threshold_finding = _ranks_but_misses_threshold(task, key, out, x_val, y_val)
    if threshold_finding is not None:
        findings.append(threshold_finding)
    return findings


def _ranks_but_misses_threshold(task: Task, key: str, out: Any, x_val: Any, y_val: Any) -> Finding | None:
    """Binary/multilabel accuracy at chance while the AUC is far above 0.5: the outputs rank, the threshold misses."""
    h = task.head
    if h.kind not in ("binary", "multilabel") or key.rsplit("/", 1)[-1] != "accuracy":
        return None
    auc_key = key.rsplit("/", 1)[0] + "/auc" if task.multi_output else "auc"
    auc = task.evaluate(out, y_val, x_val).get(auc_key)
    if auc is None or auc < 0.7:
        return None
    p = np.asarray(task.outputs_dict(out)[h.name], dtype=np.float64)
    p = 1.0 / (1.0 + np.exp(-np.clip(p, -60, 60))) if h.logits else p
    return Finding("threshold", f"its validation AUC is {auc:.1%}, so the outputs do rank the samples, but every "
                   f"probability lies in {p.min():.3f}..{p.max():.3f} and task.threshold {h.threshold:g} does not "
                   "separate them: the model is not yet calibrated. Train longer (baseline.epochs) or at a higher "
                   "learning rate, or set task.threshold inside that range (task.metric: auc guards the ranking "
                   "instead).",
                   {"auc": auc, "min": float(p.min()), "max": float(p.max())})


def _floats(rows: list[dict[str, Any]], col: str) -> list[float]:
    """A history column as floats (rows read back from history.csv hold strings; blanks are skipped)."""
    values = []
    for r in rows:
        v = r.get(col)
        if v is None or v == "":
            continue
        try:
            values.append(float(v))
        except (TypeError, ValueError):
            continue
    return values


def _nan(task: Task, out: Any, history: list[dict[str, Any]]) -> Finding | None:
    losses = _floats(history, "loss")
    bad_loss = [i + 1 for i, v in enumerate(losses) if not math.isfinite(v)]
    outs = task.outputs_dict(out)
    n = len(next(iter(outs.values())))
    bad = np.zeros(n, dtype=bool)
    for o in outs.values():
        bad |= ~np.isfinite(np.asarray(o, dtype=np.float64).reshape(n, -1)).all(axis=1)
    if not bad_loss and not bad.any():
        return None
    parts = []
    if bad_loss:
        parts.append(f"the training loss was NaN/inf in baseline epoch {bad_loss[0]}")
    if bad.any():
        parts.append(f"the model outputs NaN/inf for {bad.mean():.0%} of the validation samples")
    return Finding("nan", " and ".join(parts) + ": training diverged or the weights hold NaN. Lower "
                   "baseline.optimizer.learning_rate, check the inputs for NaN/inf, or re-create the model file.",
                   {"nan_epochs": bad_loss, "nan_outputs": float(bad.mean())})


def _loss_flat(task: Task, out: Any, history: list[dict[str, Any]]) -> Finding | None:
    losses = [v for v in _floats(history, "loss") if math.isfinite(v)]
    if len(losses) < 2 or losses[-1] < 0.98 * losses[0]:
        return None
    return Finding("loss_flat", f"the training loss did not fall ({losses[0]:.4g} in the first baseline epoch, "
                   f"{losses[-1]:.4g} in the last of {len(losses)}): the model did not learn. Try another "
                   "baseline.optimizer.learning_rate (too high oscillates, too low stalls), more epochs, or check "
                   "that the labels belong to the inputs.", {"first": losses[0], "last": losses[-1]})


def _log_name(task: Task, key: str) -> str:
    """The history.csv column of a guard metric (Keras names several outputs' metrics ``<output>_<metric>``)."""
    head, _, base = key.rpartition("/")
    name = _LOG_NAMES.get(base, base)
    return f"{head}_{name}" if head else name


def _collapse(model: Any, task: Task, key: str, x_val: Any, y_val: Any, history: list[dict[str, Any]],
              batch_size: int, threshold: float | None, steps: int) -> Finding | None:
    """Training metric far above validation in the same epoch; confirmed by a training-mode pass when it can be."""
    col = _log_name(task, key)
    higher = task.direction_of(key) == "higher"
    fraction = task.unit(key) == "points"
    best: tuple[int, float, float] | None = None
    for i, r in enumerate(history):
        trs, vas = _floats([r], col), _floats([r], "val_" + col)
        if not trs or not vas or not (math.isfinite(trs[0]) and math.isfinite(vas[0])):
            continue
        t, v = trs[0], vas[0]
        far = (t - v >= 0.2) if fraction and higher else (v >= 2 * t if not higher else t >= 2 * v)
        healthy = threshold is None or (t > threshold if higher else t < threshold)
        if far and healthy:
            best = (i + 1, t, v)
    if best is None:
        return None
    epoch, tr, va = best
    metric = key.replace("/", " ")
    text = (f"inference-mode collapse: in baseline epoch {epoch} the training {metric} was {task.fmt(tr, key)} "
            f"but the validation {metric} {task.fmt(va, key)}; the model learns in training mode and fails in "
            "inference mode.")
    details: dict[str, Any] = {"epoch": epoch, "train": tr, "validation": va}
    trained = _training_mode_score(model, task, key, x_val, y_val, batch_size)
    if trained is not None and math.isfinite(trained):
        details["validation_training_mode"] = trained
        good = threshold is None or (trained > threshold if higher else trained < threshold)
        if good and bn_layers(model):
            text += (f" Run in training mode (BatchNormalization on batch statistics), the same validation samples "
                     f"score {task.fmt(trained, key)} instead of {task.fmt(va, key)}: what fails at inference is the "
                     "BatchNormalization moving statistics, not the weights.")
            if not _unconverged(model, steps):
                momentum = max(float(layer.momentum) for layer in bn_layers(model))
                text += (f" They have left their initial values (momentum {momentum:g} over {steps:,} steps) but "
                         "trail weights that still changed fast at the end of training: a lower "
                         "baseline.bn_momentum (0.9), or more epochs with a decaying learning rate "
                         "(baseline.optimizer.schedule: cosine), let them catch up.")
        elif not good:
            text += (f" In training mode the validation samples score {task.fmt(trained, key)} too, so this is "
                     "overfitting (the training split memorised), not a BatchNormalization problem: more data, "
                     "augmentation, dropout or weight decay.")
    return Finding("collapse", text, details)


def _underfit(task: Task, key: str, history: list[dict[str, Any]], chance: float | None,
              steps: int) -> Finding | None:
    """The last epoch's training metric is far from good too: the model has not learned the training split."""
    if chance is None or not history:
        return None
    trs = _floats(history[-1:], _log_name(task, key))
    if not trs or not math.isfinite(trs[0]):
        return None
    t = trs[0]
    higher = task.direction_of(key) == "higher"
    if task.unit(key) == "points" and higher:
        weak = t < chance + 0.5 * (1.0 - chance)
    elif chance > 0:
        weak = t > 0.5 * chance if not higher else t < 1.5 * chance
    else:
        return None
    if not weak:
        return None
    metric = key.replace("/", " ")
    return Finding("underfit", f"the training {metric} reached only {task.fmt(t, key)} in the last baseline epoch "
                   f"(chance {task.fmt(chance, key)}): the model has not learned the training split either. Train "
                   f"longer (baseline.epochs; {steps:,} steps so far) or try another baseline.optimizer.learning_rate.",
                   {"train": t})


def _training_mode_score(model: Any, task: Task, key: str, x_val: Any, y_val: Any, batch_size: int) -> float | None:
    """The guard metric on a few validation samples with ``training=True``; BN statistics restored afterwards."""
    n = min(_TRAINING_MODE_SAMPLES, n_samples(x_val))
    if n < 2:
        return None
    bns = bn_layers(model)
    saved = [layer.get_weights() for layer in bns]
    chunks: list[Any] = []
    try:
        for start in range(0, n, max(2, batch_size)):
            xb = take(x_val, slice(start, min(n, start + max(2, batch_size))))
            res = model(xb, training=True)
            if isinstance(res, Mapping):
                chunks.append({k: np.asarray(v) for k, v in res.items()})
            elif isinstance(res, (list, tuple)):
                names = list(getattr(model, "output_names", None) or [h.name for h in task.heads])
                chunks.append({nm: np.asarray(v) for nm, v in zip(names, res)})
            else:
                chunks.append(np.asarray(res))
    except Exception as exc:  # a model that cannot run eagerly in training mode: skip the confirmation
        log.debug("health: training-mode pass failed: %s", exc)
        return None
    finally:
        for layer, w in zip(bns, saved):
            layer.set_weights(w)
    if isinstance(chunks[0], dict):
        out: Any = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    else:
        out = np.concatenate(chunks)
    x_n, y_n = take(x_val, slice(0, n)), take(y_val, slice(0, n))
    return task.evaluate(out, y_n, x_n).get(key)


def _unconverged(model: Any, steps: int) -> list[tuple[str, float]]:
    """``(name, momentum)`` of the BN layers whose moving statistics keep more than :data:`BN_RESIDUAL` of init."""
    return [(layer.name, float(layer.momentum)) for layer in bn_layers(model)
            if steps > 0 and float(layer.momentum) ** steps > BN_RESIDUAL]


def _bn_unconverged(model: Any, steps: int, steps_per_epoch: int) -> Finding | None:
    """BN layers whose moving statistics keep more than :data:`BN_RESIDUAL` of their initial values."""
    layers = bn_layers(model)
    if not layers:
        return None
    if steps <= 0:  # not trained here: moving statistics still exactly at their initial values say "never trained"
        untouched = [layer.name for layer in layers if _at_init(layer)]
        if not untouched:
            return None
        return Finding("bn_untrained", f"{len(untouched)} of {len(layers)} BatchNormalization layers "
                       f"({_names(untouched)}) hold their initial moving statistics (mean 0, variance 1): the "
                       "model was never trained (weights=None?), yet baseline.epochs is 0. Train the baseline "
                       "(baseline.epochs) or load trained weights.", {"layers": untouched})
    stuck = _unconverged(model, steps)
    if not stuck:
        return None
    momentum = max(m for _, m in stuck)
    residual = momentum ** steps
    need = math.ceil(math.log(BN_RESIDUAL) / math.log(momentum))
    # converged within the last half of training, so the statistics also follow weights that still change
    fits = [m for m in _MOMENTA if m < momentum and m ** (steps / 2) <= BN_RESIDUAL]
    left = fits[0] ** steps if fits else 1.0
    fix = (f"set baseline.bn_momentum: {fits[0]:g} ({fits[0]:g}^{steps} = {left:.1%})".replace("= 0.0%", "< 0.1%")
           if fits
           else "set a lower baseline.bn_momentum")
    epochs = math.ceil(need / max(1, steps_per_epoch))
    return Finding("bn_unconverged", (
        f"{len(stuck)} of {len(layers)} BatchNormalization layers ({_names([n for n, _ in stuck])}) have momentum "
        f"{momentum:g}: after {steps:,} training steps their moving statistics still hold {momentum:g}^{steps} = "
        f"{residual:.0%} of their initial values (mean 0, variance 1), so inference normalises with the wrong "
        f"statistics. Fix: {fix}, or train at least {need:,} steps (baseline.epochs: {epochs:,} at "
        f"{steps_per_epoch} steps per epoch)."),
        {"layers": [n for n, _ in stuck], "momentum": momentum, "steps": steps, "residual": residual,
         "steps_needed": need, "suggested_momentum": fits[0] if fits else None})


def _at_init(layer: Any) -> bool:
    mean = np.asarray(layer.moving_mean)
    var = np.asarray(layer.moving_variance)
    return bool(np.all(mean == 0) and np.all(var == 1))


def _names(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


_RANGES = {"sigmoid": (0.0, 1.0), "softmax": (0.0, 1.0), "tanh": (-1.0, 1.0), "relu": (0.0, math.inf),
           "relu6": (0.0, 6.0)}


def _labels_out_of_range(model: Any, task: Task, data: Any) -> list[Finding]:
    found: list[Finding] = []
    x_train, y_train = data.train.in_memory()
    ys = task.targets_dict(y_train)
    acts = {o.name: o.activation for o in output_info(model)}
    for h in task.heads:
        if h.kind in ("detection", "boxes", "segmentation"):  # class ids per anchor/pixel: checked when bound
            continue
        y = np.asarray(ys[h.name])
        if h.kind == "anomaly":
            x = x_train
            y = np.asarray(next(iter(x.values())) if isinstance(x, Mapping) else x)
        if not len(y) or y.dtype.kind not in "biuf":
            continue
        where = f"output '{h.name}'" if task.multi_output else "the output"
        if h.kind == "classification":
            bad = (y < 0) | (y >= h.units)
            if bad.any():
                found.append(Finding("labels_range", f"{bad.mean():.1%} of the training labels of {where} lie outside "
                                     f"0..{h.units - 1} (the model has {h.units} outputs; labels seen "
                                     f"{int(y.min())}..{int(y.max())}): give the model one output per class, or "
                                     "relabel from 0.", {"head": h.name, "min": float(y.min()), "max": float(y.max())}))
            continue
        if h.kind in ("binary", "multilabel"):
            bad = ~np.isin(y, (0, 1))
            if bad.any():
                found.append(Finding("labels_range", f"{bad.mean():.1%} of the training labels of {where} are not 0 "
                                     f"or 1 (seen {float(y.min()):g}..{float(y.max()):g}): store 0/1 labels.",
                                     {"head": h.name}))
            continue
        act = acts.get(h.name, "linear")
        lo, hi = _RANGES.get(act, (-math.inf, math.inf))
        ymin, ymax = float(np.nanmin(y)), float(np.nanmax(y))
        if ymin < lo or ymax > hi:
            what = "inputs it reconstructs" if h.kind == "anomaly" else "targets"
            found.append(Finding("labels_range", f"the {what} of {where} range {ymin:.3g}..{ymax:.3g}, but it ends "
                                 f"in {act} ({lo:g}..{hi:g}), so they cannot be reached: use a linear output, or "
                                 f"scale the {what} into {lo:g}..{hi:g}.", {"head": h.name, "activation": act}))
    return found


def _constant(task: Task, out: Any, x_val: Any, y_val: Any, class_names: list[str]) -> Finding | None:
    h: Head = task.head
    o = np.asarray(task.outputs_dict(out)[h.name], dtype=np.float64)
    if len(o) < 2 or not np.isfinite(o).all():
        return None
    if h.kind == "classification":
        pred = predicted_classes(h, o).reshape(-1)
        top = int(np.bincount(pred).argmax())
        share = float(np.mean(pred == top))
        y = np.asarray(task.targets_dict(y_val)[h.name]).reshape(-1).astype(np.int64)
        true_share = float(np.mean(y == top)) if len(y) else 0.0
        if share < 0.99 or true_share >= 0.99:
            return None
        name = f"'{class_names[top]}' (class {top})" if top < len(class_names) else f"class {top}"
        return Finding("constant", f"the model predicts {name} for {share:.0%} of the {len(pred)} validation samples "
                       f"(which hold {true_share:.0%} of it).", {"class": top, "share": share})
    if h.kind in ("binary", "multilabel"):
        units = predicted_classes(h, o).reshape(len(o), -1)
        if not np.all(units == units[0]):
            return None
        return Finding("constant", f"the model gives every validation sample the same {h.kind} prediction "
                       f"({units[0].tolist() if units.shape[1] > 1 else int(units[0, 0])}).", {})
    spread = float(o.reshape(len(o), -1).std(axis=0).mean())
    if h.kind == "anomaly":
        ref = x_val[h.name] if isinstance(x_val, Mapping) and h.name in x_val else x_val
        if isinstance(ref, Mapping):
            ref = next(iter(ref.values()))
    else:
        ref = task.targets_dict(y_val)[h.name]
    target_cols = np.asarray(ref, dtype=np.float64).reshape(len(o), -1).std(axis=0)
    target_spread = float(target_cols.mean())
    if h.kind == "regression" and target_cols.size > 1:  # one output column can collapse while the others learn
        cols = o.reshape(len(o), -1).std(axis=0)
        flat = [int(j) for j in np.flatnonzero((target_cols > 0) & (cols <= 0.01 * target_cols))]
        if flat and len(flat) < cols.size:
            return Finding("constant", f"output column{'s' if len(flat) > 1 else ''} {', '.join(map(str, flat))} of "
                           f"'{h.name}' ({cols.size} columns) barely var{'y' if len(flat) > 1 else 'ies'} across the "
                           f"validation samples (std {', '.join(f'{cols[j]:.3g}' for j in flat)}; the targets' "
                           f"{', '.join(f'{target_cols[j]:.3g}' for j in flat)}): the model predicts about the same "
                           "value for every input there.", {"columns": flat, "std": [float(cols[j]) for j in flat]})
    if target_spread == 0 or spread > 0.01 * target_spread:
        return None
    return Finding("constant", f"the model's outputs barely vary across the validation samples (std {spread:.3g}, "
                   f"the {'inputs' if h.kind == 'anomaly' else 'targets'}' {target_spread:.3g}): it predicts about "
                   "the same value for every input.", {"std": spread, "target_std": target_spread})


def tflite_figures(dense_verification: dict[str, Any], split: str = "test") -> dict[str, Any]:
    """The dense float32 .tflite against the Keras baseline, for ``baseline.health.tflite`` (test split, at export)
    and ``baseline.health.tflite_validation`` (validation split, checked before any compression)."""
    dv = dense_verification
    return {"split": split, "metric_name": dv.get("metric_name"), "metric": dv.get("metric"),
            "keras_metric": dv.get("keras_metric"),
            "drop": dv.get("drop"), "unit": dv.get("unit"), "agreement": dv.get("agreement"),
            "max_abs_diff": dv.get("max_abs_diff")}


__all__ = ["BN_RESIDUAL", "NEAR_CHANCE", "NEAR_CHANCE_BY_METRIC", "Finding", "HealthReport", "bn_layers",
           "check_baseline", "dead_relu_layers", "diagnose_compressed", "enforce", "set_bn_momentum",
           "tflite_figures", "trivial_outputs"]


# ------------------------------------------------------------------------------- after a compression phase


def diagnose_compressed(model: Any, data: Any, phase_rows: list[dict[str, Any]]) -> list[Finding]:
    """Why a compressed model failed its guard, when it collapsed rather than recovering too slowly.

    Checked on the first validation samples (at most ``ANALYSIS_SAMPLES``): the model scores at the level of a
    predictor that ignores its input, or its outputs are constant; whole ReLU layers whose units output zero
    for every sample (dead units); and, from the phase's history rows, the epoch it was best and the one it broke.

    Args:
        model: The compressed Keras model (stripped or wrapped).
        data: The Dataset, bound to its task.
        phase_rows: The phase's history.csv rows (``epoch``, ``sparsity``, ``val_<metric>``, ``lr``).

    Returns:
        The findings, empty when nothing points to a collapse (then more epochs or a milder target is the fix).
    """
    task: Task = data.task
    key = task.guard_key
    val = data.validation()
    x_val, y_val = val.in_memory()
    x_val, y_val = take(x_val, slice(0, ANALYSIS_SAMPLES)), take(y_val, slice(0, ANALYSIS_SAMPLES))
    out = fit.predict(model, x_val)
    findings: list[Finding] = []
    value = task.evaluate(out, y_val, x_val).get(key)
    chance = task.evaluate(trivial_outputs(task, data, n_samples(out if not isinstance(out, Mapping) else
                                                                next(iter(out.values())))), y_val, x_val).get(key)
    _, at_chance = _verdict(task, key, value, chance)
    constant = _constant(task, out, x_val, y_val, data.class_names)
    if constant is not None:
        findings.append(constant)
    elif at_chance:
        findings.append(Finding("chance", f"it scores {task.fmt(value, key)}, about what a model that ignores its "
                                f"input scores ({task.fmt(chance, key)}).", {"value": value, "chance": chance}))
    try:
        dead = dead_relu_layers(model, x_val)
    except Exception as exc:  # a diagnosis must not hide the guard's own message  # noqa: BLE001
        log.debug("dead-unit check skipped: %s", exc)
        dead = []
    if dead:
        findings.append(Finding("dead_units", "ReLU layers whose units output 0 for every validation sample: "
                                + ", ".join(f"{n} ({d:.0%} of {u})" for n, d, u in dead)
                                + ". Gradients no longer reach them, so more epochs cannot revive them.",
                                {"layers": [{"layer": n, "dead": d, "units": u} for n, d, u in dead]}))
    broke = _broke_at(task, key, phase_rows)
    if broke is not None and findings:
        findings.append(broke)
    return findings


def dead_relu_layers(model: Any, x: Any, threshold: float = 0.9) -> list[tuple[str, float, int]]:
    """Top-level layers with a ReLU activation whose units (last axis) are zero on every sample of ``x``.

    Returns:
        ``(layer name, dead share, units)`` of each layer where at least ``threshold`` of the units are dead.
    """
    from edgesparse import _tf

    keras = _tf.keras()
    picked = []
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)  # tfmot's wrappers hold the layer
        act = getattr(inner, "activation", None)
        name = getattr(act, "__name__", "") if act is not None else ""
        if name == "relu" or type(inner).__name__ == "ReLU":
            picked.append(layer)
    pairs = [(layer, t) for layer in picked if (t := _output_in(keras, model, layer)) is not None]
    if not pairs:
        return []
    outs = keras.Model(model.inputs, [t for _, t in pairs]).predict(x, batch_size=256, verbose=0)
    outs = outs if isinstance(outs, list) else [outs]
    found = []
    for (layer, _), o in zip(pairs, outs, strict=True):
        a = np.asarray(o).reshape(-1, np.shape(o)[-1])
        share = float(np.mean(np.all(a <= 0, axis=0)))
        if share >= threshold:
            found.append((getattr(layer, "layer", layer).name, share, int(a.shape[1])))
    return found


def _output_in(keras: Any, model: Any, layer: Any) -> Any:
    """The layer's output tensor in ``model``'s graph (a layer used in several models has one node per call)."""
    for i in range(len(getattr(layer, "_inbound_nodes", [])) - 1, -1, -1):
        try:
            t = layer.get_output_at(i)
            keras.Model(model.inputs, t)
        except (ValueError, TypeError, AttributeError):
            continue
        return t
    return None


def _broke_at(task: Task, key: str, rows: list[dict[str, Any]]) -> Finding | None:
    """The phase's best validation epoch and the later epoch from which it stayed far worse (from history rows)."""
    col = "val_" + _log_name(task, key)
    points = [(r, v[0]) for r in rows if (v := _floats([r], col)) and math.isfinite(v[0])]
    if len(points) < 2:
        return None
    higher = task.direction_of(key) == "higher"
    best_i = max(range(len(points)), key=lambda i: points[i][1] if higher else -points[i][1])
    best_row, best = points[best_i]
    final = points[-1][1]
    if best_i == len(points) - 1 or task.degradation(best, final, key) <= 0:
        return None
    mid = (best + final) / 2  # the first epoch after the best one past halfway to the final figure
    broke_row = next(r for r, v in points[best_i + 1:] if (v <= mid if higher else v >= mid))

    def at(r: dict[str, Any]) -> str:
        sp = _floats([r], "sparsity")
        lr = _floats([r], "lr")
        return (f"epoch {r.get('epoch')}" + (f", sparsity {sp[0]:.0%}" if sp and math.isfinite(sp[0]) else "")
                + (f", learning rate {lr[0]:.3g}" if lr and math.isfinite(lr[0]) else ""))

    metric = key.replace("/", " ")
    return Finding("broke", f"its validation {metric} was best at {task.fmt(best, key)} ({at(best_row)}) and broke "
                   f"at {at(broke_row)}, ending at {task.fmt(final, key)}.",
                   {"best_epoch": best_row.get("epoch"), "broke_epoch": broke_row.get("epoch")})
