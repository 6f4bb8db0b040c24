"""The task layer: what a model's outputs mean, how they are scored, compared and trained.

Every stage reads a :class:`Task` instead of assuming a softmax classifier: ``train`` compiles with
its loss and metrics, the guards compare its primary metric in its direction, export verification
compares TFLite with Keras outputs the way the kind requires, distillation picks its term, and the
summary names the metric. This module imports no stage (numpy and pydantic at module level; Keras
only inside :meth:`Task.keras_loss` / :meth:`Task.keras_metrics`, through ``_tf``).

Kinds (one per model output, a *head*):

* ``classification``: integer class labels (one-hot rows are turned into indices when the data is
  read); softmax probabilities or logits; metric ``accuracy`` (top-1).
* ``binary``: one sigmoid (or logit) unit and 0/1 labels; ``threshold`` on the probability; metrics
  ``accuracy`` and ``auc``.
* ``multilabel``: K sigmoid (or logit) units and multi-hot labels; ``accuracy`` is the mean per-label
  accuracy, ``auc`` the mean per-label ROC AUC.
* ``regression``: float targets of any shape; loss ``mse``; metric ``mae`` (lower is better).
* ``anomaly``: an autoencoder that reconstructs its input, trained on normal samples only; a sample's
  score is its mean squared reconstruction error; the metric is the ROC AUC of that score on a
  labelled test split (0 normal, 1 anomalous), with the partial AUC at FPR <= 0.1 (``pauc``, as
  MLPerf Tiny's anomaly-detection benchmark reports it). Splits without both labels (training and
  validation hold normal samples only) are scored by ``reconstruction_mse`` (lower is better), which
  is what the guards compare for this kind.

Custom: ``loss: "pkg.module:function"`` (a Keras loss ``f(y_true, y_pred)``) and ``metric:
"pkg.module:function"`` (numpy ``f(y_true, y_pred) -> float``) with ``direction``.

Metric units: *fractions* (accuracy, auc, pauc) degrade in points (``100 * (ref - new)`` for
higher-is-better); *values* (mae, mse, rmse, reconstruction_mse, custom) degrade as a relative
increase in percent (``100 * (new - ref) / |ref|`` for lower-is-better).
"""

from __future__ import annotations

import difflib
import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgesparse.errors import DataError, RecipeError
from edgesparse.task import segmentation as _seg

KINDS = ("classification", "binary", "multilabel", "regression", "anomaly", "detection", "segmentation")
Kind = Literal["classification", "binary", "multilabel", "regression", "anomaly", "detection",
               "segmentation"]
Direction = Literal["higher", "lower"]

#: metric name -> (direction, unit); ``fraction`` metrics are in [0, 1] and degrade in points.
METRICS: dict[str, tuple[Direction, str]] = {
    "accuracy": ("higher", "fraction"),
    "auc": ("higher", "fraction"),
    "pauc": ("higher", "fraction"),
    "mae": ("lower", "value"),
    "mse": ("lower", "value"),
    "rmse": ("lower", "value"),
    "reconstruction_mse": ("lower", "value"),
    # segmentation (task/segmentation.py): mean IoU over classes, pixel accuracy; iou_<c> per class
    "miou": ("higher", "fraction"),
    "pixel_accuracy": ("higher", "fraction"),
    # detection (task/detection.py): mAP@0.5 after NMS; recall and box error on positive anchors only
    "map50": ("higher", "fraction"),
    "recall": ("higher", "fraction"),
    "box_error": ("lower", "value"),
}
#: the metrics each kind can compute (a custom ``pkg.module:function`` metric is allowed for every kind)
KIND_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy",),
    "binary": ("accuracy", "auc"),
    "multilabel": ("accuracy", "auc"),
    "regression": ("mae", "mse", "rmse"),
    "anomaly": ("auc", "pauc", "reconstruction_mse"),
    "detection": ("map50", "recall", "box_error"),
}
_DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy",),
    "binary": ("accuracy", "auc"),
    "multilabel": ("accuracy", "auc"),
    "regression": ("mae", "mse"),
    "anomaly": ("auc", "pauc", "reconstruction_mse"),
}
#: a guard's default allowance by unit: 2 points of a fraction, a 10% relative increase of an error
DEFAULT_MAX_DROP = {"points": 2.0, "%": 10.0}
#: prefixes tfmot's wrappers give layer (and so output) names: QAT's remain in the converted model's signature
WRAPPER_PREFIXES = ("quant_", "prune_low_magnitude_")


def unwrapped_name(name: str, wanted: list[str] | tuple[str, ...]) -> str:
    """``name`` as one of ``wanted``: itself, or without a tfmot wrapper's prefix (``quant_cls`` -> ``cls``)."""
    base = name
    for prefix in WRAPPER_PREFIXES:
        if base not in wanted and base.startswith(prefix):
            base = base[len(prefix):]
    return base


