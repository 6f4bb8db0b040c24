"""Read a .tflite flatbuffer without TensorFlow: ops, tensors, weights and their storage.

For each weight tensor this reports the dense shape, dtype, how the file stores it (dense, CSR or
blocks — the converter's sparse format, decoded here), the bytes stored in the file (values plus
index arrays), whether a DENSIFY op expands it at load (then the runtime holds the dense bytes)
or its op consumes the sparse format directly (block-sparse FULLY_CONNECTED weights, measured:
float 1x4/1x16 and int8 1x16 blocks get no DENSIFY), and the sparsity of the decoded values.

Only ``ai_edge_litert.schema_py_generated`` (which needs just ``flatbuffers``) and numpy are used,
so this module is safe to import on the host's light paths and inside the profiler.
"""

from __future__ import annotations

import gzip
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse.errors import ProfileError

# TFLite TensorType -> (name, numpy dtype or None, bytes per element)
_DTYPES: dict[int, tuple[str, Any, float]] = {
    0: ("float32", np.float32, 4), 1: ("float16", np.float16, 2), 2: ("int32", np.int32, 4),
    3: ("uint8", np.uint8, 1), 4: ("int64", np.int64, 8), 5: ("string", None, 1), 6: ("bool", np.bool_, 1),
    7: ("int16", np.int16, 2), 9: ("int8", np.int8, 1), 10: ("float64", np.float64, 8),
    12: ("uint64", np.uint64, 8), 15: ("uint32", np.uint32, 4), 16: ("uint16", np.uint16, 2),
    17: ("int4", None, 0.5),
}

# ops whose input 1 is a weight ("filter") and input 2 a bias
WEIGHT_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D", "BATCH_MATMUL"}
PASS_THROUGH = {"DENSIFY", "DEQUANTIZE"}


@dataclass
class TensorInfo:
    """A tensor of the main subgraph."""

    index: int
    name: str
    shape: list[int]
    shape_signature: list[int]
    dtype: str
    itemsize: float
    quantization: dict[str, Any] | None
    has_data: bool


@dataclass
class WeightInfo:
    """A constant weight tensor and how it is stored."""

    name: str
    shape: list[int]
    dtype: str
    encoding: str  # "dense" | "csr" | "block RxC"
    stored_bytes: int  # in the file: values plus sparse index arrays
    dense_bytes: int  # elements x dtype size: what a dense copy takes
    runtime_bytes: int  # held by the runtime: dense_bytes if densified at load, else stored_bytes
    elements: int
    nonzeros: int
    sparsity: float
    role: str  # "weight" | "bias" | "constant"
    consumers: list[str] = field(default_factory=list)
    quantization: str = "none"  # "none" | "per-tensor" | "per-channel (N)"
    tensor_index: int = -1
    densified: bool = False  # a DENSIFY op expands it to dense_bytes when the model loads


@dataclass
class OpInfo:
    """An operator of the main subgraph in execution order."""

    op: str
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelInspection:
    """Everything :func:`inspect_tflite` reads from a flatbuffer."""

    path: str | None
    file_bytes: int
    gzip_bytes: int
    version: int
    subgraphs: int
    op_counts: dict[str, int]
    densify_ops: int
    weights: list[WeightInfo]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    tensors: list[TensorInfo] = field(repr=False, default_factory=list)
    operators: list[OpInfo] = field(repr=False, default_factory=list)
    decoded: dict[int, np.ndarray] = field(repr=False, default_factory=dict)

    @property
    def sparse_encoded(self) -> list[WeightInfo]:
        return [w for w in self.weights if w.encoding != "dense"]

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k not in ("tensors", "operators", "decoded")}
        return d


def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # pragma: no cover - tflite_runtime-only hosts
        from tensorflow.lite.python import schema_py_generated as schema  # type: ignore[no-redef]
    return schema


def _op_names(schema: Any) -> dict[int, str]:
    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}


