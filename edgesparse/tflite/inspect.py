"""Read a .tflite flatbuffer without TensorFlow: operators, tensors, weights and how they are stored.

For every weight tensor this reports the dense shape, dtype and quantization, how the file stores
it (``dense``, ``csr`` or ``block RxC`` — TFLite's sparse format, decoded here), the bytes stored in
the file (values plus the index arrays of the sparse format), the bytes the runtime holds once the
weight is in the form its kernel reads (after DENSIFY and DEQUANTIZE ops expand it at load), the
number of non-zero values, and the operator that really consumes it (looking through DENSIFY and
DEQUANTIZE). Inputs and outputs come with shape, shape signature (-1 = dynamic) and quantization.

What the converter (TF 2.21, ``Optimize.EXPERIMENTAL_SPARSITY``) encodes, measured: tensors with
at least ~30-40% zeros are stored sparse. FULLY_CONNECTED weights whose zeros form 1x4 blocks
(float32, float16) or 1x16 blocks (int8) along the input dimension are stored block-sparse and
read sparse by the FC kernel (no DENSIFY); every other sparse weight (random, 2:4, conv,
depthwise, FC blocks of the other size) is stored CSR along its last dimension and expanded by a
DENSIFY op when the model loads, so it only shrinks the file. (Float16 block-sparse FC weights go
through a DEQUANTIZE that ignores the sparse format: such models output NaN with ai-edge-litert
2.3.)

Only ``ai_edge_litert.schema_py_generated`` (which needs just ``flatbuffers``) and numpy are used,
so this module never imports TensorFlow and can run on the light paths and on devices.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse.errors import ProfileError

#: TFLite TensorType name -> (numpy dtype or None, bytes per element).
_DTYPES: dict[str, tuple[Any, float]] = {
    "FLOAT32": (np.float32, 4), "FLOAT16": (np.float16, 2), "INT32": (np.int32, 4), "UINT8": (np.uint8, 1),
    "INT64": (np.int64, 8), "STRING": (None, 1), "BOOL": (np.bool_, 1), "INT16": (np.int16, 2),
    "COMPLEX64": (np.complex64, 8), "INT8": (np.int8, 1), "FLOAT64": (np.float64, 8),
    "COMPLEX128": (np.complex128, 16), "UINT64": (np.uint64, 8), "RESOURCE": (None, 0), "VARIANT": (None, 0),
    "UINT32": (np.uint32, 4), "UINT16": (np.uint16, 2), "INT4": (np.int8, 0.5), "BFLOAT16": (None, 2),
}
#: Constants of these types count as parameters (shape/axis/index vectors are INT32/INT64).
_PARAM_DTYPES = {"float32", "float16", "bfloat16", "float64", "int8", "uint8", "int16", "int4"}
#: SparseIndexVector union member -> bytes per index.
_INDEX_BYTES = {1: 4, 2: 2, 3: 1}

#: op -> (weight input slot, bias input slot or None).
WEIGHT_SLOTS: dict[str, tuple[int, int | None]] = {
    "CONV_2D": (1, 2), "DEPTHWISE_CONV_2D": (1, 2), "FULLY_CONNECTED": (1, 2), "CONV_3D": (1, 2),
    "TRANSPOSE_CONV": (1, 3), "CONV_3D_TRANSPOSE": (1, 3), "EMBEDDING_LOOKUP": (1, None),
}
#: Ops that turn a stored weight into the form its consumer reads; looked through.
WEIGHT_PREP = ("DENSIFY", "DEQUANTIZE")


@dataclass
class Quantization:
    """Affine quantization of a tensor: ``real = scale * (q - zero_point)``.

    Attributes:
        scale: One scale (per-tensor) or one per channel.
        zero_point: Matching zero points.
        axis: The channel dimension for per-channel quantization.
    """

    scale: list[float]
    zero_point: list[int]
    axis: int = 0

    @property
    def kind(self) -> str:
        """``"per-tensor"`` or ``"per-channel"``."""
        return "per-tensor" if len(self.scale) == 1 else "per-channel"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, with ``kind`` and the number of scales."""
        return {"kind": self.kind, "scales": len(self.scale), "axis": self.axis,
                "scale": self.scale, "zero_point": self.zero_point}