_DEFAULT_LOSS = {"classification": "sparse_categorical_crossentropy", "binary": "binary_crossentropy",
                 "multilabel": "binary_crossentropy", "regression": "mse", "anomaly": "mse"}
KIND_METRICS["segmentation"] = _DEFAULT_METRICS["segmentation"] = _seg.METRICS
_DEFAULT_LOSS["segmentation"] = "sparse_categorical_crossentropy"  # per pixel; binary for one sigmoid channel


# --------------------------------------------------------------------------------------------
# the recipe's `task:` section


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _is_path(text: str) -> bool:
    return ":" in text and all(part for part in text.split(":", 1))


class HeadConfig(_Section):
    """One output's task: ``{kind: regression, loss: huber, metric: mae, weight: 10.0}``."""

    kind: Kind | Literal["auto"] = "auto"
    loss: str | None = Field(None, description="a Keras loss name (mse, huber, binary_crossentropy ...) or "
                             "'pkg.module:function'; default: the kind's")
    metric: str | None = Field(None, description="the primary metric (guarded, verified, reported, swept): one of "
                               "accuracy, auc, pauc, mae, mse, rmse, reconstruction_mse, or 'pkg.module:function'")
    metrics: list[str] | None = Field(None, description="metrics also reported; default: the kind's")
    direction: Direction | None = Field(None, description="higher or lower is better; needed for a custom metric")
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="binary/multilabel: probability threshold")
    weight: float = Field(1.0, gt=0.0, description="loss weight of this output (several outputs)")
    ignore_index: int | None = Field(None, description="segmentation: the class id of unlabelled pixels (e.g. 255), "
                                     "counted in no metric and no loss")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str | None) -> str | None:
        if v is None or v in METRICS or _is_path(v):
            return v
        close = difflib.get_close_matches(v, list(METRICS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"unknown metric '{v}'{hint}; use one of {', '.join(METRICS)} or 'pkg.module:function'")

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, v: list[str] | None) -> list[str] | None:
        for m in v or []:
            cls._known_metric(m)
        return v

    @model_validator(mode="after")
    def _check(self) -> HeadConfig:
        if self.metric is not None and _is_path(self.metric) and self.direction is None:
            raise ValueError(f"the custom metric '{self.metric}' needs `direction: higher` or `direction: lower`")
        if self.kind not in ("auto", None) and self.metric in METRICS and self.metric not in KIND_METRICS[self.kind]:
            raise ValueError(f"metric '{self.metric}' does not apply to kind {self.kind}; use one of "
                             f"{', '.join(KIND_METRICS[self.kind])}")
        return self


class TaskConfig(HeadConfig):
    """The ``task:`` section: one head's fields, or ``outputs`` keyed by the model's output names."""

    outputs: dict[str, HeadConfig] | None = Field(None, description="per model output (several outputs)")
    primary: str | None = Field(None, description="the output whose metric the guards use; default: the first")
    # kind detection (task/detection.py): an anchor-based detector's two outputs and how its boxes are decoded
    scores: str | None = Field(None, description="detection: the class-score output, (anchors, classes + 1) softmax "
                               "with column 0 the background, or (anchors, classes) sigmoid")
    boxes: str | None = Field(None, description="detection: the box output, (anchors, 4) offsets encoded against the "
                              "data's anchors")
    variances: tuple[float, float, float, float] = Field(
        (0.1, 0.1, 0.2, 0.2), description="detection: the box encoding's variances (ty, tx, th, tw), SSD's default")
    score_threshold: float = Field(0.05, ge=0.0, lt=1.0, description="detection: scores below are no detections")
    iou_threshold: float = Field(0.5, gt=0.0, le=1.0, description="detection: per-class NMS IoU threshold")
    max_detections: int = Field(20, ge=1, le=1000, description="detection: detections kept per image")
    negative_ratio: float = Field(3.0, gt=0.0, description="detection: hard negatives trained per positive anchor")

    @model_validator(mode="after")
    def _detection(self) -> TaskConfig:
        if self.kind == "detection" and (self.scores is None or self.boxes is None):
            raise ValueError("task detection needs `scores` and `boxes` naming the model's two outputs, e.g. "
                             "{kind: detection, scores: cls, boxes: box}")
        if self.kind != "detection" and (self.scores is not None or self.boxes is not None):
            raise ValueError("`scores` and `boxes` belong to `kind: detection`")
        if any(h.kind == "detection" for h in (self.outputs or {}).values()):
            raise ValueError("detection spans two outputs: give it at the top, {kind: detection, scores: <output>, "
                             "boxes: <output>}, not per output")
        return self

    @model_validator(mode="after")
    def _outputs(self) -> TaskConfig:
        if self.primary is not None and not self.outputs:
            raise ValueError("`primary` names an output, so it needs `outputs:`")
        if self.outputs and self.primary is not None and self.primary not in self.outputs:
            raise ValueError(f"primary '{self.primary}' is not one of outputs ({', '.join(self.outputs)})")
        if self.outputs and self.kind != "auto":
            raise ValueError("give either `kind` (one output) or `outputs` (per output), not both")
        return self


