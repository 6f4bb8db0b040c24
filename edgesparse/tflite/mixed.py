"""Which ops of a quantized flatbuffer compute in float (``quantization.keep_float``'s mixed models)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgesparse.tflite.inspect import ModelInspection, inspect_tflite

#: ops that move values between float and integers, or expand weights: they compute nothing themselves
_CONVERSIONS = ("QUANTIZE", "DEQUANTIZE", "DENSIFY")
_INTEGER = ("int8", "uint8", "int16")


def guess_layer(tensor: str) -> str | None:
    """The layer a converter tensor name names, from its text alone: ``"model/fc1/MatMul;..."`` -> ``fc1``."""
    comps = tensor.split(";", maxsplit=1)[0].split("/")
    return comps[1] if len(comps) > 2 else None


def float_ops(model: str | Path | bytes | ModelInspection, layers: dict[str, str | None] | None = None
              ) -> list[dict[str, Any]]:
    """The ops of a model with integer activations that compute in float32 (none for an all-float model).

    Args:
        model: A flatbuffer (path or bytes) or its inspection.
        layers: Output tensor name -> Keras layer, when known (else the layer is guessed from the name).

    Returns:
        ``[{"index", "op", "tensor", "layer"}]`` in execution order.
    """
    info = model if isinstance(model, ModelInspection) else inspect_tflite(model)
    acts = [info.tensors[t].dtype for op in info.operators for t in op.outputs]
    if not any(d in _INTEGER for d in acts):
        return []
    out = []
    for op in info.operators:
        if op.op in _CONVERSIONS or not op.outputs or info.tensors[op.outputs[0]].dtype != "float32":
            continue
        name = info.tensors[op.outputs[0]].name
        layer = (layers or {}).get(name) or guess_layer(name)
        out.append({"index": op.index, "op": op.op, "tensor": name, "layer": layer})
    return out


def integer_ops(model: str | Path | bytes | ModelInspection) -> int:
    """How many ops compute in integers (their first output is an integer tensor, QUANTIZE left out)."""
    info = model if isinstance(model, ModelInspection) else inspect_tflite(model)
    return sum(1 for op in info.operators if op.op not in _CONVERSIONS and op.outputs
               and info.tensors[op.outputs[0]].dtype in _INTEGER)
