"""Per-op int8 quantization error, and selectively float models, on TensorFlow's QuantizationDebugger.

``tf.lite.experimental.QuantizationDebugger`` calibrates the model once, then quantizes it with a
NumericVerify op after every quantized op: each op runs quantized and in float on the *same*
(dequantized) input, so its row measures the error that op adds, not the error accumulated before it.
This module runs it on the calibration samples and turns its rows into :class:`OpError` (the Keras
layer an op came from, ``rmse``, ``rmse / scale`` — the error in quantization steps of the op's output
— and the output's int8 range), sorted worst first by ``rmse / scale``. The same debugger quantizes
the calibrated model again with some ops left out of quantization (its ``denylisted_nodes``: op output
tensor names) — the selectively float models of ``quantization.keep_float``.

What is kept from the debugger's outputs and what is computed here: ``rmse = sqrt(mean_squared_error)``
(its per-sample mean of squared differences, averaged over the samples), ``scale`` and ``zero_point``
are the op output's, and the range is what int8 covers with them: ``scale * ([-128, 127] - zero_point)``.
The quantizer the debugger drives makes int8 models with float32 inputs and outputs, without the
converter's sparse encoding: the pruned zeros stay in the dense int8 (and float) kernels.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgesparse import _tf
from edgesparse.data.arrays import model_feed
from edgesparse.errors import ExportError
from edgesparse.export.convert import quiet_converter
from edgesparse.export.litert import load_interpreter, signature_names
from edgesparse.export.modes import configure_converter
from edgesparse.tflite import inspect_tflite

#: calibration samples the debugger runs its NumericVerify model on (each op's error is averaged over them)
DEBUG_SAMPLES = 100
_INT8 = (-128, 127)
_NOT_OPS = ("QUANTIZE", "DEQUANTIZE", "DENSIFY")


@dataclass
class OpError:
    """One quantized op of the int8 model and the error quantizing it adds.

    Attributes:
        layer: The Keras layer it came from (None when its tensor name names none).
        op: The TFLite operator (``FULLY_CONNECTED``...).
        tensor: Its output tensor's name (what ``denylisted_nodes`` takes).
        rmse: Root mean squared difference between its quantized and float outputs.
        rmse_over_scale: ``rmse / scale``: the error in quantization steps of its output.
        range: The float range its int8 output covers.
        scale: Its output's quantization scale.
        zero_point: Its output's zero point.
        max_abs_error: The debugger's largest absolute difference (averaged over samples).
        metric_if_float: The task's primary metric of the int8 model with only this op kept float (None: not
            measured).
        drop_if_float: That model's degradation vs Keras (points for fractions, % for errors).
    """

    layer: str | None
    op: str
    tensor: str
    rmse: float
    rmse_over_scale: float
    range: tuple[float, float]
    scale: float
    zero_point: int
    max_abs_error: float
    metric_if_float: float | None = None
    drop_if_float: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``range`` as ``[low, high]``)."""
        return {"layer": self.layer, "op": self.op, "tensor": self.tensor, "rmse": self.rmse,
                "rmse_over_scale": self.rmse_over_scale, "range": list(self.range), "scale": self.scale,
                "zero_point": self.zero_point, "max_abs_error": self.max_abs_error,
                "metric_if_float": self.metric_if_float, "drop_if_float": self.drop_if_float}

    @property
    def where(self) -> str:
        """``"fc1 (FULLY_CONNECTED, range 0 to 207, rmse 2.2 = 2.7 steps)"``."""
        lo, hi = self.range
        return (f"{self.layer or self.tensor} ({self.op}, range {lo:.3g} to {hi:.3g}, rmse {self.rmse:.3g} = "
                f"{self.rmse_over_scale:.2g} steps)")


def keras_layer_names(model: Any) -> list[str]:
    """Names of the model's layers, nested models' layers included (what a tensor name may name)."""
    names: list[str] = []
    for layer in model.layers:
        names.append(layer.name)
        if hasattr(layer, "layers"):
            names += keras_layer_names(layer)
    return names


def layer_of(tensor: str, layers: set[str], outputs: dict[str, str], model_name: str = "") -> str | None:
    """The Keras layer a converter tensor name names (``"model/fc1/MatMul;model/fc1/Relu"`` -> ``fc1``).

    Args:
        tensor: The op's output tensor name.
        layers: The model's layer names.
        outputs: Output tensor name -> the model output's (its layer's) name, for the ops whose output is a
            model output (their tensor is named after the signature, e.g. ``StatefulPartitionedCall:0``).
        model_name: The model's name (the first path component, not a layer).
    """
    if tensor in outputs:
        return outputs[tensor]
    for part in tensor.split(";"):
        comps = part.split("/")
        for comp in comps[1:] if comps and comps[0] == model_name else comps:
            if comp in layers:
                return comp
    return None