def _task_before(value: Any) -> Any:
    """``task: regression`` (a kind alone) or ``task: auto`` become a mapping."""
    if isinstance(value, str):
        if value == "auto" or value in KINDS:
            return {"kind": value}
        close = difflib.get_close_matches(value, [*KINDS, "auto"], n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(f"unknown task '{value}'{hint}; use auto or one of {', '.join(KINDS)}, or a mapping "
                         "{kind: ..., loss: ..., metric: ...}")
    return value


task_before = _task_before


# --------------------------------------------------------------------------------------------
# the resolved task


@dataclass(frozen=True)
class Head:
    """One resolved model output."""

    name: str
    kind: str
    loss: str
    metric: str
    metrics: tuple[str, ...]
    direction: str
    threshold: float = 0.5
    weight: float = 1.0
    logits: bool = False  # outputs are logits (no softmax/sigmoid at the end)
    units: int = 1  # size of the output's last axis
    ignore_index: int | None = None  # segmentation: unlabelled pixels

    @property
    def classes(self) -> bool:
        """Whether the head predicts classes (agreement is meaningful)."""
        return self.kind in ("classification", "binary", "multilabel", "segmentation")


@dataclass
class Task:
    """Every head of a model, which is primary, and why it was inferred so."""

    heads: tuple[Head, ...]
    primary: str
    reason: str = ""
    input_names: tuple[str, ...] = ()
    warnings: list[str] = field(default_factory=list)

    # ---- identity --------------------------------------------------------------------------
    @property
    def head(self) -> Head:
        """The primary head."""
        return next(h for h in self.heads if h.name == self.primary)

    @property
    def kind(self) -> str:
        """The primary head's kind."""
        return self.head.kind

    @property
    def multi_output(self) -> bool:
        return len(self.heads) > 1

    @property
    def metric_key(self) -> str:
        """Key of the primary metric in :meth:`evaluate`'s result (``cls/accuracy`` for several outputs)."""
        return self._key(self.head, self.head.metric)

    @property
    def metric_name(self) -> str:
        """The primary metric as people read it: ``accuracy``, ``mae``, ``cls accuracy``."""
        return self.metric_key.replace("/", " ")

    @property
    def direction(self) -> str:
        return self.head.direction

    @property
    def guard_key(self) -> str:
        """The metric the guards compare on the validation split (anomaly: the reconstruction error)."""
        if self.kind == "anomaly":
            return self._key(self.head, "reconstruction_mse")
        return self.metric_key

    def _key(self, head: Head, metric: str) -> str:
        name = metric if not _is_path(metric) else metric.rsplit(":", 1)[1]
        return f"{head.name}/{name}" if self.multi_output else name

    @staticmethod
    def unit(metric_key: str) -> str:
        """``points`` for fraction metrics, ``%`` (relative) for value metrics."""
        base = metric_key.rsplit("/", 1)[-1]
        if _seg.is_class_iou(base):
            return "points"
        found = METRICS.get(base)
        return "points" if found is not None and found[1] == "fraction" else "%"

    def max_drop(self, setting: float | None, metric_key: str | None = None) -> float:
        """A guard's allowance: the recipe's ``setting``, else 2 points (fractions) or 10% (errors)."""
        if setting is not None:
            return float(setting)
        return DEFAULT_MAX_DROP[self.unit(metric_key or self.metric_key)]

    def direction_of(self, metric_key: str) -> str:
        base = metric_key.rsplit("/", 1)[-1]
        if base in METRICS:
            return METRICS[base][0]
        if _seg.is_class_iou(base):
            return "higher"
        return self.head.direction

    # ---- data ------------------------------------------------------------------------------
    def fit_targets(self, x: Any, y: Any) -> Any:
        """What the model is trained towards: ``y`` (a tuple in output order for several outputs), or the inputs
        for an autoencoder."""
        if self.kind == "anomaly" and not self.multi_output:
            return x
        return self.keras_targets(y)

    # ---- scoring ---------------------------------------------------------------------------
    def outputs_dict(self, outputs: Any) -> dict[str, np.ndarray]:
        """Model outputs (one array, a list in head order, or a dict) keyed by head name."""
        if isinstance(outputs, Mapping):
            return {h.name: np.asarray(outputs[h.name]) for h in self.heads}
        if isinstance(outputs, (list, tuple)):
            return {h.name: np.asarray(o) for h, o in zip(self.heads, outputs)}
        return {self.heads[0].name: np.asarray(outputs)}

    def targets_dict(self, y: Any) -> dict[str, np.ndarray]:
        if isinstance(y, Mapping):
            return {h.name: np.asarray(y[h.name]) for h in self.heads}
        return {self.heads[0].name: np.asarray(y)}

    def evaluate(self, outputs: Any, targets: Any, inputs: Any = None) -> dict[str, float]:
        """Every computable metric of every head, keyed ``metric`` (one output) or ``head/metric``.

        Args:
            outputs: The model's outputs (array, list in head order, or dict by output name).
            targets: The split's targets (``y``; for anomaly the 0/1 labels).
            inputs: The split's inputs (anomaly: the reconstruction targets).

        Returns:
            Metric values; a metric that cannot be computed on this split (AUC without both labels) is absent.
        """
        outs, ys = self.outputs_dict(outputs), self.targets_dict(targets)
        result: dict[str, float] = {}
        for h in self.heads:
            if h.kind == "segmentation":  # one confusion matrix gives every metric, and the per-class IoUs
                found = _seg.evaluate(outs[h.name], ys[h.name], h.units, h.logits, h.threshold, h.ignore_index)
                result.update({self._key(h, k): v for k, v in found.items()})
            for m in dict.fromkeys((h.metric, *h.metrics)):
                if h.kind == "segmentation" and not _is_path(m):
                    continue
                value = metric_value(h, m, outs[h.name], ys[h.name], inputs)
                if value is not None:
                    result[self._key(h, m)] = value
        return result

    def degradation(self, reference: float, candidate: float, metric_key: str | None = None) -> float:
        """How much worse ``candidate`` is than ``reference`` (positive = worse), in the metric's unit (see
        :func:`degradation`)."""
        key = metric_key or self.metric_key
        return degradation(reference, candidate, self.unit(key), self.direction_of(key))

    def fmt(self, value: float | None, metric_key: str | None = None) -> str:
        """A metric value for people: ``98.61%`` for fractions, ``0.0412`` for values."""
        if value is None:
            return "—"
        key = metric_key or self.metric_key
        return f"{100 * value:.2f}%" if self.unit(key) == "points" else f"{value:.4g}"

    def compare(self, keras_out: Any, tflite_out: Any) -> dict[str, Any]:
        """How TFLite outputs follow the Keras outputs, per head and overall.

        Classes: top-1 (classification) or thresholded (binary, multilabel) agreement; every head: max
        absolute and max relative difference. ``agreement`` overall is the lowest of the heads that have
        classes (None when none has).
        """
        ko, to = self.outputs_dict(keras_out), self.outputs_dict(tflite_out)
        heads: dict[str, dict[str, float | None]] = {}
        for h in self.heads:
            k, t = ko[h.name].astype(np.float64), to[h.name].astype(np.float64)
            diff = np.abs(k - t)
            scale = max(float(np.max(np.abs(k))) if k.size else 0.0, 1e-12)
            heads[h.name] = {
                "agreement": _agreement(h, k, t) if h.classes else None,
                "max_abs_diff": float(diff.max()) if diff.size else 0.0,
                "max_rel_diff": float(diff.max() / scale) if diff.size else 0.0,
            }
        agreements = [v["agreement"] for v in heads.values() if v["agreement"] is not None]
        return {
            "agreement": float(min(a for a in agreements if a is not None)) if agreements else None,
            "max_abs_diff": max(float(v["max_abs_diff"] or 0.0) for v in heads.values()),
            "max_rel_diff": max(float(v["max_rel_diff"] or 0.0) for v in heads.values()),
            "heads": heads if self.multi_output else None,
        }

    def loss_value(self, outputs: Any, targets: Any, inputs: Any = None) -> float:
        """The mean training loss in numpy, weighted over heads (cross-entropy for classes, MSE otherwise).

        A smooth companion of the metric for sensitivity analysis; custom losses count as MSE.
        """
        outs, ys = self.outputs_dict(outputs), self.targets_dict(targets)
        total = 0.0
        for h in self.heads:
            o = np.asarray(outs[h.name], dtype=np.float64)
            if h.kind == "segmentation":
                value = _seg.loss_value(o, ys[h.name], h.units, h.logits, h.ignore_index)
            elif h.kind == "classification":
                e = o if not h.logits else np.exp(o - o.max(axis=-1, keepdims=True))
                p = e / e.sum(axis=-1, keepdims=True)
                yy = ys[h.name].reshape(len(o)).astype(int)
                value = float(np.mean(-np.log(np.clip(p[np.arange(len(o)), yy], 1e-12, 1.0))))
            elif h.kind in ("binary", "multilabel"):
                q = np.clip(probabilities(h, o), 1e-12, 1 - 1e-12)
                yb = ys[h.name].reshape(o.shape).astype(np.float64)
                value = float(np.mean(-(yb * np.log(q) + (1 - yb) * np.log(1 - q))))
            else:
                ref = inputs if h.kind == "anomaly" else ys[h.name]
                if isinstance(ref, Mapping):
                    ref = next(iter(ref.values()))
                value = float(np.mean((o - np.asarray(ref, dtype=np.float64).reshape(o.shape)) ** 2))
            total += h.weight * value
        return total / sum(h.weight for h in self.heads)

    # ---- Keras -----------------------------------------------------------------------------
    # Several outputs go to Keras as lists in output order, not dicts by name: tfmot's pruning wrappers rename
    # the output layers (``prune_low_magnitude_cls``), and a dict keyed by the original names no longer matches.
    def keras_loss(self) -> Any:
        """The compile ``loss`` (one loss, or a list in output order) with ``from_logits`` decided per head."""
        losses = [_keras_loss(h) for h in self.heads]
        return losses if self.multi_output else losses[0]

    def loss_weights(self, scale: float | None = None) -> Any:
        s = 1.0 if scale is None else scale
        if self.multi_output:
            return [h.weight * s for h in self.heads]
        return None if scale is None else [s]

    def keras_metrics(self) -> Any:
        """Compile ``metrics`` named like ours (``accuracy``, ``auc``, ``mae`` ...), a list per output when several."""
        per = [_keras_metrics(h) for h in self.heads]
        return per if self.multi_output else per[0]

    def keras_targets(self, y: Any) -> Any:
        """Targets as Keras takes them for this task: one array, or a tuple in output order."""
        if self.multi_output:  # no numpy conversion: also called with the tensors of a tf.data batch
            if isinstance(y, Mapping):
                return tuple(y[h.name] for h in self.heads)
            ys = self.targets_dict(y)
            return tuple(ys[h.name] for h in self.heads)
        return y

    # ---- persistence -----------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """JSON form (in summary.json and export.json, so consumers need no recipe)."""
        return {
            "kind": self.kind if not self.multi_output else "multi",
            "metric": self.metric_key,
            "direction": self.direction,
            "guard_metric": self.guard_key,
            "primary": self.primary,
            "reason": self.reason,
            "inputs": list(self.input_names),
            "outputs": [{**asdict(h), "metrics": list(h.metrics)} for h in self.heads],
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Task:
        if d.get("kind") == "detection" and cls is Task:
            from edgesparse.task.detection import DetectionTask

            return DetectionTask.from_json(d)
        heads = tuple(Head(**{**o, "metrics": tuple(o.get("metrics", ()))}) for o in d["outputs"])
        return cls(heads=heads, primary=d.get("primary") or heads[0].name, reason=d.get("reason", ""),
                   input_names=tuple(d.get("inputs", ())))


def classification(num_classes: int, logits: bool = False, name: str = "output") -> Task:
    """The classic task: one softmax (or logits) output over ``num_classes`` classes."""
    head = Head(name=name, kind="classification", loss=_DEFAULT_LOSS["classification"], metric="accuracy",
                metrics=("accuracy",), direction="higher", logits=logits, units=num_classes)
    return Task(heads=(head,), primary=name, reason="default")


# --------------------------------------------------------------------------------------------
# metrics (numpy)


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(v, -60, 60)))


