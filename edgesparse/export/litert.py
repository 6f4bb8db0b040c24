"""Running .tflite models on the host with LiteRT, for verification.

XNNPACK (LiteRT's default delegate) can refuse some models, for example sparse int8
FULLY_CONNECTED layers ("failed to delegate"); the builtin resolver runs them. ``auto`` tries
XNNPACK first and records which resolver ran and why it fell back. XNNPACK can also load a model
and take none of its ops: int16x8 models (int16 activations) load under the default resolver with
every op left to the builtin kernels (ai-edge-litert 2.3, measured: 0 of 7 ops delegated, the same
latency as ``BUILTIN_WITHOUT_DEFAULT_DELEGATES``), so they need no fallback; ``delegation`` says
how many ops XNNPACK took.

Several inputs and outputs: the converter orders a model's tensors by their signature names, not
in the Keras order, so inputs are fed and outputs read by name (the signature's names are the Keras
input and output names).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgesparse.device import runner
from edgesparse.device.runner import dequantize as dequantize_output
from edgesparse.device.runner import quantize as quantize_input
from edgesparse.errors import ExportError
from edgesparse.task import unwrapped_name


@dataclass
class LoadedModel:
    """An allocated interpreter and how it was obtained."""

    interpreter: Any
    resolver: str  # "xnnpack" | "builtin"
    fallback_reason: str | None
    delegation: dict[str, Any] | None = None  # runner.op_delegation: ops XNNPACK took, ops the builtin kernels run


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
    return LoadedModel(made["interpreter"], made["resolver"], made["reason"], runner.op_delegation(made["interpreter"]))


def signature_names(interp: Any) -> tuple[dict[int, str], dict[int, str]]:
    """Tensor index -> signature name, for inputs and for outputs (empty when the model has no signature)."""
    try:
        sigs = interp.get_signature_list()
        if not sigs:
            return {}, {}
        runner_ = interp.get_signature_runner(next(iter(sigs)))
        ins = {int(d["index"]): name for name, d in runner_.get_input_details().items()}
        outs = {int(d["index"]): name for name, d in runner_.get_output_details().items()}
        return ins, outs
    except (ValueError, RuntimeError, KeyError, AttributeError):
        return {}, {}


def _match(details: list[dict[str, Any]], names: dict[int, str], wanted: list[str] | None) -> list[dict[str, Any]]:
    """``details`` in the order of ``wanted`` names (by signature name, tfmot's ``quant_`` prefix ignored), else as
    they are."""
    if not wanted or len(details) == 1:
        return details
    by_name = {unwrapped_name(names.get(int(d["index"]), ""), wanted): d for d in details}
    if all(w in by_name for w in wanted):
        return [by_name[w] for w in wanted]
    return details


def predict(loaded: LoadedModel, x: Any, chunk: int = 128, input_names: list[str] | None = None,
            output_names: list[str] | None = None) -> Any:
    """Run every sample of ``x`` (float inputs) and return float outputs.

    Float inputs are quantized for integer-input models and integer outputs dequantized, with the
    tensors' own scale and zero point. A dynamic batch axis is resized to run chunks at once; a static one (a
    recurrent model's batch of 1) runs batch by batch, with a stateful model's variables reset before each.

    Args:
        loaded: The interpreter.
        x: One array, or a dict of arrays by input name (several inputs).
        chunk: Samples per invoke when the batch axis is dynamic.
        input_names: The Keras input names, in order (several inputs: matched by signature name).
        output_names: The Keras output names; with several outputs the result is a dict by these names.

    Returns:
        One array for a single output, else a dict by output name.
    """
    interp = loaded.interpreter
    in_names, out_names = signature_names(interp)
    feeds_named = isinstance(x, Mapping)
    keys = list(x) if feeds_named else None
    ins = _match(interp.get_input_details(), in_names, keys or input_names)
    outs = _match(interp.get_output_details(), out_names, output_names)
    arrays = [np.asarray(x[k]) for k in keys] if feeds_named and keys else [np.asarray(x)]
    if len(arrays) != len(ins):
        raise ExportError(f"the TFLite model has {len(ins)} inputs but {len(arrays)} arrays were given.")
    n_total = len(arrays[0])
    first = ins[0]
    dynamic_batch = int(first["shape_signature"][0]) == -1 if len(first["shape_signature"]) else False
    step = chunk if dynamic_batch else int(first["shape"][0])
    results: list[list[np.ndarray]] = [[] for _ in outs]
    current = int(first["shape"][0])
    stateful = runner.has_state(interp)  # a fused LSTM's state: reset before each batch, as Keras starts from zeros
    for start in range(0, n_total, step):
        batches = [a[start:start + step] for a in arrays]
        n = len(batches[0])
        if dynamic_batch and n != current:
            for d, b in zip(ins, batches):
                interp.resize_tensor_input(d["index"], [n, *b.shape[1:]])
            interp.allocate_tensors()
            ins = _match(interp.get_input_details(), in_names, keys or input_names)
            outs = _match(interp.get_output_details(), out_names, output_names)
            current = n
        elif not dynamic_batch and n != current:
            batches = [np.concatenate([b, np.zeros((current - n, *b.shape[1:]), dtype=b.dtype)]) for b in batches]
        if stateful:
            runner.reset_state(interp)
        for d, b in zip(ins, batches):
            interp.set_tensor(d["index"], quantize_input(b, d))
        interp.invoke()
        for i, d in enumerate(outs):
            results[i].append(dequantize_output(interp.get_tensor(d["index"]), d)[:n])
    arrays_out = [np.concatenate(r) if r else np.zeros((0,)) for r in results]
    if len(arrays_out) == 1:
        return arrays_out[0]
    return dict(zip(_output_keys(outs, out_names, output_names), arrays_out))


def _output_keys(outs: list[dict[str, Any]], out_names: dict[int, str], output_names: list[str] | None) -> list[str]:
    """The names of several outputs: the Keras names they are (wrapper prefixes ignored), else as signed."""
    sig = [out_names.get(int(d["index"])) for d in outs]
    if output_names and all(sig) and sorted(unwrapped_name(str(n), output_names) for n in sig) == sorted(output_names):
        names = [unwrapped_name(str(n), output_names) for n in sig]
    elif all(sig):
        names = [str(n) for n in sig]
    else:
        names = output_names if output_names and len(output_names) == len(outs) else \
            [f"output_{i}" for i in range(len(outs))]
    return names


def fc_shape_mismatches(model: bytes) -> list[str]:
    """FULLY_CONNECTED ops reading block-sparse int8 weights whose input depth is no multiple of the 16-wide block.

    Measured here (TF 2.21 converter, ai-edge-litert 2.3): with the sparse encoding and int8, a Dense layer with
    8 inputs was stored in 1x16 blocks (read by the FC kernel directly, no DENSIFY), which misreads them: an
    autoencoder whose decoder starts from an 8-unit bottleneck went from test AUC 86.8% to 65.1%.

    Returns:
        ``name (N inputs)`` for each such op.
    """
    from edgesparse.device.runner import import_runtime

    try:
        interp = import_runtime().interpreter_cls(model_content=model)
        interp.allocate_tensors()
        details = {int(t["index"]): t for t in interp.get_tensor_details()}
        ops = interp._get_ops_details()  # noqa: SLF001 - the only API listing ops and their tensors
    except (ValueError, RuntimeError, AttributeError):
        return []
    found = []
    for op in ops:
        if op.get("op_name") != "FULLY_CONNECTED" or len(op.get("inputs", [])) < 2:
            continue
        inp, weights = details.get(int(op["inputs"][0])), details.get(int(op["inputs"][1]))
        if inp is None or weights is None or len(weights["shape"]) != 2 or not len(inp["shape"]):
            continue
        try:
            stored = int(np.asarray(interp.get_tensor(int(weights["index"]))).size)
        except ValueError:
            continue
        depth = int(inp["shape"][-1])
        if stored != int(np.prod(weights["shape"])) and depth % 16:
            name = details[int(op["outputs"][0])]["name"] if op.get("outputs") else "?"
            found.append(f"{name.split(';')[0]} ({depth} inputs)")
    return found