def _read(path_or_bytes: str | Path | bytes) -> tuple[bytes, str | None]:
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes), None
    path = Path(path_or_bytes)
    if not path.exists():
        raise ProfileError(f"'{path}' does not exist.")
    if path.is_dir():
        raise ProfileError(f"'{path}' is a folder; give a .tflite file.")
    data = path.read_bytes()
    return data, str(path)


def inspect_tflite(path_or_bytes: str | Path | bytes, decode: bool = True) -> ModelInspection:
    """Parse a TFLite flatbuffer.

    Args:
        path_or_bytes: A .tflite path or its bytes.
        decode: Decode sparse weights to count their non-zeros (needed for sparsity figures).

    Returns:
        The inspection.

    Raises:
        ProfileError: the file is missing, empty, not a TFLite flatbuffer, or truncated.
    """
    data, path = _read(path_or_bytes)
    where = path or "the model"
    if not data:
        raise ProfileError(f"{where} is empty (0 bytes); re-export it.")
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ProfileError(
            f"{where} is not a TFLite flatbuffer (no 'TFL3' identifier); give a .tflite file written by the "
            "TFLite converter (edgesparse export)."
        )
    schema = _schema()
    try:
        model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
        info = _build(model, data, schema, path, decode)
    except ProfileError:
        raise
    except Exception as exc:  # noqa: BLE001 - flatbuffers raises struct/index errors on truncation
        raise ProfileError(
            f"{where} is damaged or truncated ({type(exc).__name__}: {exc}); re-export or copy it again."
        ) from None
    return info


def _buffer(model: Any, data: bytes, idx: int) -> bytes:
    if idx <= 0 or idx >= len(model.buffers or []):
        return b""
    buf = model.buffers[idx]
    if buf.data is not None and len(buf.data):
        return bytes(np.asarray(buf.data, dtype=np.uint8))
    offset = int(getattr(buf, "offset", 0) or 0)
    size = int(getattr(buf, "size", 0) or 0)
    if offset > 1 and size:
        if offset + size > len(data):
            raise ProfileError("a weight buffer points past the end of the file (truncated file)")
        return data[offset:offset + size]
    return b""


def _quant(q: Any) -> dict[str, Any] | None:
    if q is None or q.scale is None or len(q.scale) == 0:
        return None
    scale = [float(s) for s in np.asarray(q.scale).ravel()]
    zero = [int(z) for z in np.asarray(q.zeroPoint if q.zeroPoint is not None else [0] * len(scale)).ravel()]
    return {"scale": scale, "zero_point": zero, "axis": int(q.quantizedDimension or 0)}


def _index_vector(vec: Any) -> np.ndarray:
    if vec is None:
        return np.zeros(0, dtype=np.int64)
    values = getattr(vec, "values", None)
    return np.asarray(values if values is not None else [], dtype=np.int64)


def _index_bytes(vec_type: int, vec: Any) -> int:
    n = len(_index_vector(vec))
    return n * {1: 4, 2: 2, 3: 1}.get(int(vec_type or 0), 0)