def probabilities(head: Head, out: np.ndarray) -> np.ndarray:
    """Binary/multilabel outputs as probabilities (sigmoid of logits)."""
    out = np.asarray(out, dtype=np.float64)
    return _sigmoid(out) if head.logits else out


def predicted_classes(head: Head, out: np.ndarray) -> np.ndarray:
    """Top-1 class (classification), thresholded 0/1 per unit (binary, multilabel), each pixel's class
    (segmentation)."""
    if head.kind == "segmentation":
        return _seg.predicted_map(out, head.units, head.logits, head.threshold)
    if head.kind == "classification":
        return np.argmax(out, axis=-1)
    return (probabilities(head, out) >= head.threshold).astype(np.int64)


def _agreement(head: Head, a: np.ndarray, b: np.ndarray) -> float:
    if not len(a):
        return 1.0
    return float(np.mean(predicted_classes(head, a) == predicted_classes(head, b)))


def anomaly_scores(inputs: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Each sample's mean squared reconstruction error."""
    d = (np.asarray(out, dtype=np.float64) - np.asarray(inputs, dtype=np.float64)) ** 2
    return d.reshape(len(d), -1).mean(axis=1)


def roc_auc(labels: np.ndarray, scores: np.ndarray, max_fpr: float | None = None) -> float | None:
    """ROC AUC (None without both classes); with ``max_fpr`` the standardised partial AUC (McClish)."""
    labels = np.asarray(labels).reshape(-1)
    if len(np.unique(labels)) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, np.asarray(scores).reshape(-1), max_fpr=max_fpr))


