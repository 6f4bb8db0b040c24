"""Footprint of a .tflite model, computed from the flatbuffer alone (no device, no TensorFlow).

File and gzip bytes; parameters and non-zeros; weight bytes as stored in the file and as held by
the runtime (sparse weights behind a DENSIFY op are expanded at load, so they only shrink the
file); an activation-memory estimate; MACs of a dense execution and MACs touching non-zero
weights; and whether XNNPACK's sparse inference path can apply, checked op by op against the
conditions documented in the TFLite XNNPACK delegate README ("Sparse Inference") and implemented in
XNNPACK's ``xnn_check_nchw_compatibility`` / ``xnn_subgraph_rewrite_for_nchw`` (src/subgraph.c).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse.tflite.inspect import WEIGHT_PREP, ModelInspection, OpInfo, WeightInfo, inspect_tflite

_COMPUTE = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D", "BATCH_MATMUL")
_QUANTIZED = {"int8", "uint8", "int16", "int4"}


@dataclass
class TensorStorage:
    """How one parameter tensor is stored and held (see :class:`~edgesparse.tflite.inspect.WeightInfo`)."""

    name: str
    shape: list[int]
    dtype: str
    role: str
    encoding: str
    elements: int
    nonzeros: int
    sparsity: float
    stored_bytes: int
    dense_bytes: int
    runtime_bytes: int
    densified: bool


@dataclass
class LayerCost:
    """Size and compute of one operator that holds parameters or does MACs.

    Attributes:
        index: Operator position in the execution order.
        op: Operator name.
        output_shape: Shape of its first output.
        weights: Names of its parameter tensors (weight, bias...).
        encoding: Encoding of its main weight (``dense``, ``csr``, ``block 1x4``...).
        params: Elements of its parameter tensors.
        nonzero_params: Their non-zero elements.
        stored_bytes: Their bytes in the file.
        runtime_bytes: Their bytes as the kernel reads them.
        macs_dense: Multiply-accumulates of a dense execution (0 for ops without a reduction).
        macs_nonzero: MACs that touch a non-zero weight.
    """

    index: int
    op: str
    output_shape: list[int]
    weights: list[str]
    encoding: str
    params: int
    nonzero_params: int
    stored_bytes: int
    runtime_bytes: int
    macs_dense: int
    macs_nonzero: int


@dataclass
class Footprint:
    """What a model costs in storage, memory and compute.

    Attributes:
        path: The model file.
        file_bytes: Size of the .tflite file.
        gzip_bytes: Size after gzip level 9.
        params: Elements of all parameter tensors (weights, biases, other float constants).
        nonzero_params: Their non-zero elements.
        weight_stored_bytes: Parameter bytes in the file (sparse values plus index arrays).
        weight_dense_bytes: Parameter bytes if every tensor were dense in its stored dtype.
        weight_runtime_bytes: Parameter bytes in the form the kernels read them, after DENSIFY
            (and DEQUANTIZE of float16 weights) expand them when the model loads.
        activation_bytes: Estimated peak of live activation bytes (see :func:`activation_bytes`).
        activation_total_bytes: Sum of all activation tensors' bytes (no reuse at all).
        macs_dense: MACs of a dense execution (conv, depthwise, FC, transpose conv, batch matmul).
        macs_nonzero: MACs touching non-zero weights (exact, from the decoded weights).
        densify_ops: Number of DENSIFY ops.
        sparse_tensors: Parameter tensors stored in the sparse format.
        tensors: Per-tensor storage.
        layers: Per-operator size and MACs (execution order), for tables and plots.
        by_op: The same summed per operator type.
        xnnpack_sparse: ``{"eligible", "reasons", ...}`` from :func:`xnnpack_sparse_check`.
        inputs: Model inputs (name, shape, shape_signature, dtype, scale, zero_point).
        outputs: Model outputs.
        shapes_exact: False when some activation has a dimension only known at run time besides
            the batch (e.g. the converter computes shapes with SHAPE ops for a dynamic batch): the
            file then holds placeholder shapes and MACs/activation bytes of those ops are not exact.
        notes: Plain statements a reader needs to interpret the numbers.
    """

    path: str | None
    file_bytes: int
    gzip_bytes: int
    params: int
    nonzero_params: int
    weight_stored_bytes: int
    weight_dense_bytes: int
    weight_runtime_bytes: int
    activation_bytes: int
    activation_total_bytes: int
    macs_dense: int
    macs_nonzero: int
    densify_ops: int
    sparse_tensors: int
    tensors: list[TensorStorage]
    layers: list[LayerCost]
    by_op: dict[str, dict[str, int]]
    xnnpack_sparse: dict[str, Any]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    shapes_exact: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def sparsity(self) -> float:
        """Fraction of zero parameters."""
        return 1.0 - self.nonzero_params / self.params if self.params else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        d = asdict(self)
        d["sparsity"] = self.sparsity
        return d


class _Graph:
    """Producer/consumer maps of the main subgraph."""

    def __init__(self, info: ModelInspection) -> None:
        self.info = info
        self.producer: dict[int, OpInfo] = {o: op for op in info.operators for o in op.outputs}
        self.consumers: dict[int, list[OpInfo]] = {}
        for op in info.operators:
            for t in op.inputs:
                if t >= 0:
                    self.consumers.setdefault(t, []).append(op)
        self.const = {t.index for t in info.tensors if t.has_data}
        # DENSIFY/DEQUANTIZE of a constant run once at load: their outputs are weights, not activations
        self.prepared: set[int] = set()
        for op in info.operators:
            if op.op in WEIGHT_PREP and op.inputs and (op.inputs[0] in self.const or op.inputs[0] in self.prepared):
                self.prepared.update(op.outputs)

    def source(self, t: int) -> int:
        """The constant behind a weight input, looking through DENSIFY/DEQUANTIZE."""
        for _ in range(4):
            op = self.producer.get(t)
            if op is None or op.op not in WEIGHT_PREP or not op.inputs:
                break
            t = op.inputs[0]
        return t

    def is_static(self, t: int) -> bool:
        return t in self.const or t in self.prepared

    def weight(self, op: OpInfo, slot: int) -> WeightInfo | None:
        if slot >= len(op.inputs) or op.inputs[slot] < 0:
            return None
        return self.info.weight(self.source(op.inputs[slot]))

    def shape(self, t: int) -> list[int]:
        return self.info.tensors[t].shape if 0 <= t < len(self.info.tensors) else []


def _prod(shape: list[int]) -> int:
    return int(np.prod(shape)) if shape else 1


def _macs(g: _Graph, op: OpInfo) -> tuple[int, int]:
    """(dense MACs, MACs touching non-zero weights) of one op; (0, 0) when it has no reduction."""
    if op.op not in _COMPUTE or len(op.inputs) < 2 or not op.outputs:
        return 0, 0
    out = g.shape(op.outputs[0])
    if op.op == "BATCH_MATMUL":
        a, b = g.shape(op.inputs[0]), g.shape(op.inputs[1])
        if len(a) < 2 or len(b) < 2:
            return 0, 0
        k = a[-2] if op.options.get("adj_x") else a[-1]
        dense = _prod(out) * k
        # every element of a constant operand is used equally often: non-zero MACs scale exactly
        for slot in (1, 0):
            w = g.weight(op, slot)
            if w is not None and w.elements:
                return dense, dense * w.nonzeros // w.elements
        return dense, dense
    w = g.weight(op, 1)
    w_shape = g.shape(g.source(op.inputs[1]))
    size = _prod(w_shape)
    nnz = w.nonzeros if w is not None else size
    if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D", "CONV_3D"):
        # each output position computes every output channel over its whole filter (grouped conv
        # and depth multipliers included: the filter shape already says how many inputs each uses)
        positions = _prod(out[:-1])
    elif op.op == "FULLY_CONNECTED":
        positions = _prod(out) // max(1, w_shape[0] if w_shape else 1)
    else:  # TRANSPOSE_CONV, scatter form: each input position times the whole filter
        positions = _prod(g.shape(op.inputs[2])[:-1]) if len(op.inputs) > 2 else 0
    return positions * size, positions * nnz


def activation_bytes(info: ModelInspection) -> tuple[int, int]:
    """Estimate the activation memory of the main subgraph.

    Every non-constant tensor lives from the op that produces it (model inputs: from the start) to
    the last op that reads it (model outputs and variables: to the end); the estimate is the peak,
    over the execution order, of the summed bytes of live tensors. It is an estimate: a lower bound
    of the arena TFLite plans (the planner adds alignment and cannot always pack perfectly, and
    kernels add scratch buffers), computed with dynamic dimensions at their default size.
    Weights — including the dense copies DENSIFY/DEQUANTIZE make of constants — are not counted.

    Args:
        info: The inspection.

    Returns:
        (peak live bytes, sum of all activation tensors' bytes).
    """
    g = _Graph(info)
    n = len(info.operators)
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for io in info.inputs:
        first[io.index] = 0
    for step, op in enumerate(info.operators):
        for t in op.outputs:
            first.setdefault(t, step)
            last.setdefault(t, step)
        for t in op.inputs:
            if t >= 0:
                last[t] = max(last.get(t, step), step)
                first.setdefault(t, 0)  # read before any op writes it: an input or a variable
    for io in info.outputs:
        last[io.index] = max(n - 1, 0)
    for tensor in info.tensors:
        if tensor.is_variable and tensor.index in first:
            first[tensor.index], last[tensor.index] = 0, max(n - 1, 0)
    delta = np.zeros(n + 2, dtype=np.int64)
    total = 0
    for t, start in first.items():
        if g.is_static(t):
            continue
        size = info.tensors[t].nbytes
        total += size
        delta[start] += size
        delta[last.get(t, start) + 1] -= size
    peak = int(np.cumsum(delta).max()) if n or first else 0
    return max(peak, 0), total


# ---------------------------------------------------------------------------------------------
# XNNPACK sparse inference

# Unary element-wise ops the sparse (NCHW) subgraph may contain, README list (SIGMOID is LOGISTIC).
_SPARSE_UNARY = {"ABS", "CEIL", "ELU", "FLOOR", "HARD_SWISH", "LEAKY_RELU", "LOGISTIC", "NEG", "RELU", "RELU6",
                 "RELU_N1_TO_1", "ROUND", "SQUARE"}

_XNNPACK_NOTE = (
    "XNNPACK runs sparse (NCHW) kernels only on ARM and WebAssembly builds; on x86 it uses them only on "
    "CPUs without AVX, so a desktop measurement shows dense speed."
)


def _spatial_pad(g: _Graph, op: OpInfo | None) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of a PAD op that pads only height and width, else None."""
    if op is None or op.op != "PAD" or len(op.inputs) < 2:
        return None
    arr = g.info.arrays.get(op.inputs[1])
    if arr is None or arr.shape != (4, 2):
        return None
    p = [int(x) for x in arr.ravel()]
    return (p[2], p[3], p[4], p[5]) if p[0] == p[1] == p[6] == p[7] == 0 else None


def _padding(g: _Graph, op: OpInfo, k: int, stride: int) -> tuple[int, int, int, int] | None:
    """Explicit (top, bottom, left, right) padding XNNPACK sees for a conv, or None for TF SAME.

    The delegate passes SAME padding as XNNPACK's TensorFlow-SAME flag, which XNNPACK only turns
    into explicit padding for stride 1; a zero PAD op over height/width feeding the conv is then
    fused into its explicit padding.
    """
    pad = (0, 0, 0, 0)
    if op.options.get("padding") == "SAME":
        if stride != 1:
            return None
        pad = ((k - 1) // 2, k // 2, (k - 1) // 2, k // 2)
    extra = _spatial_pad(g, g.producer.get(op.inputs[0]))
    if extra is not None:
        pad = tuple(a + b for a, b in zip(pad, extra, strict=False))  # type: ignore[assignment]
    return pad


def _fused_pad(g: _Graph, op: OpInfo) -> bool:
    """A spatial zero PAD read only by convolutions: XNNPACK folds it into their padding."""
    if _spatial_pad(g, op) is None or not op.outputs:
        return False
    users = g.consumers.get(op.outputs[0], [])
    return bool(users) and all(u.op in ("CONV_2D", "DEPTHWISE_CONV_2D") for u in users)


def _conv_kind(g: _Graph, op: OpInfo, dil: tuple[int, int], stride: tuple[int, int]) -> tuple[str | None, str]:
    """How a CONV_2D fits the NCHW rewrite: a 1x1 conv inside, the 3x3 stride-2 first layer, or not at all."""
    w = g.shape(g.source(op.inputs[1]))  # [out, kh, kw, in]
    if len(w) != 4 or dil != (1, 1):
        return None, f"CONV_2D #{op.index} is dilated"
    kh, kw, cin = w[1], w[2], w[3]
    if (kh, kw) == (1, 1):
        if stride != (1, 1):
            return None, f"1x1 CONV_2D #{op.index} has stride {stride[0]}"
        pad = _padding(g, op, 1, 1)
        if pad != (0, 0, 0, 0):
            return None, f"1x1 CONV_2D #{op.index} is padded"
        return "nchw", ""
    if (kh, kw) == (3, 3) and stride == (2, 2) and cin == 3:
        pad = _padding(g, op, 3, 2)
        if pad == (1, 1, 1, 1):
            return "start", ""
        why = ("'same' padding, which XNNPACK keeps implicit for stride 2" if pad is None
               else f"padding (top, bottom, left, right) {pad}")
        why += "; it needs 1 on each side: use ZeroPadding2D(1) then padding='valid'"
        return None, f"the 3x3 stride-2 CONV_2D #{op.index} on 3 channels has {why}"
    return None, (f"CONV_2D #{op.index} is {kh}x{kw} stride {stride[0]} on {cin} channels (only 1x1 convs, "
                  "and a first 3x3 stride-2 conv on 3 channels, are allowed)")


def _depthwise_kind(
    g: _Graph, op: OpInfo, dil: tuple[int, int], stride: tuple[int, int]
) -> tuple[str | None, str]:
    """How a DEPTHWISE_CONV_2D fits the NCHW rewrite: "nchw" when its filter, stride and padding allow."""
    w = g.shape(g.source(op.inputs[1]))  # [1, kh, kw, channels]
    cin = g.shape(op.inputs[0])[-1:] or [0]
    if len(w) != 4:
        return None, f"DEPTHWISE_CONV_2D #{op.index} has a {len(w)}-D filter"
    k, mult = w[1], w[3] // max(cin[0], 1)
    if dil != (1, 1) or w[1] != w[2] or k not in (3, 5) or stride[0] != stride[1] or stride[0] not in (1, 2) \
            or w[3] != cin[0]:
        return None, (f"DEPTHWISE_CONV_2D #{op.index} ({w[1]}x{w[2]}, stride {stride[0]}, dilation {dil[0]}, "
                      f"multiplier {mult}) is not 3x3/5x5 with stride 1 or 2, no dilation and multiplier 1")
    pad = _padding(g, op, k, stride[0])
    want = ((k - 1) // 2,) * 4
    if pad != want:
        fix = f"use ZeroPadding2D({want[0]}) then padding='valid'"
        why = ("'same' padding, which XNNPACK keeps implicit for stride 2" if pad is None
               else f"padding (top, bottom, left, right) {pad}")
        return None, (f"DEPTHWISE_CONV_2D #{op.index} ({k}x{k}, stride {stride[0]}) has {why}; it needs "
                      f"{want[0]} on each side: {fix}")
    return "nchw", ""


def _nchw_kind(g: _Graph, op: OpInfo) -> tuple[str | None, str]:
    """How an op fits XNNPACK's NCHW rewrite: "start", "nchw", "end" or None, with the reason."""
    name = op.op
    ins = [t for t in op.inputs if t >= 0]
    rank = len(g.shape(ins[0])) if ins else 0
    dil = (op.options.get("dilation_h", 1), op.options.get("dilation_w", 1))
    stride = (op.options.get("stride_h", 1), op.options.get("stride_w", 1))
    if name == "CONV_2D":
        return _conv_kind(g, op, dil, stride)
    if name == "DEPTHWISE_CONV_2D":
        return _depthwise_kind(g, op, dil, stride)
    if name in ("MEAN", "SUM"):
        axes = g.info.arrays.get(op.inputs[1]) if len(op.inputs) > 1 else None
        if rank == 4 and axes is not None and sorted(int(a) % 4 for a in np.ravel(axes)) == [1, 2]:
            return "end", ""
        return None, f"{name} #{op.index} is not a reduction over the spatial axes of a 4-D tensor"
    if name == "DEPTH_TO_SPACE":
        return "end", ""
    if name in ("ADD", "MUL"):
        for t in ins[:2]:
            shape = g.shape(t)
            if len(shape) != 4:
                return None, f"{name} #{op.index} has a {len(shape)}-D input (both must be 4-D)"
            if g.is_static(t) and sum(1 for d in shape if d != 1) > 1:
                return None, f"{name} #{op.index} has a constant input that is not a scalar or a vector"
        return "nchw", ""
    if name in _SPARSE_UNARY:
        return ("nchw", "") if rank == 4 else (None, f"{name} #{op.index} has a {rank}-D input")
    if name == "RESIZE_BILINEAR":
        shape = g.shape(op.inputs[0])
        return ("nchw", "") if len(shape) == 4 and shape[1] > 1 and shape[2] > 1 else \
            (None, f"RESIZE_BILINEAR #{op.index} has a 1-pixel input")
    return None, f"{name} #{op.index} is not supported by the sparse path"


def xnnpack_sparse_check(info: ModelInspection) -> dict[str, Any]:
    """Whether XNNPACK's sparse inference could run part of this model, with the reasons it cannot.

    Follows the TFLite XNNPACK delegate README, "Sparse Inference"
    (tensorflow/lite/delegates/xnnpack/README.md), and XNNPACK's src/subgraph.c: the delegate asks
    XNNPACK for sparse inference only when weights are stored sparse behind DENSIFY ops; the
    sparse part must run in float (float32/float16 — not int8); it must start with a 3x3 stride-2
    CONV_2D on 3 input channels with padding 1 on each side and no dilation, end with a MEAN over
    the spatial axes (global average pooling) or a DEPTH_TO_SPACE, and contain only 1x1 CONV_2D
    (no stride, no padding), DEPTHWISE_CONV_2D 3x3/5x5 with stride 1 or 2, padding 1/2 on each side
    and no dilation, ADD/MUL of 4-D tensors (a constant operand must be a scalar or a vector),
    RESIZE_BILINEAR, and the unary ops ABS, CEIL, ELU, FLOOR, HARD_SWISH, LEAKY_RELU, LOGISTIC,
    NEG, RELU, RELU6, RELU_N1_TO_1, ROUND, SQUARE; its values may not be read by other ops; and more
    than 2/3 of the weights of its 1x1 convolutions must be zero. Padding: the delegate passes
    'same' padding as XNNPACK's TF-SAME flag, made explicit only for stride 1, so stride-2 layers
    need an explicit PAD (Keras ZeroPadding2D) and 'valid' padding.

    Args:
        info: The inspection.

    Returns:
        ``{"eligible": bool, "reasons": [...], "clusters": [...], "incompatible_convs": [...],
        "arm_only": True, "note": str}``; each cluster (a part ending in a spatial MEAN or
        DEPTH_TO_SPACE) gives its first and last op, op count, 1x1-conv zero fraction and whether it
        qualifies; ``incompatible_convs`` says why each conv the sparse path cannot run is excluded.
    """
    g = _Graph(info)
    ops = [op for op in info.operators if not (op.op in WEIGHT_PREP and all(o in g.prepared for o in op.outputs))]
    reasons = _model_reasons(info, ops)
    kinds = {op.index: _nchw_kind(g, op) for op in ops}
    ends = [op for op in ops if kinds[op.index][0] == "end"]
    clusters: list[dict[str, Any]] = []
    cluster_reasons: list[list[str]] = []
    for end in ends:
        cluster, problems = _cluster(g, end, kinds)
        clusters.append(cluster)
        cluster_reasons.append(problems)
    if not ends:
        reasons.append("no MEAN over the spatial axes (global average pooling) or DEPTH_TO_SPACE ends a "
                       "convolutional part")
    elif not any(c["ok"] for c in clusters):
        best = min(range(len(clusters)), key=lambda i: len(cluster_reasons[i]))
        reasons.extend(cluster_reasons[best])
    # every convolution the sparse path cannot take, so one report lists all there is to change
    blockers = [kinds[op.index][1] for op in ops
                if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D") and kinds[op.index][0] is None]
    return {"eligible": not reasons, "reasons": reasons, "clusters": clusters, "incompatible_convs": blockers,
            "arm_only": True, "note": _XNNPACK_NOTE}


_Kinds = dict[int, tuple[str | None, str]]


def _model_reasons(info: ModelInspection, ops: list[OpInfo]) -> list[str]:
    """Reasons that hold for the whole model: quantized weights or activations, no DENSIFY op."""
    reasons: list[str] = []
    quantized = sorted({w.dtype for w in info.weights if w.role == "weight" and w.dtype in _QUANTIZED}
                       | {info.tensors[t].dtype for op in ops if op.op in _COMPUTE for t in op.inputs[:1]
                          if t >= 0 and info.tensors[t].dtype in _QUANTIZED})
    if quantized:
        reasons.append(f"the model is quantized ({', '.join(quantized)} weights/activations, e.g. int8); "
                       "XNNPACK's sparse kernels are float32/float16 only")
    if info.densify_ops == 0:
        reasons.append("no weights are stored sparse behind DENSIFY ops (convert with "
                       "Optimize.EXPERIMENTAL_SPARSITY; tensors need about 40% zeros or more), and the delegate only "
                       "asks XNNPACK for sparse inference when it sees DENSIFY")
    return reasons


def _cluster(g: _Graph, end: OpInfo, kinds: _Kinds) -> tuple[dict[str, Any], list[str]]:
    """The sparse part ending at ``end``: its summary, and why it does not qualify (unique, in order)."""
    members, start, problems = _cluster_members(g, end, kinds)
    problems += _outside_reads(g, members, start)
    zeros = params = 0
    for op in members.values():
        if op.op == "CONV_2D" and kinds[op.index][0] == "nchw":
            w = g.weight(op, 1)
            if w is not None:
                zeros += w.elements - w.nonzeros
                params += w.elements
    fraction = zeros / params if params else None
    if not params:
        problems.append("the part has no 1x1 CONV_2D (the layers the sparse path runs sparse)")
    elif zeros * 3 <= params * 2:
        problems.append(f"only {fraction:.0%} of the 1x1 CONV_2D weights in the part are zero; more than 2/3 "
                        "must be")
    first = min(members) if members else end.index
    cluster = {"first_op": first, "last_op": end.index, "ops": len(members),
               "conv1x1_zero_fraction": fraction, "ok": not problems}
    return cluster, sorted(set(problems), key=problems.index)


def _cluster_members(g: _Graph, end: OpInfo, kinds: _Kinds) -> tuple[dict[int, OpInfo], OpInfo | None, list[str]]:
    """Walk back from ``end`` through NCHW-compatible ops: the members, the start op, and what stops the walk."""
    members: dict[int, OpInfo] = {end.index: end}
    start: OpInfo | None = None
    problems: list[str] = []
    stack = [t for t in end.inputs[:1] if t >= 0]
    seen: set[int] = set()
    while stack:
        t = stack.pop()
        if t in seen or g.is_static(t):
            continue
        seen.add(t)
        prod = g.producer.get(t)
        if prod is None:
            problems.append("the convolutional part reaches the model input without a 3x3 stride-2 CONV_2D "
                            "on 3 channels as its first layer")
            continue
        kind, why = kinds.get(prod.index, (None, ""))
        if kind == "start":
            members[prod.index] = prod
            start = prod
            continue
        if kind == "nchw" or _fused_pad(g, prod):
            members[prod.index] = prod
            stack.extend(x for x in prod.inputs if x >= 0)
            continue
        problems.append(why or f"{prod.op} #{prod.index} is not supported by the sparse path")
    return members, start, problems


def _outside_reads(g: _Graph, members: dict[int, OpInfo], start: OpInfo | None) -> list[str]:
    """Values the part reads that ops outside it read too."""
    # every value the part reads must be read only inside it (XNNPACK keeps it in NCHW layout)
    problems: list[str] = []
    for op in members.values():
        if op is start:
            continue
        for t in op.inputs:
            if t < 0 or g.is_static(t):
                continue
            outside = [u for u in g.consumers.get(t, []) if u.index not in members]
            if outside:
                problems.append(f"{g.info.tensors[t].name or t} is also read by {outside[0].op} #{outside[0].index}, "
                                "outside the sparse part")
    return problems


# ---------------------------------------------------------------------------------------------


def footprint(path: str | Path | bytes) -> Footprint:
    """Compute the footprint of a .tflite model.

    Args:
        path: A .tflite file (or its bytes).

    Returns:
        The footprint.

    Raises:
        ProfileError: The file is missing, empty, not a TFLite flatbuffer, or damaged.
    """
    info = inspect_tflite(path)
    g = _Graph(info)
    weights = info.weights
    tensors = [TensorStorage(name=w.name, shape=w.shape, dtype=w.dtype, role=w.role, encoding=w.encoding,
                             elements=w.elements, nonzeros=w.nonzeros, sparsity=w.sparsity,
                             stored_bytes=w.stored_bytes, dense_bytes=w.dense_bytes, runtime_bytes=w.runtime_bytes,
                             densified=w.densified) for w in weights]
    layers, by_op = _layers(info, g)
    peak, total = activation_bytes(info)
    fp = Footprint(
        path=info.path if info.path is not None else (None if isinstance(path, (bytes, bytearray)) else str(path)),
        file_bytes=info.file_bytes, gzip_bytes=info.gzip_bytes,
        params=sum(w.elements for w in weights), nonzero_params=sum(w.nonzeros for w in weights),
        weight_stored_bytes=sum(w.stored_bytes for w in weights),
        weight_dense_bytes=sum(w.dense_bytes for w in weights),
        weight_runtime_bytes=sum(w.runtime_bytes for w in weights),
        activation_bytes=peak, activation_total_bytes=total,
        macs_dense=sum(layer.macs_dense for layer in layers), macs_nonzero=sum(layer.macs_nonzero for layer in layers),
        densify_ops=info.densify_ops, sparse_tensors=len(info.sparse_encoded), tensors=tensors, layers=layers,
        by_op=by_op, xnnpack_sparse=xnnpack_sparse_check(info),
        inputs=[asdict(t) for t in info.inputs], outputs=[asdict(t) for t in info.outputs],
        shapes_exact=not any(-1 in t.shape_signature[1:] for t in info.tensors if not t.has_data),
    )
    fp.notes = _notes(fp, info)
    return fp


def _layers(info: ModelInspection, g: _Graph) -> tuple[list[LayerCost], dict[str, dict[str, int]]]:
    """Per-operator costs in execution order, and the same summed per operator type."""
    layers: list[LayerCost] = []
    by_op: dict[str, dict[str, int]] = {}
    for op in info.operators:
        if op.op in WEIGHT_PREP and all(o in g.prepared for o in op.outputs):
            continue
        layer = _layer(info, g, op)
        if layer is None:
            continue
        layers.append(layer)
        agg = by_op.setdefault(op.op, {"count": 0, "params": 0, "nonzero_params": 0, "stored_bytes": 0,
                                       "runtime_bytes": 0, "macs_dense": 0, "macs_nonzero": 0})
        agg["count"] += 1
        for key in ("params", "nonzero_params", "stored_bytes", "runtime_bytes", "macs_dense", "macs_nonzero"):
            agg[key] += getattr(layer, key)
    return layers, by_op


def _layer(info: ModelInspection, g: _Graph, op: OpInfo) -> LayerCost | None:
    """Size and MACs of one op, or None when it holds no parameters and does no MACs."""
    ws: list[WeightInfo] = []
    for t in op.inputs:
        w = info.weight(g.source(t)) if t >= 0 else None
        if w is not None and w not in ws:
            ws.append(w)
    macs_d, macs_n = _macs(g, op)
    if not ws and not macs_d:
        return None
    main = g.weight(op, 1) if op.op in _COMPUTE else None
    return LayerCost(
        index=op.index, op=op.op, output_shape=g.shape(op.outputs[0]) if op.outputs else [],
        weights=[w.name for w in ws], encoding=(main or ws[0]).encoding if (main or ws) else "dense",
        params=sum(w.elements for w in ws), nonzero_params=sum(w.nonzeros for w in ws),
        stored_bytes=sum(w.stored_bytes for w in ws), runtime_bytes=sum(w.runtime_bytes for w in ws),
        macs_dense=macs_d, macs_nonzero=macs_n)


def _notes(fp: Footprint, info: ModelInspection) -> list[str]:
    notes: list[str] = []
    if info.sparse_encoded or info.densify_ops:
        densified = [w for w in info.weights if w.densified]
        native = [w for w in info.weights if w.encoding != "dense" and not w.densified]
        text = (f"The converter's sparse encoding shrinks the file while the runtime densifies the weights at load "
                f"({info.densify_ops} DENSIFY op(s)): runtime weight bytes = {fp.weight_runtime_bytes:,}, not the "
                f"stored {fp.weight_stored_bytes:,}.")
        if native:
            ops = ", ".join(sorted({c for w in native for c in w.consumers}))
            text += (f" {len(native)} block-sparse tensor(s) ({ops}) are read in the sparse format by their kernel "
                     f"and stay at {sum(w.runtime_bytes for w in native):,} bytes.")
        if densified:
            stored = sum(w.stored_bytes for w in densified)
            text += (f" The {len(densified)} densified tensor(s) take {stored:,} bytes in the file and "
                     f"{sum(w.runtime_bytes for w in densified):,} in memory, and run on dense kernels.")
        notes.append(text)
    notes.append(f"Activation memory {fp.activation_bytes:,} bytes is an estimate (peak of live tensors over the op "
                 "order, a lower bound of the runtime's arena).")
    if fp.macs_dense:
        notes.append(f"MACs: {fp.macs_dense:,} dense, {fp.macs_nonzero:,} touch non-zero weights "
                     f"({fp.macs_nonzero / fp.macs_dense:.0%}); only sparse kernels turn the difference into time.")
    if not fp.shapes_exact:
        notes.append("Some activation shapes are only known at run time (the model computes shapes, e.g. for a "
                     "dynamic batch), so the file holds placeholder shapes: MACs and activation bytes are not exact. "
                     "Convert with a fixed input shape (batch 1) for exact figures.")
    elif any(io.dynamic for io in info.inputs):
        notes.append("The model has a dynamic batch dimension; sizes and MACs are for a batch of 1.")
    x = fp.xnnpack_sparse
    if x["eligible"]:
        notes.append("XNNPACK sparse inference can apply to this model. " + x["note"])
    else:
        notes.append("XNNPACK sparse inference does not apply: " + "; ".join(x["reasons"]) + ".")
    return notes