@dataclass
class TensorInfo:
    """A tensor of the main subgraph.

    Attributes:
        index: Its index in the subgraph.
        name: Its name.
        shape: The (dense) shape, dynamic dimensions resolved to their default (usually 1).
        shape_signature: The shape with -1 for dynamic dimensions.
        dtype: Lower-case TFLite type name (``float32``, ``int8``...).
        itemsize: Bytes per element (0.5 for int4).
        buffer: Index of its buffer (0: no data).
        has_data: Whether the file holds data for it (a constant).
        sparse: Whether the data is in TFLite's sparse format.
        is_variable: A variable tensor (state kept between invocations).
        quantization: Its quantization, if any.
    """

    index: int
    name: str
    shape: list[int]
    shape_signature: list[int]
    dtype: str
    itemsize: float
    buffer: int = 0
    has_data: bool = False
    sparse: bool = False
    is_variable: bool = False
    quantization: Quantization | None = None

    @property
    def elements(self) -> int:
        """Number of elements of the dense shape."""
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        """Bytes of the dense tensor."""
        return int(np.ceil(self.elements * self.itemsize))


@dataclass
class IOTensor:
    """A model input or output, with what a runner needs to feed or read it.

    Also readable like a dict (``t["shape"]``) for callers holding ``to_dict()`` output.

    Attributes:
        name: Tensor name.
        index: Tensor index (what ``Interpreter.set_tensor`` takes).
        shape: Shape with dynamic dimensions at their default (usually 1).
        shape_signature: Shape with -1 for dynamic dimensions.
        dtype: Lower-case type name.
        scale: Quantization scale (None when not quantized).
        zero_point: Quantization zero point (None when not quantized).
    """

    name: str
    index: int
    shape: list[int]
    shape_signature: list[int]
    dtype: str
    scale: float | None = None
    zero_point: int | None = None

    @property
    def dynamic(self) -> bool:
        """Whether some dimension is only known at run time."""
        return any(d < 0 for d in self.shape_signature)

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        """Dict-style access with a default."""
        return getattr(self, key, default)


@dataclass
class OpInfo:
    """An operator of the main subgraph, in execution order.

    Attributes:
        index: Position in the execution order.
        op: Builtin operator name (``CONV_2D``...) or ``CUSTOM:<code>``.
        inputs: Input tensor indices (-1: optional input left out).
        outputs: Output tensor indices.
        options: Builtin options, snake_case (``stride_h``, ``padding``: ``"SAME"``...).
    """

    index: int
    op: str
    inputs: list[int]
    outputs: list[int]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class WeightInfo:
    """A constant tensor (weight, bias or other parameter) and how it is stored.

    Attributes:
        name: Tensor name.
        shape: Dense shape, in TFLite layout (FC ``[out, in]``, conv ``[out, kh, kw, in]``,
            depthwise ``[1, kh, kw, channels]``).
        dtype: Stored type (``float32``, ``float16``, ``int8``...).
        encoding: ``"dense"``, ``"csr"`` or ``"block RxC"`` (block of the last two dimensions).
        stored_bytes: Bytes in the file: values plus the sparse format's index arrays.
        dense_bytes: Elements x stored dtype size: the weight after DENSIFY.
        runtime_bytes: Bytes of the weight in the form its kernel reads: after DENSIFY (dense) and
            DEQUANTIZE (float32) ops expand it at load; ``stored_bytes`` when a kernel reads the
            sparse format itself (block-sparse FULLY_CONNECTED).
        runtime_dtype: Type the kernel reads.
        elements: Number of elements of the dense shape.
        nonzeros: Elements whose value is not zero (quantized: not the zero point).
        sparsity: Fraction of zero elements.
        role: ``"weight"``, ``"bias"`` or ``"constant"`` (other parameters, e.g. a PReLU slope).
        consumers: Ops reading it, looking through DENSIFY/DEQUANTIZE (e.g. ``FULLY_CONNECTED``).
        quantization: Kind, number of scales and axis; None for float weights.
        tensor_index: Index of the tensor in its subgraph.
        subgraph: Index of the subgraph.
        densified: A DENSIFY op expands it to ``dense_bytes`` when the model loads.
        block: Block shape of a block-sparse tensor (one entry per dimension), else None.
    """

    name: str
    shape: list[int]
    dtype: str
    encoding: str
    stored_bytes: int
    dense_bytes: int
    runtime_bytes: int
    runtime_dtype: str
    elements: int
    nonzeros: int
    sparsity: float
    role: str
    consumers: list[str] = field(default_factory=list)
    quantization: dict[str, Any] | None = None
    tensor_index: int = -1
    subgraph: int = 0
    densified: bool = False
    block: list[int] | None = None


