"""Quantization mode -> TFLite converter settings (the export side of ``quantization.mode``).

==========  ==========================================================  ==================
mode        what the converter does                                     computes in
==========  ==========================================================  ==================
none        float32 weights and activations                             float32
dynamic     int8 weights, float activations (dynamic range)             float32
float16     float16 weights                                             float32
int8        full integer; activations calibrated on training samples    int8
qat         int8 export of a quantization-aware trained model           int8
pqat        int8 export of a prune-preserving QAT model                 int8
==========  ==========================================================  ==================

The training side of qat/pqat (wrapping the model for fine-tuning) is :mod:`edgesparse.train.quantize`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgesparse import _tf
from edgesparse._registry import Registry
from edgesparse.errors import RecipeError


@dataclass(frozen=True)
class ConverterMode:
    """How one quantization mode configures the TFLite converter."""

    name: str
    integer: bool  # the exported model computes in int8
    needs_calibration: bool = False  # a representative dataset is given to the converter
    float16: bool = False

    @property
    def float_outputs(self) -> bool:
        """Whether the exported model's outputs are expected to match float Keras outputs closely."""
        return not self.integer and self.name != "dynamic"


CONVERTER_MODES: Registry[ConverterMode] = Registry("quantization mode", RecipeError)

for _mode in (
    ConverterMode("none", integer=False),
    ConverterMode("dynamic", integer=False),
    ConverterMode("float16", integer=False, float16=True),
    ConverterMode("int8", integer=True, needs_calibration=True),
    ConverterMode("qat", integer=True, needs_calibration=True),
    ConverterMode("pqat", integer=True, needs_calibration=True),
):
    CONVERTER_MODES.register(_mode.name)(_mode)


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
    cm = CONVERTER_MODES.get(mode)
    opts = []
    if mode != "none":
        opts.append(tf.lite.Optimize.DEFAULT)
    if sparse_encoding:
        opts.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = opts
    if cm.float16:
        converter.target_spec.supported_types = [tf.float16]
    if cm.needs_calibration and representative is not None:
        if isinstance(representative, dict):  # several inputs: {input name: samples}, fed by signature name
            named = {k: np.asarray(v) for k, v in representative.items()}
            count = len(next(iter(named.values())))

            def gen() -> Any:
                for i in range(count):
                    yield {k: v[i:i + 1].astype(np.float32) for k, v in named.items()}
        else:
            samples = list(representative)

            def gen() -> Any:
                for s in samples:
                    yield [s[None, ...].astype(np.float32)]

        converter.representative_dataset = gen
    if cm.integer:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if io == "int8":
        if not cm.integer:
            raise RecipeError(
                f"export.io: int8 needs an integer quantization mode (int8, qat, pqat), not '{mode}'."
            )
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
