"""Quantization modes: post-training (converter settings) and quantization-aware training.

==========  ==========================================================  =====================
mode        what happens                                                training
==========  ==========================================================  =====================
none        float32 weights and activations                             no
dynamic     int8 weights, float activations (dynamic range)             no
float16     float16 weights                                             no
int8        full integer; activations calibrated on training samples    no
qat         tfmot ``quantize_model`` then fine-tuning, int8 export      yes
pqat        prune-preserving QAT (keeps the zeros), int8 export         yes
==========  ==========================================================  =====================
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgesparse import _tf
from edgesparse._registry import Registry
from edgesparse.errors import ModelError, RecipeError


@dataclass(frozen=True)
class QuantMode:
    """How one quantization mode trains (optionally) and configures the TFLite converter."""

    name: str
    trains: bool
    integer: bool  # the exported model computes in int8
    prepare: Callable[[Any], Any] | None = None  # model -> model to fine-tune (qat/pqat)
    needs_calibration: bool = False


MODES: Registry[QuantMode] = Registry("quantization mode", RecipeError)


def _qat(model: Any) -> Any:
    q = _tf.tfmot().quantization.keras
    try:
        return q.quantize_model(model)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise ModelError(_qat_hint("qat", exc)) from exc


def _pqat(model: Any) -> Any:
    tfmot = _tf.tfmot()
    q = tfmot.quantization.keras
    try:
        annotated = q.quantize_annotate_model(model)
        return q.quantize_apply(annotated, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme())
    except (ValueError, RuntimeError, TypeError) as exc:
        raise ModelError(_qat_hint("pqat", exc)) from exc


def _qat_hint(mode: str, exc: Exception) -> str:
    return (
        f"quantization mode {mode}: tfmot cannot make this model quantization-aware ({exc}). Some layers "
        "have no QAT support; use post-training `mode: int8` instead, or restructure those layers."
    )


for _mode in (
    QuantMode("none", trains=False, integer=False),
    QuantMode("dynamic", trains=False, integer=False),
    QuantMode("float16", trains=False, integer=False),
    QuantMode("int8", trains=False, integer=True, needs_calibration=True),
    QuantMode("qat", trains=True, integer=True, prepare=_qat, needs_calibration=True),
    QuantMode("pqat", trains=True, integer=True, prepare=_pqat, needs_calibration=True),
):
    MODES.register(_mode.name)(_mode)


def configure_converter(
    converter: Any,
    mode: str,
    *,
    sparse_encoding: bool,
    representative: Iterable[np.ndarray] | None,
    io: str,
) -> None:
    """Set the TFLite converter up for ``mode``.

    Args:
        converter: A ``tf.lite.TFLiteConverter``.
        mode: A registered quantization mode.
        sparse_encoding: Store sparse weights in the converter's sparse format (CSR / blocks).
        representative: Calibration samples (from the training split) for integer modes.
        io: "float32" or "int8" model inputs/outputs (integer modes only).

    Raises:
        RecipeError: int8 I/O was asked for a float mode.
    """
    tf = _tf.tf()
    qm = MODES.get(mode)
    opts = []
    if mode != "none":
        opts.append(tf.lite.Optimize.DEFAULT)
    if sparse_encoding:
        opts.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = opts
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if qm.needs_calibration and representative is not None:
        samples = list(representative)

        def gen() -> Any:
            for s in samples:
                yield [s[None, ...].astype(np.float32)]

        converter.representative_dataset = gen
    if qm.integer:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if io == "int8":
        if not qm.integer:
            raise RecipeError(
                f"export.io: int8 needs an integer quantization mode (int8, qat, pqat), not '{mode}'."
            )
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
