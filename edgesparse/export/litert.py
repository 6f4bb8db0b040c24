"""Running .tflite models on the host with LiteRT, for verification.

XNNPACK (LiteRT's default delegate) can refuse some models, for example sparse int8
FULLY_CONNECTED layers ("failed to delegate"); the builtin resolver runs them. ``auto`` tries
XNNPACK first and records which resolver ran and why it fell back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgesparse.device import runner
from edgesparse.device.runner import dequantize as dequantize_output
from edgesparse.device.runner import quantize as quantize_input
from edgesparse.errors import ExportError


@dataclass
class LoadedModel:
    """An allocated interpreter and how it was obtained."""

    interpreter: Any
    resolver: str  # "xnnpack" | "builtin"
    fallback_reason: str | None


def load_interpreter(model: bytes, threads: int = 1, resolver: str = "auto") -> LoadedModel:
    """Create and allocate a LiteRT interpreter, falling back to the builtin resolver.

    The same code as the device runner's (``edgesparse.device.runner.make_interpreter``), so the host
    verifies with exactly the resolver logic that runs on the device.

    Args:
        model: The flatbuffer.
        threads: Interpreter threads.
        resolver: "auto" (XNNPACK, else builtin) or "builtin".

    Raises:
        ExportError: the model cannot be loaded by either resolver.
    """
    try:
        made = runner.make_interpreter(runner.import_runtime(), "<in memory>", threads, resolver,
                                       model_content=model)
    except runner.RunnerError as exc:
        raise ExportError(f"LiteRT cannot load the converted model: {exc}") from None
    return LoadedModel(made["interpreter"], made["resolver"], made["reason"])


def predict(loaded: LoadedModel, x: np.ndarray, chunk: int = 128) -> np.ndarray:
    """Run every sample of ``x`` (float inputs) and return float outputs.

    Float inputs are quantized for integer-input models and integer outputs dequantized, with the
    tensors' own scale and zero point. A dynamic batch axis is resized to run chunks at once.
    """
    interp = loaded.interpreter
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    dynamic_batch = int(inp["shape_signature"][0]) == -1 if len(inp["shape_signature"]) else False
    step = chunk if dynamic_batch else int(inp["shape"][0])
    results = []
    current = int(inp["shape"][0])
    for start in range(0, len(x), step):
        batch = x[start:start + step]
        n = len(batch)
        if dynamic_batch and n != current:
            interp.resize_tensor_input(inp["index"], [n, *inp["shape"][1:]])
            interp.allocate_tensors()
            inp = interp.get_input_details()[0]
            out = interp.get_output_details()[0]
            current = n
        elif not dynamic_batch and n != current:
            pad = np.zeros((current - n, *batch.shape[1:]), dtype=batch.dtype)
            batch = np.concatenate([batch, pad])
        interp.set_tensor(inp["index"], quantize_input(batch, inp))
        interp.invoke()
        results.append(dequantize_output(interp.get_tensor(out["index"]), out)[:n])
    return np.concatenate(results) if results else np.zeros((0,))