def metric_value(head: Head, metric: str, out: np.ndarray, y: np.ndarray, inputs: Any = None) -> float | None:
    """One metric of one head; None where it cannot be computed on this split."""
    if not len(out):
        return None
    if _is_path(metric):
        fn = import_path(metric, "metric")
        return float(fn(y, out))
    k = head.kind
    if k == "segmentation":
        return _seg.evaluate(out, y, head.units, head.logits, head.threshold, head.ignore_index).get(metric)
    if k == "classification":
        return float(np.mean(np.argmax(out, axis=-1) == y.reshape(len(y))))
    if k in ("binary", "multilabel"):
        y2 = y.reshape(out.shape).astype(np.int64)
        if metric == "accuracy":
            return float(np.mean(predicted_classes(head, out) == y2))
        p = probabilities(head, out).reshape(len(out), -1)
        yy = y2.reshape(len(out), -1)
        aucs = [a for a in (roc_auc(yy[:, j], p[:, j]) for j in range(p.shape[1])) if a is not None]
        return float(np.mean(aucs)) if aucs else None
    if k == "regression":
        err = np.asarray(out, dtype=np.float64) - np.asarray(y, dtype=np.float64).reshape(out.shape)
        if metric == "mae":
            return float(np.mean(np.abs(err)))
        mse = float(np.mean(err ** 2))
        return mse if metric == "mse" else math.sqrt(mse)
    # anomaly: the reconstruction target is the input
    x = inputs[head.name] if isinstance(inputs, Mapping) and head.name in inputs else inputs
    if isinstance(x, Mapping):
        x = next(iter(x.values()))
    if x is None:
        return None
    scores = anomaly_scores(x, out)
    if metric == "reconstruction_mse":
        return float(scores.mean())
    return roc_auc(y, scores, max_fpr=0.1 if metric == "pauc" else None)