def decode_sparse(values: np.ndarray, sparsity: Any, dense_shape: list[int]) -> np.ndarray:
    """Densify a tensor stored in TFLite's sparse format.

    The format stores the tensor in ``traversal_order`` over ``n + k`` dimensions (the original
    ``n`` with blocked ones divided by their block size, then ``k`` block dimensions named by
    ``block_map``); each traversed dimension is DENSE (a size) or SPARSE_CSR (segments + indices).

    Args:
        values: The stored values, in traversal order.
        sparsity: The tensor's ``SparsityParametersT``.
        dense_shape: The original shape.

    Returns:
        The dense array.
    """
    order = [int(t) for t in sparsity.traversalOrder]
    block_map = [int(b) for b in (sparsity.blockMap if sparsity.blockMap is not None else [])]
    meta = sparsity.dimMetadata
    n = len(dense_shape)
    pos = np.zeros(1, dtype=np.int64)
    coords: list[np.ndarray] = []
    for level, md in enumerate(meta):
        if int(md.format) == 0:  # DENSE
            size = int(md.denseSize)
            pos = (pos[:, None] * size + np.arange(size)[None, :]).ravel()
            coords = [np.repeat(c, size) for c in coords]
            coords.append(np.tile(np.arange(size), len(pos) // size if size else 0))
        else:  # SPARSE_CSR
            seg = _index_vector(md.arraySegments)
            idx = _index_vector(md.arrayIndices)
            starts, ends = seg[pos], seg[pos + 1]
            counts = ends - starts
            total = int(counts.sum())
            offsets = np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(total)
            coords = [np.repeat(c, counts) for c in coords]
            coords.append(idx[offsets])
            pos = offsets
    # coords[level] is the coordinate of traversal dimension order[level]
    by_dim = {order[level]: c for level, c in enumerate(coords)}
    out = np.zeros(dense_shape, dtype=values.dtype)
    full = []
    for d in range(n):
        c = by_dim[d]
        if d in block_map:
            b = block_map.index(d)
            level = order.index(n + b)
            block = int(meta[level].denseSize)
            c = c * block + by_dim[n + b]
        full.append(c)
    flat_values = values[pos] if len(pos) else values[:0]
    inside = np.ones(len(flat_values), dtype=bool)
    for d in range(n):
        inside &= full[d] < dense_shape[d]
    out[tuple(f[inside] for f in full)] = flat_values[inside]
    return out


def _build(model: Any, data: bytes, schema: Any, path: str | None, decode: bool) -> ModelInspection:
    names = _op_names(schema)
    codes = []
    for oc in model.operatorCodes or []:
        code = max(int(oc.builtinCode or 0), int(oc.deprecatedBuiltinCode or 0))
        name = names.get(code, f"OP_{code}")
        if name == "CUSTOM" and oc.customCode:
            name = f"CUSTOM:{oc.customCode.decode() if isinstance(oc.customCode, bytes) else oc.customCode}"
        codes.append(name)
    if not model.subgraphs:
        raise ProfileError("the model has no subgraph")
    sg = model.subgraphs[0]
    tensors: list[TensorInfo] = []
    raw_tensors = sg.tensors or []
    for i, t in enumerate(raw_tensors):
        tname, _np, size = _DTYPES.get(int(t.type), (f"type{t.type}", None, 1))
        shape = [int(d) for d in (t.shape if t.shape is not None else [])]
        sig = [int(d) for d in (t.shapeSignature if t.shapeSignature is not None else shape)]
        has = bool(_buffer(model, data, int(t.buffer))) if t.buffer else False
        nm = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
        tensors.append(TensorInfo(i, nm, shape, sig, tname, size, _quant(t.quantization), has))
    operators: list[OpInfo] = []
    op_counts: dict[str, int] = {}
    for sub in model.subgraphs:
        for op in sub.operators or []:
            name = codes[int(op.opcodeIndex)]
            op_counts[name] = op_counts.get(name, 0) + 1
    for op in sg.operators or []:
        name = codes[int(op.opcodeIndex)]
        opts = {}
        bo = op.builtinOptions
        if bo is not None:
            for key in ("strideH", "strideW", "padding", "depthMultiplier", "dilationHFactor", "dilationWFactor",
                        "keepNumDims"):
                if hasattr(bo, key):
                    opts[key] = int(getattr(bo, key))
        operators.append(OpInfo(name, [int(i) for i in (op.inputs if op.inputs is not None else [])],
                                [int(o) for o in (op.outputs if op.outputs is not None else [])], opts))
    # producer of each tensor, consumers of each tensor
    producer: dict[int, OpInfo] = {}
    consumers: dict[int, list[tuple[OpInfo, int]]] = {}
    for op in operators:
        for o in op.outputs:
            producer[o] = op
        for slot, i in enumerate(op.inputs):
            if i >= 0:
                consumers.setdefault(i, []).append((op, slot))

    def final_uses(t: int, depth: int = 0) -> list[tuple[str, int]]:
        uses = []
        for op, slot in consumers.get(t, []):
            if op.op in PASS_THROUGH and depth < 4:
                for o in op.outputs:
                    uses += final_uses(o, depth + 1)
            else:
                uses.append((op.op, slot))
        return uses

    weights: list[WeightInfo] = []
    decoded: dict[int, np.ndarray] = {}
    for i, t in enumerate(raw_tensors):
        info = tensors[i]
        raw = _buffer(model, data, int(t.buffer)) if t.buffer else b""
        if not raw:
            continue
        uses = final_uses(i)
        role = "constant"
        for op, slot in uses:
            if op in WEIGHT_OPS and slot == 1:
                role = "weight"
            elif op in WEIGHT_OPS and slot == 2 and role != "weight":
                role = "bias"
        if role == "constant" and (info.dtype not in ("float32", "float16", "int8") or len(raw) <= 64):
            continue  # shape vectors, axes, small scalars
        np_dtype = _DTYPES.get(int(t.type), ("", None, 1))[1]
        elements = int(np.prod(info.shape)) if info.shape else 1
        sp = t.sparsity
        encoding = "dense"
        stored = len(raw)
        values = np.frombuffer(raw, dtype=np_dtype) if np_dtype is not None else None
        dense_arr = None
        if sp is not None and sp.dimMetadata:
            block_map = list(sp.blockMap) if sp.blockMap is not None else []
            if block_map:
                n = len(info.shape)
                dims = []
                for b in range(len(block_map)):
                    level = [int(x) for x in sp.traversalOrder].index(n + b)
                    dims.append(int(sp.dimMetadata[level].denseSize))
                blk = [1] * n
                for b, d in enumerate(block_map):
                    blk[int(d)] = dims[b]
                encoding = "block " + "x".join(map(str, blk[-2:] if n >= 2 else blk))
            else:
                encoding = "csr"
            for md in sp.dimMetadata:
                stored += _index_bytes(md.arraySegmentsType, md.arraySegments)
                stored += _index_bytes(md.arrayIndicesType, md.arrayIndices)
            if decode and values is not None:
                dense_arr = decode_sparse(values, sp, info.shape)
        elif values is not None and decode:
            dense_arr = values.reshape(info.shape) if elements == len(values) else values
        nonzeros = int(np.count_nonzero(dense_arr)) if dense_arr is not None else (
            int(np.count_nonzero(values)) if values is not None else elements)
        if dense_arr is not None:
            decoded[i] = dense_arr
        densified = any(op.op == "DENSIFY" for op, _slot in consumers.get(i, []))
        runtime = int(elements * info.itemsize) if (encoding == "dense" or densified) else int(stored)
        q = info.quantization
        qdesc = "none" if q is None else ("per-tensor" if len(q["scale"]) == 1 else f"per-channel ({len(q['scale'])})")
        weights.append(WeightInfo(
            name=info.name, shape=info.shape, dtype=info.dtype, encoding=encoding, stored_bytes=int(stored),
            dense_bytes=int(elements * info.itemsize), runtime_bytes=runtime, elements=elements, nonzeros=nonzeros,
            sparsity=1.0 - nonzeros / elements if elements else 0.0, role=role,
            consumers=sorted({u[0] for u in uses}), quantization=qdesc, tensor_index=i, densified=densified,
        ))

    def io(indices: Any) -> list[dict[str, Any]]:
        out = []
        for i in indices if indices is not None else []:
            t = tensors[int(i)]
            out.append({"name": t.name, "index": t.index, "shape": t.shape, "shape_signature": t.shape_signature,
                        "dtype": t.dtype, "quantization": t.quantization})
        return out

    return ModelInspection(
        path=path, file_bytes=len(data), gzip_bytes=len(gzip.compress(data, compresslevel=9, mtime=0)),
        version=int(model.version or 0), subgraphs=len(model.subgraphs), op_counts=op_counts,
        densify_ops=op_counts.get("DENSIFY", 0), weights=weights, inputs=io(sg.inputs), outputs=io(sg.outputs),
        tensors=tensors, operators=operators, decoded=decoded,
    )