@dataclass
class ModelInspection:
    """Everything :func:`inspect_tflite` reads from a flatbuffer.

    Attributes:
        path: The file, or None when bytes were given.
        file_bytes: Size of the file.
        gzip_bytes: Size after gzip level 9 (what a compressed download costs).
        version: Schema version.
        description: The converter's description string.
        subgraphs: Number of subgraphs.
        op_counts: Operators by name, over all subgraphs.
        densify_ops: Number of DENSIFY ops.
        operators: Main-subgraph operators in execution order.
        weights: Constant tensors of all subgraphs (one entry per buffer).
        inputs: Main-subgraph inputs.
        outputs: Main-subgraph outputs.
        tensors: Main-subgraph tensors (not in ``to_dict``).
        arrays: Dense numpy values of the main subgraph's constant tensors, sparse ones decoded,
            by tensor index (not in ``to_dict``).
        shared: (subgraph, tensor) -> (subgraph, tensor) of the weight entry holding the buffer it
            shares (a buffer read by several tensors is listed, and counted, once).
    """

    path: str | None
    file_bytes: int
    gzip_bytes: int
    version: int
    description: str
    subgraphs: int
    op_counts: dict[str, int]
    densify_ops: int
    operators: list[OpInfo]
    weights: list[WeightInfo]
    inputs: list[IOTensor]
    outputs: list[IOTensor]
    tensors: list[TensorInfo] = field(repr=False, default_factory=list)
    arrays: dict[int, np.ndarray] = field(repr=False, default_factory=dict)
    shared: dict[tuple[int, int], tuple[int, int]] = field(repr=False, default_factory=dict)
    _by_tensor: dict[tuple[int, int], WeightInfo] = field(init=False, repr=False, default_factory=dict)

    @property
    def sparse_encoded(self) -> list[WeightInfo]:
        """Weights stored in the sparse format (CSR or blocks)."""
        return [w for w in self.weights if w.encoding != "dense"]

    def weight(self, tensor_index: int, subgraph: int = 0) -> WeightInfo | None:
        """The weight entry of a tensor, if it is a constant."""
        if len(self._by_tensor) != len(self.weights):
            self._by_tensor = {(w.subgraph, w.tensor_index): w for w in self.weights}
        key = (subgraph, tensor_index)
        return self._by_tensor.get(self.shared.get(key, key))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (everything but ``tensors`` and ``arrays``)."""
        d: dict[str, Any] = {}
        for key in ("path", "file_bytes", "gzip_bytes", "version", "description", "subgraphs", "op_counts",
                    "densify_ops"):
            d[key] = getattr(self, key)
        d["weights"] = [asdict(w) for w in self.weights]
        d["inputs"] = [asdict(t) for t in self.inputs]
        d["outputs"] = [asdict(t) for t in self.outputs]
        d["operators"] = [asdict(o) for o in self.operators]
        return d


# ---------------------------------------------------------------------------------------------
# schema access


def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as exc:  # pragma: no cover - depends on the host
        raise ProfileError(
            "reading .tflite files needs the TFLite schema from the ai-edge-litert package, which is not "
            f"installed ({exc}); install it with `pip install ai-edge-litert`."
        ) from None
    return schema


def _enum_names(enum_cls: Any) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def _ints(values: Any) -> list[int]:
    return [int(v) for v in values] if values is not None else []


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)


def _snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def _options(obj: Any, schema: Any) -> dict[str, Any]:
    """Builtin options as a snake_case dict, enums by name."""
    if obj is None:
        return {}
    paddings = _enum_names(schema.Padding)
    activations = _enum_names(schema.ActivationFunctionType)
    opts: dict[str, Any] = {}
    for key, value in vars(obj).items():
        if key.startswith("_"):
            continue
        name = _snake(key)
        if key == "padding" and isinstance(value, int):
            opts[name] = paddings.get(value, value)
        elif key == "fusedActivationFunction" and isinstance(value, int):
            opts[name] = activations.get(value, value)
        elif isinstance(value, (bool, int, float, str)):
            opts[name] = value
        elif isinstance(value, (list, np.ndarray)):
            opts[name] = [v.item() if isinstance(v, np.generic) else v for v in value]
    for axis in ("h", "w"):  # short names for the dilation every conv consumer asks for
        if f"dilation_{axis}_factor" in opts:
            opts[f"dilation_{axis}"] = opts[f"dilation_{axis}_factor"]
    return opts


def _quantization(q: Any) -> Quantization | None:
    if q is None or q.scale is None or len(q.scale) == 0:
        return None
    scale = [float(s) for s in np.asarray(q.scale).ravel()]
    zp = np.asarray(q.zeroPoint if q.zeroPoint is not None else [], dtype=np.int64).ravel()
    zero = [int(z) for z in zp] if len(zp) else [0] * len(scale)
    return Quantization(scale=scale, zero_point=zero, axis=int(q.quantizedDimension or 0))


# ---------------------------------------------------------------------------------------------
# the sparse format


@dataclass(frozen=True)
class _Dim:
    sparse: bool
    dense_size: int
    segments: np.ndarray
    indices: np.ndarray
    index_bytes: int  # bytes of segments + indices as stored


@dataclass(frozen=True)
class _Sparsity:
    traversal_order: list[int]
    block_map: list[int]
    dims: list[_Dim]


def _index_array(vec: Any, vec_type: int = 0) -> tuple[np.ndarray, int]:
    """Values of a SparseIndexVector (schema object, sequence or array) and their stored bytes."""
    if vec is None:
        return np.zeros(0, dtype=np.int64), 0
    values = getattr(vec, "values", vec)
    arr = np.asarray(values if values is not None else [], dtype=np.int64).ravel()
    if not vec_type:
        vec_type = {"Int32VectorT": 1, "Uint16VectorT": 2, "Uint8VectorT": 3}.get(type(vec).__name__, 1)
    return arr, len(arr) * _INDEX_BYTES.get(int(vec_type), 4)


def _as_sparsity(sp: Any) -> _Sparsity:
    """Normalise a ``SparsityParametersT`` or a dict in schema (snake_case) terms."""
    if isinstance(sp, Mapping):
        order = _ints(sp.get("traversal_order"))
        block_map = _ints(sp.get("block_map"))
        dims = []
        for md in sp.get("dim_metadata") or []:
            fmt = md.get("format", 0)
            sparse = fmt in (1, "SPARSE_CSR")
            seg, seg_b = _index_array(md.get("array_segments"), md.get("array_segments_type", 1))
            idx, idx_b = _index_array(md.get("array_indices"), md.get("array_indices_type", 1))
            dims.append(_Dim(sparse, int(md.get("dense_size", 0)), seg, idx, (seg_b + idx_b) if sparse else 0))
        return _Sparsity(order, block_map, dims)
    order = _ints(sp.traversalOrder)
    block_map = _ints(sp.blockMap)
    dims = []
    for md in sp.dimMetadata or []:
        sparse = int(md.format) == 1
        seg, seg_b = _index_array(md.arraySegments, int(md.arraySegmentsType or 0))
        idx, idx_b = _index_array(md.arrayIndices, int(md.arrayIndicesType or 0))
        dims.append(_Dim(sparse, int(md.denseSize or 0), seg, idx, (seg_b + idx_b) if sparse else 0))
    return _Sparsity(order, block_map, dims)


def _block_shape(sp: _Sparsity, rank: int) -> list[int] | None:
    if not sp.block_map:
        return None
    block = [1] * rank
    for b, dim in enumerate(sp.block_map):
        level = sp.traversal_order.index(rank + b)
        block[dim] = sp.dims[level].dense_size
    return block


def decode_sparse(values: np.ndarray, sparsity: Any, dense_shape: Sequence[int]) -> np.ndarray:
    """Expand a tensor stored in TFLite's sparse format to its dense array.

    The format (schema.fbs, ``SparsityParameters``) traverses ``n + k`` dimensions: the ``n``
    original ones (a blocked dimension counts its blocks) then ``k`` block dimensions, whose
    original dimensions ``block_map`` names, in ``traversal_order``. Each traversed dimension is
    DENSE (``dense_size`` coordinates, all stored) or SPARSE_CSR (for each position of the
    previous dimensions, ``array_segments`` delimits the run of ``array_indices`` holding the
    coordinates present). The values are stored in that order; absent elements are zero.

    Args:
        values: The stored values, in traversal order (any dtype).
        sparsity: A ``SparsityParametersT`` from the schema, or a dict with ``traversal_order``,
            ``block_map`` and ``dim_metadata`` (each: ``format`` 0/1 or "DENSE"/"SPARSE_CSR",
            ``dense_size``, ``array_segments``, ``array_indices``).
        dense_shape: The tensor's shape.

    Returns:
        The dense array, of ``values``' dtype.

    Raises:
        ValueError: The metadata is inconsistent (index arrays too short or out of range, more
            positions than values): the file is damaged.
    """
    sp = sparsity if isinstance(sparsity, _Sparsity) else _as_sparsity(sparsity)
    shape = [int(d) for d in dense_shape]
    n = len(shape)
    values = np.asarray(values).ravel()
    levels = len(sp.dims)
    if levels != n + len(sp.block_map) or sorted(sp.traversal_order) != list(range(levels)):
        raise ValueError(f"sparsity metadata has {levels} dimension entries and traversal order "
                         f"{sp.traversal_order} for a rank-{n} tensor with {len(sp.block_map)} block dimension(s)")
    pos, coords = _traverse(sp)
    if len(pos) and int(pos.max()) >= len(values):
        raise ValueError(f"the sparsity metadata addresses {int(pos.max()) + 1} values, {len(values)} are stored")
    full, inside = _dense_coords(sp, shape, coords, len(pos))
    out = np.zeros(shape, dtype=values.dtype)
    out[tuple(c[inside] for c in full)] = values[pos[inside]]
    return out


def _traverse(sp: _Sparsity) -> tuple[np.ndarray, list[np.ndarray]]:
    """Walk the traversed dimensions: each stored value's position and its coordinate per level."""
    pos = np.zeros(1, dtype=np.int64)
    coords: list[np.ndarray] = []
    for level, dim in enumerate(sp.dims):
        if not dim.sparse:
            size = dim.dense_size
            if size < 0:
                raise ValueError(f"negative dense_size {size} at level {level}")
            coords = [np.repeat(c, size) for c in coords]
            coords.append(np.tile(np.arange(size, dtype=np.int64), len(pos)))
            pos = (pos[:, None] * size + np.arange(size, dtype=np.int64)[None, :]).ravel()
        else:
            seg, idx = dim.segments, dim.indices
            if len(pos) and (len(seg) < int(pos.max()) + 2):
                raise ValueError(f"array_segments at level {level} has {len(seg)} entries, "
                                 f"{int(pos.max()) + 2} needed")
            starts, ends = (seg[pos], seg[pos + 1]) if len(pos) else (pos, pos)
            counts = ends - starts
            if np.any(counts < 0) or (len(ends) and (int(ends.max()) > len(idx) or int(starts.min()) < 0)):
                raise ValueError(f"array_segments at level {level} are not increasing or point past "
                                 f"array_indices ({len(idx)} entries)")
            total = int(counts.sum())
            offsets = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(total, dtype=np.int64)
            coords = [np.repeat(c, counts) for c in coords]
            coords.append(idx[offsets])
            pos = offsets
    return pos, coords


