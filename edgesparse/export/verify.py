"""Verification: run the .tflite on the held-out test split and compare it with the Keras model.

What "agrees" means is the task's (:mod:`edgesparse.task`): top-1 class agreement for
classification, thresholded agreement for binary and multilabel outputs, and for regression and
anomaly outputs the max absolute and relative difference; every output is compared. The check that
fails an export is the task's primary metric of the TFLite model against the Keras model's, in
points for fractions (accuracy, AUC) or as a relative increase for errors (mae, reconstruction error).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgesparse.data.stream import Split
from edgesparse.device.runner import has_state
from edgesparse.errors import AccuracyDropError, ExportError
from edgesparse.export.litert import load_interpreter, predict
from edgesparse.task import Task, classification


@dataclass
class Verification:
    """How the TFLite model compares with the Keras model on the test split."""

    samples: int
    accuracy: float | None  # TFLite accuracy where the task has one (classification, binary, multilabel)
    keras_accuracy: float | None
    agreement: float | None  # share of samples (or units) whose class matches the Keras model's; None: no classes
    max_abs_diff: float  # over all outputs (probabilities, logits or values)
    resolver: str
    fallback_reason: str | None
    float_model: bool
    delegation: dict[str, Any] | None = None  # ops XNNPACK took: {"total", "delegated", "partitions", "builtin"}
    metric: float | None = None  # the task's primary metric of the TFLite model
    keras_metric: float | None = None
    metric_name: str = "accuracy"
    unit: str = "points"  # points (fractions) | % (relative change of an error)
    max_rel_diff: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    keras_metrics: dict[str, float] = field(default_factory=dict)
    heads: dict[str, Any] | None = None
    drop: float = 0.0  # how much worse than Keras, in ``unit`` (positive = worse)
    batch: int | None = None  # the converted signature's static batch (1 for recurrent models); None: any
    state_reset: bool = False  # the model keeps state between invokes (fused LSTM): reset before every sample

    @property
    def drop_points(self) -> float:
        """The primary metric's loss vs Keras (points for fractions, % for errors)."""
        return self.drop

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["drop_points"] = self.drop_points
        return d


#: samples per batch when verification reads a streamed split
_VERIFY_BATCH = 512


def verify(
    tflite: bytes,
    x: Any,
    y: Any,
    keras_outputs: Any,
    *,
    threads: int = 1,
    float_model: bool = True,
    max_drop_points: float | None = None,
    label: str = "model",
    task: Task | None = None,
    metric_key: str | None = None,
) -> Verification:
    """Run ``tflite`` on ``x`` and compare with the Keras outputs.

    Args:
        tflite: The flatbuffer.
        x: Test inputs (float; a dict by input name for several inputs), or a
            :class:`~edgesparse.data.stream.Split` read batch by batch (``y`` is then unused).
        y: Test targets (for anomaly the 0/1 labels).
        keras_outputs: The Keras model's outputs on ``x`` (a dict by output name for several outputs).
        threads: Interpreter threads.
        float_model: Whether the model computes in float (its output difference is meaningful).
        max_drop_points: Fail when the TFLite primary metric is more than this much worse than Keras'
            (points for fractions, percent relative for errors).
        label: Name used in messages.
        task: The data's task; None: a classifier scored by top-1 accuracy.
        metric_key: The metric compared (default the task's primary; the baseline's check on the validation split
            passes ``task.guard_key``: an anomaly task's validation split has no labels for its AUC).

    Raises:
        AccuracyDropError: it loses more than ``max_drop_points``.
        ExportError: the model does not run.
    """
    if task is None:
        units = int(np.asarray(keras_outputs).shape[-1])
        task = classification(units, logits=False)
    loaded = load_interpreter(tflite, threads=threads)
    out, y, x = _run_tflite(loaded, task, x, y)
    k_out, t_out = _outputs(task, keras_outputs, out, label)
    cmp = task.compare(k_out, t_out)
    tm, km = task.evaluate(t_out, y, x), task.evaluate(k_out, y, x)
    key = metric_key or task.metric_key
    acc_key = (task.primary + "/accuracy") if task.multi_output else "accuracy"
    metric, keras_metric = tm.get(key), km.get(key)
    drop = task.degradation(keras_metric, metric, key) if metric is not None and keras_metric is not None else 0.0
    n = len(next(iter(k_out.values())))
    result = Verification(
        samples=n, accuracy=tm.get(acc_key), keras_accuracy=km.get(acc_key), agreement=cmp["agreement"],
        max_abs_diff=cmp["max_abs_diff"] if n else 0.0, resolver=loaded.resolver,
        fallback_reason=loaded.fallback_reason, float_model=float_model, delegation=loaded.delegation,
        metric=metric, keras_metric=keras_metric,
        metric_name=key.replace("/", " "), unit=task.unit(key), max_rel_diff=cmp["max_rel_diff"], metrics=tm,
        keras_metrics=km, heads=cmp["heads"], drop=0.0 if math.isnan(drop) else drop,
        batch=_static_batch(loaded.interpreter), state_reset=has_state(loaded.interpreter),
    )
    if max_drop_points is not None and result.drop > max_drop_points:
        raise AccuracyDropError(_drop_message(task, result, max_drop_points, label, key), result)
    return result


