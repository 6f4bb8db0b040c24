"""Footprint of a .tflite model, computed from the flatbuffer alone (no device, no TensorFlow).

File and gzip bytes, parameters and non-zeros, per-tensor storage (dense, CSR, blocks), the bytes
the runtime holds for weights (densified ones at full size), an activation-memory estimate, MACs of
a dense execution and MACs touching non-zero weights, and whether XNNPACK's sparse inference path
can apply — checked against the documented conditions (TFLite XNNPACK delegate README, "Sparse
Inference"), not guessed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse.export.inspect import ModelInspection, inspect_tflite

# Ops allowed inside an XNNPACK sparse subgraph besides 1x1 CONV_2D and 3x3/5x5 depthwise.
_SPARSE_UNARY = {"ABS", "CEIL", "ELU", "FLOOR", "HARD_SWISH", "LEAKY_RELU", "LOGISTIC", "NEG", "RELU", "RELU6",
                 "RELU_N1_TO_1", "ROUND", "SQUARE"}
_WEIGHT_PREP = {"DENSIFY", "DEQUANTIZE"}


@dataclass
class Footprint:
    """What a model costs in storage, memory and compute (see module docstring)."""

    path: str | None
    file_bytes: int
    gzip_bytes: int
    params: int
    nonzero_params: int
    weight_stored_bytes: int
    weight_dense_bytes: int
    weight_runtime_bytes: int
    activation_bytes: int
    macs_dense: int
    macs_nonzero: int
    densify_ops: int
    tensors: list[dict[str, Any]]
    layers: list[dict[str, Any]]
    xnnpack_sparse: dict[str, Any]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _const_source(info: ModelInspection, tensor: int) -> int:
    """Follow DENSIFY/DEQUANTIZE back to the constant tensor holding a weight."""
    producer = {o: op for op in info.operators for o in op.outputs}
    seen = 0
    while tensor in producer and producer[tensor].op in _WEIGHT_PREP and seen < 4:
        tensor = producer[tensor].inputs[0]
        seen += 1
    return tensor


def _macs(info: ModelInspection) -> tuple[int, int, list[dict[str, Any]]]:
    dense = nonzero = 0
    layers = []
    by_index = {w.tensor_index: w for w in info.weights}
    for op in info.operators:
        if op.op not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") or len(op.inputs) < 2:
            continue
        out_shape = info.tensors[op.outputs[0]].shape
        w_idx = _const_source(info, op.inputs[1])
        w_info = by_index.get(w_idx)
        w_shape = info.tensors[w_idx].shape
        decoded = info.decoded.get(w_idx)
        nnz = int(np.count_nonzero(decoded)) if decoded is not None else int(np.prod(w_shape))
        if op.op == "CONV_2D":  # filter [Co, Kh, Kw, Ci], output [N, H, W, Co]
            positions = int(np.prod(out_shape[:-1]))
            d = positions * int(np.prod(w_shape))
            n = positions * nnz
        elif op.op == "DEPTHWISE_CONV_2D":  # filter [1, Kh, Kw, Co]
            positions = int(np.prod(out_shape[:-1]))
            d = positions * int(np.prod(w_shape))
            n = positions * nnz
        else:  # FULLY_CONNECTED: weights [Co, Ci], output [..., Co]
            rows = int(np.prod(out_shape)) // max(1, int(w_shape[0]))
            d = rows * int(np.prod(w_shape))
            n = rows * nnz
        dense += d
        nonzero += n
        layers.append({"op": op.op, "weight": w_info.name if w_info else str(w_idx), "shape": w_shape,
                       "macs_dense": d, "macs_nonzero": n,
                       "stored_bytes": w_info.stored_bytes if w_info else None,
                       "runtime_bytes": w_info.runtime_bytes if w_info else None,
                       "encoding": w_info.encoding if w_info else None})
    return dense, nonzero, layers


def _activation_bytes(info: ModelInspection) -> int:
    """Peak of the summed sizes of live activation tensors over the execution order.

    An estimate (a lower bound of the arena the runtime plans; the real planner may add
    alignment and cannot always reuse memory perfectly). Weights, including the outputs of
    DENSIFY/DEQUANTIZE on constants, are not activations.
    """
    const = {w.tensor_index for w in info.weights} | {t.index for t in info.tensors if t.has_data}
    prep_outputs = {o for op in info.operators if op.op in _WEIGHT_PREP and op.inputs and op.inputs[0] in const
                    for o in op.outputs}
    skip = const | prep_outputs
    n_ops = len(info.operators)
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for t in (inp["index"] for inp in info.inputs):
        first[t] = -1
    for step, op in enumerate(info.operators):
        for t in op.outputs:
            first.setdefault(t, step)
        for t in op.inputs:
            if t >= 0:
                last[t] = step
    for t in (out["index"] for out in info.outputs):
        last[t] = n_ops
    sizes = {t.index: int(np.prod(t.shape or [1]) * t.itemsize) for t in info.tensors}
    peak = 0
    for step in range(-1, n_ops + 1):
        live = sum(sizes[t] for t, f in first.items() if t not in skip and f <= step <= last.get(t, f))
        peak = max(peak, live)
    return int(peak)


def xnnpack_sparse_check(info: ModelInspection) -> dict[str, Any]:
    """Whether XNNPACK's sparse inference could run this model, with the reasons it cannot.

    Conditions from the TFLite XNNPACK delegate README ("Sparse Inference"): weights stored sparse
    (DENSIFY ops); float32 model; the subgraph starts with a 3x3 stride-2 CONV_2D with 3 input
    channels, ends with a spatial MEAN (or DEPTH_TO_SPACE), and between them has only 1x1 CONV_2D
    (no padding), 3x3/5x5 DEPTHWISE_CONV_2D with stride 1 or 2, ADD, MUL, RESIZE_BILINEAR and a set of
    unary element-wise ops; at least 2/3 of the 1x1 CONV_2D filter weights are zero. The sparse
    kernels are built for ARM only.
    """
    reasons: list[str] = []
    ops = [op for op in info.operators if op.op not in _WEIGHT_PREP]
    if any(w.dtype in ("int8", "uint8") and w.role == "weight" for w in info.weights):
        reasons.append("the model is quantized to int8; XNNPACK's sparse kernels are float only")
    if info.densify_ops == 0:
        reasons.append("no weights are stored in the sparse format (no DENSIFY ops): export with sparse_encoding")
    compute = [i for i, op in enumerate(ops) if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    if not compute:
        reasons.append("the model has no convolution")
        return {"eligible": False, "reasons": reasons, "arm_only": True}
    start = ops[compute[0]]
    w_shape = info.tensors[_const_source(info, start.inputs[1])].shape if len(start.inputs) > 1 else []
    if not (start.op == "CONV_2D" and w_shape[1:3] == [3, 3] and start.options.get("strideH") == 2
            and start.options.get("strideW") == 2 and len(w_shape) == 4 and w_shape[3] == 3):
        reasons.append(f"the first compute op is {start.op} {w_shape} stride {start.options.get('strideH')}, not a 3x3 "
                       "stride-2 CONV_2D on 3 input channels")
    end = next((i for i, op in enumerate(ops) if op.op in ("MEAN", "DEPTH_TO_SPACE") and i > compute[0]), None)
    if end is None:
        reasons.append("no spatial MEAN (global average pooling) ends a convolutional part")
        end = len(ops)
    zeros = total = 0
    bad_ops: set[str] = set()
    for op in ops[compute[0] + 1:end]:
        if op.op == "CONV_2D":
            ws = info.tensors[_const_source(info, op.inputs[1])].shape
            if ws[1:3] != [1, 1] or op.options.get("padding") == 0 and ws[1:3] != [1, 1]:
                bad_ops.add(f"CONV_2D {ws[1]}x{ws[2]}")
                continue
            dec = info.decoded.get(_const_source(info, op.inputs[1]))
            if dec is not None:
                zeros += int(dec.size - np.count_nonzero(dec))
                total += int(dec.size)
        elif op.op == "DEPTHWISE_CONV_2D":
            ws = info.tensors[_const_source(info, op.inputs[1])].shape
            if ws[1:3] not in ([3, 3], [5, 5]) or op.options.get("strideH") not in (1, 2):
                bad_ops.add(f"DEPTHWISE_CONV_2D {ws[1]}x{ws[2]} stride {op.options.get('strideH')}")
        elif op.op not in ({"ADD", "MUL", "RESIZE_BILINEAR", "MEAN"} | _SPARSE_UNARY):
            bad_ops.add(op.op)
    if bad_ops:
        reasons.append("ops XNNPACK's sparse path does not take: " + ", ".join(sorted(bad_ops)))
    if total == 0:
        reasons.append("no 1x1 CONV_2D layers (the only layers the sparse path runs sparse)")
    elif zeros / total < 2 / 3:
        reasons.append(f"only {zeros / total:.0%} of the 1x1 CONV_2D weights are zero; at least 67% are needed")
    return {"eligible": not reasons, "reasons": reasons, "arm_only": True,
            "one_by_one_sparsity": zeros / total if total else None}


def footprint(path: str | Path) -> Footprint:
    """Compute the footprint of a .tflite file.

    Raises:
        ProfileError: the file is not a readable TFLite model.
    """
    info = inspect_tflite(path)
    weights = [w for w in info.weights if w.role in ("weight", "bias")] or info.weights
    macs_dense, macs_nonzero, layers = _macs(info)
    check = xnnpack_sparse_check(info)
    fp = Footprint(
        path=str(path), file_bytes=info.file_bytes, gzip_bytes=info.gzip_bytes,
        params=sum(w.elements for w in weights), nonzero_params=sum(w.nonzeros for w in weights),
        weight_stored_bytes=sum(w.stored_bytes for w in weights),
        weight_dense_bytes=sum(w.dense_bytes for w in weights),
        weight_runtime_bytes=sum(w.runtime_bytes for w in weights),
        activation_bytes=_activation_bytes(info), macs_dense=macs_dense, macs_nonzero=macs_nonzero,
        densify_ops=info.densify_ops,
        tensors=[{"name": w.name, "shape": w.shape, "dtype": w.dtype, "encoding": w.encoding,
                  "stored_bytes": w.stored_bytes, "dense_bytes": w.dense_bytes, "runtime_bytes": w.runtime_bytes,
                  "densified": w.densified, "sparsity": w.sparsity} for w in weights],
        layers=layers, xnnpack_sparse=check, inputs=info.inputs, outputs=info.outputs,
    )
    fp.notes = _notes(fp, info)
    return fp


def _notes(fp: Footprint, info: ModelInspection) -> list[str]:
    notes = []
    densified = [w for w in info.weights if w.densified]
    native = [w for w in info.weights if w.encoding != "dense" and not w.densified]
    if densified:
        notes.append(
            f"{len(densified)} weight tensor(s) are stored sparse but densified by DENSIFY ops when the model loads: "
            f"they take {sum(w.stored_bytes for w in densified):,} bytes in the file and "
            f"{sum(w.dense_bytes for w in densified):,} bytes in memory, and run on dense kernels.")
    if native:
        notes.append(
            f"{len(native)} block-sparse FULLY_CONNECTED weight tensor(s) are read sparse by the FC kernel (no DENSIFY): "
            f"{sum(w.stored_bytes for w in native):,} bytes in memory instead of {sum(w.dense_bytes for w in native):,}.")
    if fp.macs_dense:
        notes.append(f"MACs: {fp.macs_dense:,} dense, {fp.macs_nonzero:,} touch non-zero weights "
                     f"({fp.macs_nonzero / fp.macs_dense:.0%}); only sparse kernels turn that into time.")
    x = fp.xnnpack_sparse
    if x["eligible"]:
        notes.append("XNNPACK sparse inference can apply to this model — on ARM builds only (x86 runs dense kernels).")
    else:
        notes.append("XNNPACK sparse inference does not apply: " + "; ".join(x["reasons"]) + ".")
    return notes