def _dense_coords(
    sp: _Sparsity, shape: list[int], coords: list[np.ndarray], count: int
) -> tuple[list[np.ndarray], np.ndarray]:
    """Coordinates in each original dimension (blocks expanded) and which of them fall inside the shape."""
    n = len(shape)
    by_dim = {sp.traversal_order[level]: c for level, c in enumerate(coords)}
    full = []
    inside = np.ones(count, dtype=bool)
    for d in range(n):
        c = by_dim[d]
        block = 1
        if d in sp.block_map:
            b = sp.block_map.index(d)
            block = sp.dims[sp.traversal_order.index(n + b)].dense_size
        if len(c) and (int(c.min()) < 0 or int(c.max()) >= -(-shape[d] // max(block, 1))):
            raise ValueError(f"an index of dimension {d} is outside its size {shape[d]}")
        if block != 1:
            c = c * block + by_dim[n + sp.block_map.index(d)]
        inside &= c < shape[d]  # blocks may pad a dimension that is not a multiple of the block
        full.append(c)
    return full, inside


# ---------------------------------------------------------------------------------------------
# reading the file


def _read(path_or_bytes: str | Path | bytes | bytearray | memoryview) -> tuple[bytes, str | None]:
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes), None
    path = Path(path_or_bytes)
    if not path.exists():
        raise ProfileError(f"'{path}' does not exist; check the path (a .tflite file written by `edgesparse export`).")
    if path.is_dir():
        raise ProfileError(f"'{path}' is a folder; give the .tflite file inside it.")
    try:
        return path.read_bytes(), str(path)
    except OSError as exc:
        raise ProfileError(f"'{path}' cannot be read ({exc.strerror}); check its permissions.") from None


def _check_header(data: bytes, where: str) -> None:
    if not data:
        raise ProfileError(f"{where} is empty (0 bytes); re-export the model or copy it again.")
    if len(data) < 8 or data[4:8] != b"TFL3":
        hint = ""
        if data[:2] == b"PK":
            hint = " (it looks like a zip archive: a .keras file? export it to TFLite first)"
        elif data[:8] == b"\x89HDF\r\n\x1a\n":
            hint = " (it looks like an HDF5 .h5 Keras file; export it to TFLite first)"
        raise ProfileError(
            f"{where} is not a TFLite flatbuffer: the 'TFL3' file identifier is missing{hint}. "
            "Give a .tflite file written by the TFLite converter (`edgesparse export`)."
        )
    (root,) = struct.unpack_from("<I", data, 0)
    if root + 4 > len(data):
        raise ProfileError(f"{where} is truncated: its root table starts at byte {root} of {len(data)}; "
                           "re-export the model or copy it again.")


def _truncated(where: str, what: str) -> ProfileError:
    return ProfileError(f"{where} is damaged or truncated ({what}); re-export the model or copy it again.")


def inspect_tflite(path_or_bytes: str | Path | bytes | bytearray | memoryview) -> ModelInspection:
    """Parse a TFLite flatbuffer: ops, weights and their storage, inputs and outputs.

    Args:
        path_or_bytes: A .tflite path, or the model's bytes.

    Returns:
        The inspection (see :class:`ModelInspection`).

    Raises:
        ProfileError: The file is missing, empty, not a TFLite flatbuffer, or damaged/truncated.
    """
    data, path = _read(path_or_bytes)
    where = f"'{path}'" if path else "the model"
    _check_header(data, where)
    schema = _schema()
    try:
        model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    except (struct.error, IndexError, ValueError, TypeError, UnicodeDecodeError, OverflowError, MemoryError) as exc:
        # flatbuffers reads offsets lazily and fails wherever one points past the end
        raise _truncated(where, f"{type(exc).__name__} while parsing: {exc}") from None
    try:
        return _build(model, data, schema, path, where)
    except ValueError as exc:
        raise _truncated(where, str(exc)) from None


class _Reader:
    """Buffers and tensor arrays of a parsed model, with bounds checks."""

    def __init__(self, model: Any, data: bytes, schema: Any, where: str) -> None:
        self.model = model
        self.data = data
        self.where = where
        self.types = _enum_names(schema.TensorType)
        self.buffers = model.buffers or []

    def raw(self, idx: int) -> bytes | np.ndarray:
        if idx <= 0:
            return b""
        if idx >= len(self.buffers):
            raise _truncated(self.where, f"a tensor refers to buffer {idx}, the file has {len(self.buffers)}")
        buf = self.buffers[idx]
        if buf is None:
            return b""
        if buf.data is not None and len(buf.data):
            return np.asarray(buf.data, dtype=np.uint8)
        offset, size = int(buf.offset or 0), int(buf.size or 0)
        if offset > 1 and size:
            # large models keep buffers after the flatbuffer, addressed from the start of the file
            if offset + size > len(self.data):
                raise _truncated(self.where, f"buffer {idx} spans bytes {offset}..{offset + size} of a "
                                 f"{len(self.data)}-byte file")
            return np.frombuffer(self.data, dtype=np.uint8, count=size, offset=offset)
        return b""

    def dtype(self, t: Any) -> tuple[str, Any, float]:
        name = self.types.get(int(t.type), f"TYPE{int(t.type)}")
        np_dtype, size = _DTYPES.get(name, (None, 1))
        return name.lower(), np_dtype, size


def _values(raw: bytes | np.ndarray, dtype: str, np_dtype: Any, count: int | None) -> np.ndarray | None:
    """Stored values as numpy (int4 unpacked, sign-extended)."""
    if np_dtype is None:
        return None
    buf = raw if isinstance(raw, np.ndarray) else np.frombuffer(raw, dtype=np.uint8)
    if dtype == "int4":
        lo = (buf & 0x0F).astype(np.int8)
        hi = (buf >> 4).astype(np.int8)
        vals = np.stack([lo, hi], axis=-1).ravel()
        vals = np.where(vals > 7, vals - 16, vals).astype(np.int8)
        return vals[:count] if count is not None else vals
    itemsize = np.dtype(np_dtype).itemsize
    usable = len(buf) - len(buf) % itemsize
    return buf[:usable].view(np_dtype)


def _nonzeros(arr: np.ndarray, q: Quantization | None) -> int:
    if q is None or not any(q.zero_point):
        return int(np.count_nonzero(arr))
    if len(q.zero_point) == 1 or arr.ndim == 0:
        return int(np.count_nonzero(arr != q.zero_point[0]))
    shape = [1] * arr.ndim
    shape[q.axis] = -1
    zp = np.asarray(q.zero_point).reshape(shape)
    return int(np.count_nonzero(arr != zp))


_Uses = list[tuple[OpInfo, int, int]]


def _final_uses(consumers: dict[int, list[tuple[OpInfo, int]]], t: int, depth: int = 0) -> _Uses:
    """(consumer op, input slot, tensor it reads) for tensor ``t``, looking through DENSIFY/DEQUANTIZE."""
    uses = []
    for op, slot in consumers.get(t, []):
        if op.op in WEIGHT_PREP and depth < 4:
            for o in op.outputs:
                uses += _final_uses(consumers, o, depth + 1)
        else:
            uses.append((op, slot, t))
    return uses


def _role(uses: _Uses) -> str:
    role = "constant"
    for op, slot, _t in uses:
        wslot, bslot = WEIGHT_SLOTS.get(op.op, (-1, None))
        if op.op == "BATCH_MATMUL" or slot == wslot:
            return "weight"
        if slot == bslot:
            role = "bias"
    return role


@dataclass
class _Decoded:
    array: np.ndarray | None
    encoding: str
    block: list[int] | None
    stored: int


def _decode(t: Any, info: TensorInfo, reader: _Reader) -> _Decoded:
    """Dense values, encoding and stored bytes (values + index arrays) of a constant tensor."""
    raw = reader.raw(info.buffer)
    _name, np_dtype, _size = reader.dtype(t)
    values = _values(raw, info.dtype, np_dtype, None if info.sparse else info.elements)
    if not info.sparse:
        if values is None:
            return _Decoded(None, "dense", None, len(raw))
        if len(values) < info.elements:
            raise _truncated(reader.where, f"tensor '{info.name}' holds {len(values)} of its {info.elements} values")
        arr = values[:info.elements].reshape(info.shape) if info.shape else values[:1].reshape(())
        return _Decoded(arr, "dense", None, len(raw))
    sp = _as_sparsity(t.sparsity)
    block = _block_shape(sp, len(info.shape))
    if block is not None:
        encoding = "block " + "x".join(map(str, block[-2:] if len(block) >= 2 else block))
    else:
        encoding = "csr" if any(d.sparse for d in sp.dims) else "dense"
    decoded = decode_sparse(values, sp, info.shape) if values is not None else None
    return _Decoded(decoded, encoding, block, len(raw) + sum(d.index_bytes for d in sp.dims))


def _opcode_names(model: Any, schema: Any) -> list[str]:
    names = _enum_names(schema.BuiltinOperator)
    codes = []
    for oc in model.operatorCodes or []:
        # builtin_code was added when the enum outgrew a byte; old files only fill the deprecated one
        code = max(int(oc.builtinCode or 0), int(oc.deprecatedBuiltinCode or 0))
        name = names.get(code, f"BUILTIN_{code}")
        if name == "CUSTOM":
            name = f"CUSTOM:{_text(oc.customCode) or '?'}"
        codes.append(name)
    return codes


def _subgraph(
    sg: Any, sg_index: int, codes: list[str], reader: _Reader, schema: Any
) -> tuple[list[TensorInfo], list[OpInfo]]:
    tensors = []
    for i, t in enumerate(sg.tensors or []):
        dtype, _np, size = reader.dtype(t)
        shape = _ints(t.shape)
        tensors.append(TensorInfo(
            index=i, name=_text(t.name), shape=shape,
            shape_signature=_ints(t.shapeSignature) if t.shapeSignature is not None else list(shape),
            dtype=dtype, itemsize=size, buffer=int(t.buffer or 0), has_data=len(reader.raw(int(t.buffer or 0))) > 0,
            sparse=t.sparsity is not None and bool(t.sparsity.dimMetadata), is_variable=bool(t.isVariable),
            quantization=_quantization(t.quantization)))
    ops = []
    for k, op in enumerate(sg.operators or []):
        oi = int(op.opcodeIndex or 0)
        if oi >= len(codes):
            raise _truncated(reader.where, f"operator {k} uses operator code {oi}, the file has {len(codes)}")
        ins, outs = _ints(op.inputs), _ints(op.outputs)
        for ti in ins + outs:
            if ti >= len(tensors):
                raise _truncated(reader.where, f"operator {k} of subgraph {sg_index} refers to tensor {ti}, "
                                 f"the subgraph has {len(tensors)}")
        ops.append(OpInfo(index=k, op=codes[oi], inputs=ins, outputs=outs, options=_options(op.builtinOptions, schema)))
    return tensors, ops


def _consumer_map(ops: list[OpInfo], op_counts: dict[str, int]) -> dict[int, list[tuple[OpInfo, int]]]:
    """Tensor -> (op, input slot) of the ops reading it; counts the ops by name into ``op_counts``."""
    consumers: dict[int, list[tuple[OpInfo, int]]] = {}
    for op in ops:
        op_counts[op.op] = op_counts.get(op.op, 0) + 1
        for slot, ti in enumerate(op.inputs):
            if ti >= 0:
                consumers.setdefault(ti, []).append((op, slot))
    return consumers


def _weight_entry(
    info: TensorInfo, dec: _Decoded, uses: _Uses, tensors: list[TensorInfo], *, role: str, subgraph: int,
    densified: bool
) -> WeightInfo:
    """The weight entry of a constant tensor: storage, runtime form, non-zeros and consumers."""
    nonzeros = _nonzeros(dec.array, info.quantization) if dec.array is not None else info.elements
    # what the kernel finally reads: the output of the last DENSIFY/DEQUANTIZE of the chain
    read = {rt for _op, _slot, rt in uses}
    final = tensors[max(read, key=lambda r: tensors[r].nbytes)] if read else info
    if final.index == info.index:
        runtime_bytes = info.nbytes if dec.encoding == "dense" else dec.stored
    else:
        runtime_bytes = final.nbytes
    q = info.quantization
    return WeightInfo(
        name=info.name, shape=info.shape, dtype=info.dtype, encoding=dec.encoding, stored_bytes=int(dec.stored),
        dense_bytes=info.nbytes, runtime_bytes=int(runtime_bytes), runtime_dtype=final.dtype,
        elements=info.elements, nonzeros=nonzeros,
        sparsity=1.0 - nonzeros / info.elements if info.elements else 0.0,
        role=role, consumers=sorted({u[0].op for u in uses}),
        quantization={"kind": q.kind, "scales": len(q.scale), "axis": q.axis} if q else None,
        tensor_index=info.index, subgraph=subgraph, block=dec.block, densified=densified)


def _io_tensors(indices: Any, main_tensors: list[TensorInfo], where: str) -> list[IOTensor]:
    """The main subgraph's inputs or outputs named by ``indices``."""
    out = []
    for i in _ints(indices):
        if not 0 <= i < len(main_tensors):
            raise _truncated(where, f"the main subgraph lists tensor {i} as an input or output")
        t = main_tensors[i]
        q = t.quantization
        out.append(IOTensor(name=t.name, index=t.index, shape=t.shape, shape_signature=t.shape_signature,
                            dtype=t.dtype, scale=q.scale[0] if q else None,
                            zero_point=q.zero_point[0] if q else None))
    return out


def _build(model: Any, data: bytes, schema: Any, path: str | None, where: str) -> ModelInspection:
    reader = _Reader(model, data, schema, where)
    codes = _opcode_names(model, schema)
    if not model.subgraphs:
        raise _truncated(where, "it has no subgraph")
    op_counts: dict[str, int] = {}
    weights: list[WeightInfo] = []
    owners: dict[int, WeightInfo] = {}  # buffer -> the entry that counts it
    shared: dict[tuple[int, int], tuple[int, int]] = {}
    arrays: dict[int, np.ndarray] = {}
    main: tuple[list[TensorInfo], list[OpInfo]] = ([], [])
    for sg_index, sg in enumerate(model.subgraphs):
        tensors, ops = _subgraph(sg, sg_index, codes, reader, schema)
        if sg_index == 0:
            main = (tensors, ops)
        consumers = _consumer_map(ops, op_counts)
        for i, t in enumerate(sg.tensors or []):
            info = tensors[i]
            if not info.has_data:
                continue
            uses = _final_uses(consumers, i)
            role = _role(uses)
            dec = _decode(t, info, reader)
            if sg_index == 0 and dec.array is not None:
                arrays[i] = dec.array
            if role == "constant" and info.dtype not in _PARAM_DTYPES:
                continue  # shape vectors, axes, paddings, lookup indices
            if info.buffer in owners:  # one buffer read by several tensors: list and count it once
                owner = owners[info.buffer]
                owner.consumers = sorted(set(owner.consumers) | {u[0].op for u in uses})
                shared[(sg_index, i)] = (owner.subgraph, owner.tensor_index)
                continue
            w = _weight_entry(info, dec, uses, tensors, role=role, subgraph=sg_index,
                              densified=any(op.op == "DENSIFY" for op, _s in consumers.get(i, [])))
            owners[info.buffer] = w
            weights.append(w)

    main_tensors, main_ops = main
    sg0 = model.subgraphs[0]
    return ModelInspection(
        path=path, file_bytes=len(data), gzip_bytes=len(gzip.compress(data, compresslevel=9, mtime=0)),
        version=int(model.version or 0), description=_text(model.description), subgraphs=len(model.subgraphs),
        op_counts=op_counts, densify_ops=op_counts.get("DENSIFY", 0), operators=main_ops, weights=weights,
        inputs=_io_tensors(sg0.inputs, main_tensors, where), outputs=_io_tensors(sg0.outputs, main_tensors, where),
        tensors=main_tensors, arrays=arrays, shared=shared,
    )
