"""Quantization mode -> TFLite converter settings (the export side of ``quantization.mode``).

==========  ==========================================================  ==================
mode        what the converter does                                     computes in
==========  ==========================================================  ==================
none        float32 weights and activations                             float32
dynamic     int8 weights, float activations (dynamic range)             float32
float16     float16 weights                                             float32
int8        full integer; activations calibrated on training samples    int8
int16x8     int16 activations, int8 weights (int64/int32 biases);       int16 x int8
            calibrated like int8; the converter's
            ``EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8``
qat         int8 export of a quantization-aware trained model           int8
pqat        int8 export of a prune-preserving QAT model                 int8
==========  ==========================================================  ==================

int16x8 keeps what int8's 256 activation levels lose (an input whose features span very different
scales: one int8 scale per tensor rounds the small ones to zero), at a cost in speed measured here
(ai-edge-litert 2.3, x86): XNNPACK takes none of its ops, so LiteRT's builtin reference kernels run
every op, about 5x the latency of the int8 and of the dense float32 model on a small CNN. Its inputs
and outputs are float32 or int16 (the converter refuses int8 I/O for it).

The converter's sparse encoding (``Optimize.EXPERIMENTAL_SPARSITY``) is not used with int16x8: it
rewrites the int64 biases of int16x8 CONV_2D/FULLY_CONNECTED ops as int32 (same values) and the
CONV_2D outputs go wrong (measured, TF 2.21 / ai-edge-litert 2.3: max abs diff 0.95 vs 0.095 plain
on a small CNN, a pruned digits CNN at 10% accuracy instead of 66%; an all-zero bias even becomes
int8, which LiteRT refuses). The plain int16x8 conversion keeps the pruned zeros in its dense int8
kernels (they compress with gzip), so ``sparse_encoding: auto`` converts int16x8 plain only.

A model whose first layer's kernel rows differ widely in range (inputs of very different scales) loses in int16x8
what its int8 weights' one scale per output channel rounds away; :mod:`edgesparse.export.equalize` makes the
conversion with the inputs equalized as well, and the candidates keep the more accurate one.

The training side of qat/pqat (wrapping the model for fine-tuning) is :mod:`edgesparse.train.quantize`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgesparse import _tf
from edgesparse._registry import Registry
from edgesparse.data.arrays import model_feed
from edgesparse.errors import RecipeError


@dataclass(frozen=True)
class ConverterMode:
    """How one quantization mode configures the TFLite converter."""

    name: str
    integer: bool  # the exported model computes in integers (int8, or int16 activations with int8 weights)
    needs_calibration: bool = False  # a representative dataset is given to the converter
    float16: bool = False
    int16_activations: bool = False  # 16x8: int16 activations, int8 weights
    #: the converter's sparse encoding gives correct models in this mode (int16x8: it does not, see the module doc)
    sparse_encoding: bool = True

    @property
    def io_types(self) -> tuple[str, ...]:
        """The ``export.io`` values this mode's converter accepts."""
        if self.int16_activations:
            return ("float32", "int16")
        return ("float32", "int8") if self.integer else ("float32",)

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
    ConverterMode("int16x8", integer=True, needs_calibration=True, int16_activations=True, sparse_encoding=False),
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
    per_channel: bool = True,
) -> None:
    """Set the TFLite converter up for ``mode``.

    Args:
        converter: A ``tf.lite.TFLiteConverter``.
        mode: A registered quantization mode.
        sparse_encoding: Store sparse weights in the converter's sparse format (CSR / blocks).
        representative: Calibration samples (from the training split) for integer modes.
        io: "float32", "int8" (int8, qat, pqat) or "int16" (int16x8) model inputs/outputs.
        per_channel: One weight scale per output channel (the converter's default); False: one per tensor
            (post-training int8 only: 12 bytes less per output channel of every kernel and bias).

    Raises:
        RecipeError: ``io`` is not one of the mode's I/O types (:attr:`ConverterMode.io_types`).
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
        converter.representative_dataset = _calibration(representative)
    if cm.int16_activations:
        ops = tf.lite.OpsSet
        converter.target_spec.supported_ops = [ops.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    elif cm.integer:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if not per_channel:
        if mode != "int8":
            raise RecipeError(f"per-tensor weight scales (export.per_channel: false) are for post-training int8, "
                              f"not quantization.mode {mode}")
        converter._experimental_disable_per_channel = True
    if io not in cm.io_types:
        raise RecipeError(io_message(mode, io))
    if io in ("int8", "int16"):
        converter.inference_input_type = converter.inference_output_type = getattr(tf, io)


def _calibration(representative: Any) -> Any:
    """The converter's ``representative_dataset``: one sample at a time (several inputs: fed by signature name)."""
    if isinstance(representative, dict):
        named = {k: np.asarray(v) for k, v in representative.items()}
        count = len(next(iter(named.values())))

        def gen_named() -> Any:
            for i in range(count):
                yield {k: model_feed(v[i:i + 1]) for k, v in named.items()}

        return gen_named
    samples = list(representative)

    def gen() -> Any:
        for s in samples:
            yield [model_feed(s[None, ...])]

    return gen


def io_message(mode: str, io: str) -> str:
    """Why ``export.io: io`` does not go with ``quantization.mode: mode``, and what does."""
    cm = CONVERTER_MODES.get(mode)
    if io == "int8" and cm.int16_activations:
        return (f"export.io: int8 does not go with quantization.mode: {mode}: its activations are int16 and the "
                "TFLite converter takes only float32 or int16 inputs and outputs for it. Use export.io: int16 "
                "(int16 tensors in and out, with their scale and zero point) or float32, or mode int8 for int8 I/O.")
    if io == "int16":
        return (f"export.io: int16 needs quantization.mode: int16x8 (int16 activations), not '{mode}'; use "
                "export.io: int8 with int8/qat/pqat, or float32.")
    return (f"export.io: {io} needs an integer quantization mode ("
            + ", ".join(n for n in CONVERTER_MODES.names() if io in CONVERTER_MODES.get(n).io_types)
            + f"), not '{mode}'.")