def degradation(reference: float, candidate: float, unit: str, direction: str) -> float:
    """How much worse ``candidate`` is than ``reference`` (positive = worse).

    Points (x100) for fractions (``unit`` "points"); a relative change in percent for values (``unit`` "%"; for
    a zero reference any worsening counts as ``inf``).
    """
    sign = 1.0 if direction == "higher" else -1.0
    if unit == "points":
        return sign * (reference - candidate) * 100.0
    if reference == 0:
        return 0.0 if candidate == reference else (math.inf if sign * (reference - candidate) > 0 else -math.inf)
    return sign * (reference - candidate) / abs(reference) * 100.0


def import_path(path: str, what: str) -> Callable[..., Any]:
    """Import ``pkg.module:function``.

    Raises:
        RecipeError: it does not import or is not callable.
    """
    mod_name, _, attr = path.partition(":")
    try:
        obj = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise RecipeError(f"task {what} '{path}' does not import ({exc}); give 'pkg.module:function' of an "
                          "installed module (or one on PYTHONPATH / in the recipe's folder).") from None
    if not callable(obj):
        raise RecipeError(f"task {what} '{path}' is not callable; it must be a function f(y_true, y_pred).")
    return obj


def _keras_loss(h: Head) -> Any:
    from edgesparse import _tf

    losses = _tf.keras().losses
    if _is_path(h.loss):
        return import_path(h.loss, "loss")
    if h.kind == "segmentation" and h.loss == _DEFAULT_LOSS["segmentation"]:
        return _seg.keras_loss(h.units, h.logits, h.ignore_index)
    if h.loss == "sparse_categorical_crossentropy":
        return losses.SparseCategoricalCrossentropy(from_logits=h.logits)
    if h.loss == "binary_crossentropy":
        return losses.BinaryCrossentropy(from_logits=h.logits)
    if h.loss == "categorical_crossentropy":
        return losses.CategoricalCrossentropy(from_logits=h.logits)
    try:
        return losses.get(h.loss)
    except ValueError:
        raise RecipeError(f"task loss '{h.loss}' is not a Keras loss name; use e.g. mse, mae, huber, "
                          "binary_crossentropy, or 'pkg.module:function'.") from None


def _keras_metrics(h: Head) -> list[Any]:
    from edgesparse import _tf

    m = _tf.keras().metrics
    if h.kind == "segmentation":
        return _seg.keras_metrics(h.units, h.logits, h.threshold)
    if h.kind == "classification":
        return ["accuracy"]
    if h.kind in ("binary", "multilabel"):
        thr = h.threshold if not h.logits else math.log(h.threshold / (1 - h.threshold))
        return [m.BinaryAccuracy(name="accuracy", threshold=thr),
                m.AUC(name="auc", from_logits=h.logits, multi_label=h.kind == "multilabel")]
    if h.kind == "regression":
        return [m.MeanAbsoluteError(name="mae")]
    return [m.MeanSquaredError(name="mse")]


# --------------------------------------------------------------------------------------------
# resolution: recipe section + model + data -> Task


@dataclass
class OutputInfo:
    """What the model says of one output."""

    name: str
    shape: tuple[int | None, ...]  # without the batch axis
    activation: str  # softmax | sigmoid | linear | other


def _is_int_like(y: np.ndarray) -> bool:
    if y.dtype.kind in "iub":
        return True
    return y.dtype.kind == "f" and bool(np.isfinite(y).all()) and bool(np.equal(np.mod(y, 1), 0).all())