class QuantDebugger:
    """TensorFlow's QuantizationDebugger on a Keras model, calibrated for int8 on ``representative``.

    Args:
        model: The (stripped) float Keras model.
        representative: Calibration samples (an array of samples, or a dict by input name).
        samples: How many of them the per-op statistics run on.

    Raises:
        ExportError: the converter or the debugger failed on this model.
    """

    def __init__(self, model: Any, representative: Any, samples: int = DEBUG_SAMPLES) -> None:
        tf = _tf.tf()
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        configure_converter(converter, "int8", sparse_encoding=False, representative=representative, io="float32")
        self._samples = representative
        self._count = samples
        try:
            with warnings.catch_warnings(), quiet_converter():
                warnings.simplefilter("ignore")
                self._dbg = tf.lite.experimental.QuantizationDebugger(converter=converter,
                                                                      debug_dataset=self._dataset)
        except Exception as exc:  # the converter's errors are plain Exceptions
            raise ExportError(f"TensorFlow's QuantizationDebugger failed on model '{model.name}': "
                              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
                              ) from exc
        self.layers = keras_layer_names(model)
        calibrated = self._dbg.calibrated_model
        ins, outs = signature_names(load_interpreter(calibrated, resolver="builtin").interpreter)
        info = inspect_tflite(calibrated)
        self._input_order = [ins.get(t.index, t.name) for t in info.inputs]
        out_names = {info.tensors[i].name: name for i, name in outs.items()}
        known = set(self.layers)
        #: every op of the calibrated (float) model: (op, output tensor name, Keras layer)
        self.ops = [(o.op, info.tensors[o.outputs[0]].name,
                     layer_of(info.tensors[o.outputs[0]].name, known, out_names, model.name))
                    for o in info.operators if o.outputs and o.op not in _NOT_OPS]

    def _dataset(self) -> Iterator[list[np.ndarray]]:
        """The debug samples, one at a time, as the positional input list the debugger's interpreter takes."""
        reps = self._samples
        if isinstance(reps, dict):
            keys = [k if k in reps else list(reps)[i] for i, k in enumerate(self._input_order)]
            n = min(self._count, len(next(iter(reps.values()))))
            for i in range(n):
                yield [model_feed(reps[k][i:i + 1]) for k in keys]
        else:
            for s in list(reps)[:self._count]:
                yield [model_feed(s)[None, ...]]

    def rows(self) -> list[OpError]:
        """Every quantized op's error, worst (largest ``rmse / scale``) first, from the debugger's own dump."""
        with warnings.catch_warnings(), quiet_converter():
            warnings.simplefilter("ignore")
            self._dbg.run()
        buf = io.StringIO()
        self._dbg.layer_statistics_dump(buf)
        by_tensor = {t: layer for _, t, layer in self.ops}
        rows = []
        for s in csv.DictReader(io.StringIO(buf.getvalue())):
            scale, zp = float(s["scale"]), int(float(s["zero_point"]))
            rmse = math.sqrt(max(0.0, float(s["mean_squared_error"])))
            rows.append(OpError(layer=by_tensor.get(s["tensor_name"]), op=s["op_name"], tensor=s["tensor_name"],
                                rmse=rmse, rmse_over_scale=rmse / scale if scale > 0 else float("inf"),
                                range=(scale * (_INT8[0] - zp), scale * (_INT8[1] - zp)), scale=scale,
                                zero_point=zp, max_abs_error=float(s["max_abs_error"])))
        return sorted(rows, key=lambda r: -r.rmse_over_scale)

    def model(self, float_tensors: list[str]) -> bytes:
        """The int8 model with the ops writing ``float_tensors`` kept float32 (``[]``: plain int8).

        Raises:
            ExportError: the quantizer failed.
        """
        tf = _tf.tf()
        try:
            # every op denylisted leaves the debug model no op to verify: TF raises ValueError here
            self._dbg.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(float_tensors))
            with warnings.catch_warnings(), quiet_converter():
                warnings.simplefilter("ignore")
                return bytes(self._dbg.get_nondebug_quantized_model())
        except Exception as exc:  # the quantizer's errors are plain Exceptions
            raise ExportError(f"the int8 quantizer failed keeping {len(float_tensors)} op(s) float: "
                              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
                              ) from exc

    def tensors_of(self, layers: list[str]) -> list[str]:
        """Output tensor names of every op that came from one of ``layers``."""
        wanted = set(layers)
        return [t for _, t, layer in self.ops if layer in wanted]