def signature_facts(tflite: bytes) -> dict[str, Any]:
    """``{"batch": 1 | None, "state_reset_between_samples": bool}`` of a converted model, for export.json: a
    recurrent model's signature takes one sample per invoke, and a fused LSTM's state is reset between samples by
    verification, deploy and the device runner."""
    loaded = load_interpreter(tflite)
    return {"batch": _static_batch(loaded.interpreter), "state_reset_between_samples": has_state(loaded.interpreter)}


def _static_batch(interp: Any) -> int | None:
    """The first input's batch when the signature fixes it (not -1), else None."""
    d = interp.get_input_details()[0]
    sig = d.get("shape_signature")
    if sig is None or not len(sig) or int(sig[0]) == -1:
        return None
    return int(sig[0])


def _run_tflite(loaded: Any, task: Task, x: Any, y: Any) -> tuple[Any, Any, Any]:
    """``(outputs, targets, inputs)`` of the interpreter on arrays, or on a Split read batch by batch."""
    def run(xb: Any) -> Any:
        return predict(loaded, xb, input_names=list(task.input_names) or None,
                       output_names=[h.name for h in task.heads])

    if isinstance(x, Split):  # streamed or not: read batch by batch, keep outputs and targets
        return x.apply(run, _VERIFY_BATCH, inputs=any(h.kind == "anomaly" for h in task.heads))
    return run(x), y, x


def _outputs(task: Task, keras_outputs: Any, out: Any, label: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keras and TFLite outputs keyed by head, checked for shape and finiteness."""
    names = [h.name for h in task.heads]
    if task.multi_output and not isinstance(out, dict):
        raise ExportError(f"{label}: the TFLite model has one output but the Keras model {len(names)}.")
    k_out, t_out = task.outputs_dict(keras_outputs), task.outputs_dict(out)
    for h in task.heads:
        if t_out[h.name].shape != k_out[h.name].shape:
            raise ExportError(f"{label}: the TFLite output '{h.name}' has shape {t_out[h.name].shape}, the Keras "
                              f"output {k_out[h.name].shape}.")
        if not np.all(np.isfinite(t_out[h.name])) and label == _DENSE_LABEL:
            raise ExportError(
                f"{label}: the float32 conversion of the dense baseline (no sparsity, no quantization) outputs NaN/inf "
                "on the test split where the Keras model does not, so the TFLite converter or the LiteRT runtime "
                "breaks this model, not compression. Check its ops (`edgesparse inspect` on the bundle's "
                "dense.tflite), try another ai-edge-litert/TensorFlow version, and report the model; "
                "`export.verify: false` skips the check.")
        if not np.all(np.isfinite(t_out[h.name])):
            raise ExportError(
                f"{label}: the TFLite model outputs NaN/inf on the test split, so this conversion is broken (known "
                "converter/runtime case: float16 with block-sparse FULLY_CONNECTED weights). Export with "
                "`sparse_encoding: false`, or use unstructured pattern or int8 quantization for that model.")
    return k_out, t_out


#: the label export gives the dense baseline's float32 conversion (its failures are the converter's, not compression's)
_DENSE_LABEL = "dense.tflite"


def _drop_message(task: Task, result: Verification, allowed: float, label: str, key: str | None = None) -> str:
    key = key or task.metric_key
    unit = "points" if result.unit == "points" else "% (relative)"
    worse = "below" if task.direction_of(key) == "higher" else "above"
    figures = (f"{label}: the TFLite model's {result.metric_name} {task.fmt(result.metric, key)} is "
               f"{result.drop:.2f} {unit} {worse} the Keras model's {task.fmt(result.keras_metric, key)} "
               f"(export.max_accuracy_drop allows {allowed:g} {unit}, agreement "
               f"{'—' if result.agreement is None else f'{result.agreement:.1%}'}, max abs diff "
               f"{result.max_abs_diff:.3g}).")
    if label == _DENSE_LABEL and result.float_model:
        return (figures + " This is the float32 conversion of the dense baseline — no sparsity, no quantization — "
                "so the TFLite converter or the LiteRT runtime changes this model, not compression. Check its ops "
                "(`edgesparse inspect` on dense.tflite) for a layer that converts differently (custom layers, "
                "training-only behaviour), try another ai-edge-litert/TensorFlow version, and report the model; "
                "raise `export.max_accuracy_drop` (or set `export.verify: false`) to ship anyway.")
    return (figures + " Quantization or conversion lost it: try qat/pqat instead of post-training int8, "
            "quantization.mode: int16x8 (int16 activations: for inputs or activations of very different scales), "
            "more representative samples, or raise `export.max_accuracy_drop` to accept it.")