def _one_hot(y: np.ndarray) -> bool:
    return y.ndim == 2 and y.shape[1] > 1 and bool(np.isin(y, (0, 1)).all()) and bool((y.sum(axis=1) == 1).all())


def _infer_head(out: OutputInfo, y: np.ndarray | None, x_shape: tuple[int, ...] | None, has_test_labels: bool
                ) -> tuple[str, str]:
    """``(kind, reason)`` for one output from its shape, activation and targets."""
    units = int(out.shape[-1] or 1) if out.shape else 1
    if y is None:
        if x_shape is not None and tuple(out.shape) == tuple(x_shape):
            if not has_test_labels:
                raise RecipeError(
                    f"the model's output '{out.name}' has the input's shape {tuple(x_shape)} (an autoencoder?) but the "
                    "data has no labelled test split, so no task can be inferred. For anomaly detection store "
                    "x_test and y_test (0 normal, 1 anomalous) and set `task: anomaly`; otherwise give targets `y`.")
            return "anomaly", (f"no targets, output '{out.name}' {tuple(out.shape)} reconstructs the input, labelled "
                               "test split: anomaly (autoencoder)")
        raise RecipeError(f"the data has no targets for the model's output '{out.name}'; store `y` (or "
                          f"`y_{out.name}`), or set `task:` to say what the model does.")
    if y.dtype.kind not in "biuf":
        raise DataError(f"targets for output '{out.name}' have dtype {y.dtype}, which fits no task; store numbers: "
                        "class indices, 0/1 labels or float targets.")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DataError(f"targets for output '{out.name}' contain NaN or infinite values, which fit no task; clean "
                        "or drop those samples.")
    segmentation = _seg.infer(out.name, tuple(out.shape), out.activation, y)
    if segmentation is not None:
        return "segmentation", segmentation
    yv = y.reshape(len(y), -1)
    binary_labels = bool(np.isin(y, (0, 1)).all())
    labels_1d = y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1)
    if _one_hot(y) and units == y.shape[1]:
        return "classification", f"output '{out.name}' has {units} units and the targets are one-hot rows"
    if labels_1d and _is_int_like(y):
        if units == 1 and binary_labels and out.activation in ("sigmoid", "linear"):
            how = "a sigmoid unit" if out.activation == "sigmoid" else "one linear unit (a logit)"
            return "binary", f"output '{out.name}' is {how} and the targets are 0/1: binary"
        if units > 1 and out.activation in ("softmax", "linear"):
            return "classification", (f"output '{out.name}' is a {out.activation} over {units} units and the "
                                      "targets are class indices: classification")
    if out.activation == "sigmoid" and binary_labels and yv.shape[1] == units and units > 1:
        return "multilabel", f"output '{out.name}' is {units} sigmoid units and the targets multi-hot rows: multilabel"
    if out.activation not in ("softmax", "sigmoid") and yv.shape[1] == int(np.prod([d or 1 for d in out.shape])):
        return "regression", (f"output '{out.name}' is {out.activation} with {units} units and the targets are "
                              f"{'floats' if not _is_int_like(y) else 'numbers'} of that shape: regression")
    raise RecipeError(f"cannot tell the task of output '{out.name}' ({units} units, {out.activation}) from targets of "
                      f"shape {tuple(y.shape[1:])} and dtype {y.dtype}; set `task:` (classification, binary, "
                      "multilabel, regression or anomaly).")


