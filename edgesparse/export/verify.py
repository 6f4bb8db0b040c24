"""Verification: run the .tflite on the held-out test split and compare it with the Keras model."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgesparse.errors import ExportError
from edgesparse.export.litert import load_interpreter, predict


@dataclass
class Verification:
    """How the TFLite model compares with the Keras model on the test split."""

    samples: int
    accuracy: float
    keras_accuracy: float
    agreement: float  # share of samples whose top-1 class matches the Keras model's
    max_abs_diff: float  # over all outputs (probabilities or logits)
    resolver: str
    fallback_reason: str | None
    float_model: bool

    @property
    def drop_points(self) -> float:
        return (self.keras_accuracy - self.accuracy) * 100

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["drop_points"] = self.drop_points
        return d


def verify(
    tflite: bytes,
    x: np.ndarray,
    y: np.ndarray,
    keras_outputs: np.ndarray,
    *,
    threads: int = 1,
    float_model: bool = True,
    max_drop_points: float | None = None,
    label: str = "model",
) -> Verification:
    """Run ``tflite`` on ``x`` and compare with the Keras outputs.

    Args:
        tflite: The flatbuffer.
        x: Test inputs (float).
        y: Test labels.
        keras_outputs: The Keras model's outputs on ``x``.
        threads: Interpreter threads.
        float_model: Whether the model computes in float (its output difference is meaningful).
        max_drop_points: Fail when the TFLite accuracy is more than this many points below Keras.
        label: Name used in messages.

    Raises:
        ExportError: the model does not run, or it loses more accuracy than allowed.
    """
    loaded = load_interpreter(tflite, threads=threads)
    out = predict(loaded, x)
    if out.shape != keras_outputs.shape:
        raise ExportError(
            f"{label}: the TFLite outputs have shape {out.shape}, the Keras outputs {keras_outputs.shape}."
        )
    if not np.all(np.isfinite(out)):
        raise ExportError(
            f"{label}: the TFLite model outputs NaN/inf on the test split, so this conversion is broken (known "
            "converter/runtime case: float16 with block-sparse FULLY_CONNECTED weights). Export with "
            "`sparse_encoding: false`, or use unstructured pattern or int8 quantization for that model."
        )
    pred = np.argmax(out, axis=-1)
    kpred = np.argmax(keras_outputs, axis=-1)
    result = Verification(
        samples=len(x),
        accuracy=float(np.mean(pred == y)),
        keras_accuracy=float(np.mean(kpred == y)),
        agreement=float(np.mean(pred == kpred)),
        max_abs_diff=float(np.max(np.abs(out - keras_outputs))) if len(x) else 0.0,
        resolver=loaded.resolver,
        fallback_reason=loaded.fallback_reason,
        float_model=float_model,
    )
    if max_drop_points is not None and result.drop_points > max_drop_points:
        raise ExportError(
            f"{label}: the TFLite model's test accuracy {result.accuracy:.2%} is {result.drop_points:.1f} "
            f"points below the Keras model's {result.keras_accuracy:.2%} (allowed: {max_drop_points:g}). "
            "Quantization or conversion lost accuracy: try qat/pqat instead of post-training int8, more "
            "representative samples, or raise `export.max_accuracy_drop` to accept it."
        )
    return result