def resolve_task(cfg: TaskConfig | None, outputs: list[OutputInfo], targets: Mapping[str, np.ndarray | None],
                 input_names: tuple[str, ...] = (), x_shape: tuple[int, ...] | None = None,
                 has_test_labels: bool = False, anchors: Any = None) -> Task:
    """Resolve the recipe's ``task:`` against the model's outputs and the data's targets.

    Args:
        cfg: The section (None = auto).
        outputs: The model's outputs in order.
        targets: Training targets keyed by output name (None: the data has none).
        input_names: The model's input names.
        x_shape: One sample's input shape (single-input models), to recognise autoencoders.
        has_test_labels: Whether the data has a labelled test split (anomaly).
        anchors: The data's anchors ``(A, 4)`` (detection).

    Raises:
        RecipeError: a kind that the model's outputs contradict, an output name the model lacks, or a
            task that cannot be inferred.
    """
    cfg = cfg or TaskConfig()
    if cfg.kind == "detection":
        from edgesparse.task.detection import resolve_detection

        return resolve_detection(cfg, outputs, targets, anchors, tuple(input_names))
    names = [o.name for o in outputs]
    if cfg.outputs:
        unknown = [n for n in cfg.outputs if n not in names]
        if unknown:
            close = difflib.get_close_matches(unknown[0], names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise RecipeError(f"task.outputs names {', '.join(unknown)}{hint}, but the model's outputs are "
                              f"{', '.join(names)}; key task.outputs by the model's output names.")
    heads: list[Head] = []
    reasons: list[str] = []
    for out in outputs:
        hc: HeadConfig = cfg.outputs.get(out.name, HeadConfig()) if cfg.outputs else cfg
        y = targets.get(out.name)
        if hc.kind == "auto":
            kind, why = _infer_head(out, y, x_shape, has_test_labels)
            reasons.append(why)
        else:
            kind = hc.kind
            reasons.append(f"output '{out.name}': {kind} (from the recipe)")
        heads.append(_make_head(out, kind, hc, y))
    primary = cfg.primary or heads[0].name
    task = Task(heads=tuple(heads), primary=primary, reason="; ".join(reasons), input_names=tuple(input_names))
    return task


def _make_head(out: OutputInfo, kind: str, hc: HeadConfig, y: np.ndarray | None) -> Head:
    units = int(out.shape[-1] or 1) if out.shape else 1
    act = out.activation
    where = f"output '{out.name}' ({units} units, {act})"
    if kind == "binary" and units != 1:
        raise RecipeError(f"task binary needs one sigmoid (or logit) unit, but {where}; use task classification for "
                          "a softmax over classes, or multilabel for several sigmoid units.")
    if kind in ("binary", "multilabel") and act == "softmax":
        raise RecipeError(f"task {kind} needs sigmoid (or logit) units, but {where} ends in a softmax; use task "
                          "classification.")
    if kind == "classification" and units < 2:
        raise RecipeError(f"task classification needs one output per class, but {where}; for one sigmoid unit use "
                          "task binary.")
    if kind == "segmentation":
        _check_segmentation(out, hc, y)
    elif len(out.shape) == 3 and kind in ("classification", "binary", "multilabel") and _seg.looks_like_class_maps(y):
        raise RecipeError(f"task {kind} scores one label per sample, but {where} is per pixel {tuple(out.shape)} and "
                          "its targets are class maps; use task segmentation (mean IoU over the pixels' classes).")
    elif hc.ignore_index is not None:
        raise RecipeError(f"task.ignore_index belongs to task segmentation, but {where} is {kind}; drop it.")
    if kind == "anomaly" and y is not None and y.ndim > 1 and y.shape[1:] != tuple(out.shape):
        raise RecipeError(f"task anomaly needs an autoencoder (output shaped like its input), but {where}.")
    if kind in ("binary", "multilabel", "classification") and y is not None and y.dtype.kind == "f" \
            and not _is_int_like(y):
        raise DataError(f"task {kind} for output '{out.name}' needs class labels, but its targets are fractional "
                        "floats; use task regression, or store labels.")
    metric = hc.metric or _DEFAULT_METRICS[kind][0]
    if metric in METRICS and metric not in KIND_METRICS[kind]:
        raise RecipeError(f"metric '{metric}' does not apply to task {kind} ({where}); use one of "
                          f"{', '.join(KIND_METRICS[kind])}.")
    if _is_path(metric):
        import_path(metric, "metric")
    loss = hc.loss or _DEFAULT_LOSS[kind]
    if _is_path(loss):
        import_path(loss, "loss")
    metrics = tuple(hc.metrics) if hc.metrics is not None else _DEFAULT_METRICS[kind]
    for m in metrics:
        if m in METRICS and m not in KIND_METRICS[kind]:
            raise RecipeError(f"metric '{m}' does not apply to task {kind} ({where}); use "
                              f"{', '.join(KIND_METRICS[kind])}.")
    direction = hc.direction or METRICS.get(metric, ("higher", ""))[0]
    logits = act not in ("softmax", "sigmoid") if kind in ("classification", "binary", "multilabel", "segmentation") \
        else False
    return Head(name=out.name, kind=kind, loss=loss, metric=metric, metrics=metrics, direction=direction,
                threshold=hc.threshold, weight=hc.weight, logits=logits, units=units,
                ignore_index=hc.ignore_index if kind == "segmentation" else None)


def _check_segmentation(out: OutputInfo, hc: HeadConfig, y: np.ndarray | None) -> None:
    units = int(out.shape[-1] or 1) if out.shape else 1
    if len(out.shape) != 3:
        raise RecipeError(f"task segmentation needs a per-pixel output (H, W, classes), but output '{out.name}' has "
                          f"shape {tuple(out.shape)}; use another task for it.")
    if units == 1 and out.activation == "softmax":
        raise RecipeError(f"task segmentation: output '{out.name}' is a softmax over one channel (always 1); use a "
                          "sigmoid for a binary mask, or one softmax channel per class.")
    if y is not None:
        _seg.check_shape(out.name, tuple(out.shape), y)


__all__ = [
    "KINDS", "METRICS", "WRAPPER_PREFIXES", "Head", "HeadConfig", "OutputInfo", "Task", "TaskConfig",
    "anomaly_scores", "classification", "degradation", "import_path", "metric_value", "predicted_classes",
    "resolve_task", "roc_auc", "task_before", "unwrapped_name",
]
