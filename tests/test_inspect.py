"""Flatbuffer inspection on real converter output: decoded sparse weights equal the Keras weights,
storage and consumers are right, bad files are clear ProfileErrors, and no TensorFlow is imported."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgesparse.errors import ProfileError
from edgesparse.tflite.inspect import ModelInspection, WeightInfo, decode_sparse, inspect_tflite

ROOT = Path(__file__).resolve().parents[1]

# layer -> (TFLite weight shape, pattern); the TFLite layouts: FC [out, in], conv [out, kh, kw, in],
# depthwise [1, kh, kw, channels]. Blocks run along the input (reduction) dimension.
LAYERS = {
    "conv3x3": ([16, 3, 3, 4], "random"),
    "dw": ([1, 3, 3, 16], "random"),
    "conv1x1": ([16, 1, 1, 16], "2:4"),
    "fc_random": ([32, 1024], "random"),
    "fc_block4": ([64, 32], "block4"),
    "fc_block16": ([64, 64], "block16"),
    "fc_2of4": ([32, 64], "2:4"),
    "out": ([10, 32], "dense"),
}
# What the converter (TF 2.21) does with each, measured: (encoding, densified by a DENSIFY op)
FLOAT_ENCODING = {"conv3x3": ("csr", True), "dw": ("csr", True), "conv1x1": ("csr", True),
                  "fc_random": ("csr", True), "fc_block4": ("block 1x4", False), "fc_block16": ("block 1x4", False),
                  "fc_2of4": ("csr", True), "out": ("dense", False)}
INT8_ENCODING = {**FLOAT_ENCODING, "fc_block4": ("csr", True), "fc_block16": ("block 1x16", False)}


def _tflite_mask(shape: list[int], pattern: str, rng: np.random.Generator) -> np.ndarray:
    """Keep-mask in TFLite layout; the last axis is the input dimension."""
    if pattern == "dense":
        return np.ones(shape, bool)
    if pattern == "random":
        return rng.random(shape) > 0.8
    if pattern.startswith("block"):
        b = int(pattern[5:])
        keep = rng.random(shape[:-1] + [shape[-1] // b]) > 0.75
        return np.repeat(keep, b, axis=-1)
    groups = rng.random(shape[:-1] + [shape[-1] // 4, 4]).argsort(axis=-1) < 2  # 2:4
    return groups.reshape(shape)


def _to_tflite(kernel: np.ndarray, kind: str) -> np.ndarray:
    return kernel.T if kind == "Dense" else kernel.transpose(3, 0, 1, 2)


def _to_keras(arr: np.ndarray, kind: str) -> np.ndarray:
    return arr.T if kind == "Dense" else arr.transpose(1, 2, 3, 0)


def _build_model() -> Any:
    from edgesparse import _tf

    keras = _tf.keras()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv3x3")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.Conv2D(16, 1, activation="relu", name="conv1x1")(x)
    x = keras.layers.Flatten()(x)
    for name, units in (("fc_random", 32), ("fc_block4", 64), ("fc_block16", 64), ("fc_2of4", 32)):
        x = keras.layers.Dense(units, activation="relu", name=name)(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="out")(x))
    rng = np.random.default_rng(0)
    for name, (shape, pattern) in LAYERS.items():
        layer = model.get_layer(name)
        kind = type(layer).__name__
        kernel = layer.weights[0].numpy()
        assert list(_to_tflite(kernel, kind).shape) == shape
        layer.weights[0].assign(kernel * _to_keras(_tflite_mask(shape, pattern, rng), kind))
        layer.weights[1].assign(rng.normal(0, 0.1, layer.weights[1].shape).astype(np.float32))  # non-zero biases
    return model


def _convert(model: Any, mode: str) -> bytes:
    """The project's converter: dense float ("dense"), sparse "float", "fp16", or "int8" with int8 I/O."""
    from edgesparse.export.convert import convert

    shape = tuple(model.input_shape[1:])
    rep = [np.random.default_rng(i).random(shape, dtype=np.float32) for i in range(16)]
    if mode == "int8":
        return convert(model, "int8", sparse_encoding=True, representative=rep, io="int8")
    if mode == "fp16":
        return convert(model, "float16", sparse_encoding=True)
    return convert(model, "none", sparse_encoding=(mode == "float"))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One Keras model, converted dense, sparse float32, sparse float16 and sparse int8."""
    model = _build_model()
    out: dict[str, Any] = {"model": model, "kernels": {}}
    for name in LAYERS:
        layer = model.get_layer(name)
        out["kernels"][name] = _to_tflite(layer.weights[0].numpy(), type(layer).__name__)
    tmp = tmp_path_factory.mktemp("inspect")
    for mode in ("dense", "float", "fp16", "int8"):
        data = _convert(model, mode)
        (tmp / f"{mode}.tflite").write_bytes(data)
        out[mode] = tmp / f"{mode}.tflite"
    return out


def _by_layer(info: ModelInspection) -> dict[str, WeightInfo]:
    found = {}
    for name, (shape, _p) in LAYERS.items():
        matches = [w for w in info.weights if w.shape == shape and w.role == "weight"]
        assert len(matches) == 1, (name, [(w.name, w.shape) for w in info.weights])
        found[name] = matches[0]
    return found


def _consumer(name: str) -> str:
    return {"conv3x3": "CONV_2D", "conv1x1": "CONV_2D", "dw": "DEPTHWISE_CONV_2D"}.get(name, "FULLY_CONNECTED")


def test_float_sparse_weights_decode_to_the_keras_weights(built: dict[str, Any]) -> None:
    info = inspect_tflite(built["float"])
    for name, w in _by_layer(info).items():
        kernel = built["kernels"][name]
        encoding, densified = FLOAT_ENCODING[name]
        assert (w.encoding, w.densified) == (encoding, densified), name
        np.testing.assert_array_equal(info.arrays[w.tensor_index], kernel, err_msg=name)
        assert w.nonzeros == np.count_nonzero(kernel) and w.elements == kernel.size
        assert w.sparsity == pytest.approx(1 - np.count_nonzero(kernel) / kernel.size)
        assert w.consumers == [_consumer(name)] and w.dtype == "float32" and w.quantization is None
        assert w.dense_bytes == kernel.size * 4
        if encoding == "dense":
            assert w.stored_bytes == w.runtime_bytes == w.dense_bytes
        else:
            assert w.stored_bytes < w.dense_bytes
            # densified weights are held dense; block-sparse FC weights are read sparse by the FC kernel
            assert w.runtime_bytes == (w.dense_bytes if densified else w.stored_bytes)
    assert info.densify_ops == sum(d for _e, d in FLOAT_ENCODING.values())
    biases = [w for w in info.weights if w.role == "bias"]
    assert len(biases) == len(LAYERS) and all(w.sparsity == 0 for w in biases)


def test_stored_bytes_count_values_and_index_arrays(built: dict[str, Any]) -> None:
    from ai_edge_litert import schema_py_generated as schema

    data = built["float"].read_bytes()
    info = inspect_tflite(data)
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    tensors = model.subgraphs[0].tensors
    width = {1: 4, 2: 2, 3: 1}
    for name, w in _by_layer(info).items():
        t = tensors[w.tensor_index]
        expected = len(model.buffers[t.buffer].data)
        if t.sparsity is not None:
            for md in t.sparsity.dimMetadata:
                if md.format == 1:
                    expected += len(md.arraySegments.values) * width[md.arraySegmentsType]
                    expected += len(md.arrayIndices.values) * width[md.arrayIndicesType]
        assert w.stored_bytes == expected, name
        if w.encoding == "csr":  # CSR stores exactly the non-zeros, plus its indices
            assert w.stored_bytes > 4 * w.nonzeros


def test_int8_sparse_weights_keep_the_zero_pattern(built: dict[str, Any]) -> None:
    info = inspect_tflite(built["int8"])
    for name, w in _by_layer(info).items():
        kernel = built["kernels"][name]
        encoding, densified = INT8_ENCODING[name]
        assert (w.encoding, w.densified, w.dtype) == (encoding, densified, "int8"), name
        q = w.quantization
        assert q is not None and q["kind"] == "per-channel" and q["scales"] == kernel.shape[q["axis"]]
        decoded = info.arrays[w.tensor_index].astype(np.float64)
        assert np.all(decoded[kernel == 0] == 0), name
        assert w.nonzeros == np.count_nonzero(decoded) >= 0.95 * np.count_nonzero(kernel)
        # dequantized values are the Keras weights to within half a step of their channel's scale
        scales = np.asarray(info.tensors[w.tensor_index].quantization.scale)
        shape = [1] * kernel.ndim
        shape[q["axis"]] = -1
        step = scales.reshape(shape)
        assert np.all(np.abs(decoded * step - kernel) <= step / 2 + 1e-6), name
    block = _by_layer(info)["fc_block16"]
    assert block.block == [1, 16] and block.runtime_bytes == block.stored_bytes < block.dense_bytes
    assert all(w.dtype == "int32" for w in info.weights if w.role == "bias")


def test_float16_weights_decode_and_read_as_float32(built: dict[str, Any]) -> None:
    info = inspect_tflite(built["fp16"])
    for name, w in _by_layer(info).items():
        kernel = built["kernels"][name].astype(np.float16)
        assert w.dtype == "float16" and w.runtime_dtype == "float32", name
        np.testing.assert_array_equal(info.arrays[w.tensor_index], kernel, err_msg=name)
        assert w.consumers == [_consumer(name)]  # through DENSIFY and DEQUANTIZE
        assert w.runtime_bytes == kernel.size * 4  # DEQUANTIZE makes a float32 copy at load
    assert _by_layer(info)["fc_block4"].encoding == "block 1x4"
    assert info.op_counts["DEQUANTIZE"] == 2 * len(LAYERS)


def test_ops_io_and_sizes_match_the_runtime(built: dict[str, Any]) -> None:
    from ai_edge_litert.interpreter import Interpreter

    for mode in ("dense", "float", "int8"):
        data = built[mode].read_bytes()
        info = inspect_tflite(built[mode])
        interp = Interpreter(model_content=data)
        names: dict[str, int] = {}
        for op in interp._get_ops_details():
            names[op["op_name"]] = names.get(op["op_name"], 0) + 1
        assert info.op_counts == names and [o.op for o in info.operators] == [
            o["op_name"] for o in interp._get_ops_details()]
        for ours, theirs in ((info.inputs, interp.get_input_details()), (info.outputs, interp.get_output_details())):
            assert len(ours) == len(theirs) == 1
            a, b = ours[0], theirs[0]
            assert (a.name, a.index, a.shape, a.shape_signature) == (
                b["name"], b["index"], list(b["shape"]), list(b["shape_signature"]))
            assert a.dtype == np.dtype(b["dtype"]).name
            assert (a.scale or 0.0, a.zero_point or 0) == pytest.approx(b["quantization"])
        assert info.inputs[0]["shape_signature"] == [-1, 8, 8, 4] and info.inputs[0].dynamic
        assert info.file_bytes == len(data) and info.path == str(built[mode])
        assert info.gzip_bytes == len(gzip.compress(data, compresslevel=9)) < len(data)
    int8 = inspect_tflite(built["int8"])
    assert int8.inputs[0].dtype == "int8" and int8.inputs[0].scale > 0
    dense = inspect_tflite(built["dense"])
    assert dense.densify_ops == 0 and not dense.sparse_encoded
    json.dumps(int8.to_dict())  # JSON-able as is


def _encode(dense: np.ndarray, order: list[int], block_map: list[int], block: list[int],
            formats: list[int], index_dtype: str) -> tuple[np.ndarray, dict[str, Any]]:
    """A straightforward TFLite sparse encoder (test oracle): expand blocked dims, walk the traversal."""
    n = dense.ndim
    bsizes = {d: block[k] for k, d in enumerate(block_map)}
    outer = [-(-dense.shape[d] // bsizes.get(d, 1)) for d in range(n)]
    padded = np.zeros([outer[d] * bsizes.get(d, 1) for d in range(n)], dense.dtype)
    padded[tuple(slice(0, s) for s in dense.shape)] = dense
    sizes = outer + [bsizes[d] for d in block_map]

    def value(c: list[int]) -> Any:
        idx = [c[d] * bsizes.get(d, 1) + (c[n + block_map.index(d)] if d in block_map else 0) for d in range(n)]
        return padded[tuple(idx)]

    def subtree_nonzero(prefix: dict[int, int], level: int) -> bool:
        free = [order[k] for k in range(level, len(order))]
        for rest in np.ndindex(*[sizes[d] for d in free]):
            c = dict(prefix)
            c.update(zip(free, rest))
            if value([c[d] for d in range(len(sizes))]) != 0:
                return True
        return False

    metas = [{"format": f, "dense_size": sizes[order[k]] if f == 0 else 0, "array_segments": [0],
              "array_indices": []} for k, f in enumerate(formats)]
    values: list[Any] = []

    def walk(prefix: dict[int, int], level: int) -> None:
        if level == len(order):
            values.append(value([prefix[d] for d in range(len(sizes))]))
            return
        d = order[level]
        meta = metas[level]
        for i in range(sizes[d]):
            child = {**prefix, d: i}
            if formats[level] == 0:
                walk(child, level + 1)
            elif subtree_nonzero(child, level + 1):
                meta["array_indices"].append(i)
                walk(child, level + 1)
        if formats[level] == 1:
            meta["array_segments"].append(len(meta["array_indices"]))

    walk({}, 0)
    for meta in metas:
        meta["array_segments"] = np.asarray(meta["array_segments"], index_dtype)
        meta["array_indices"] = np.asarray(meta["array_indices"], index_dtype)
    return np.asarray(values, dense.dtype), {"traversal_order": order, "block_map": block_map, "dim_metadata": metas}


@pytest.mark.parametrize(("shape", "order", "block_map", "block", "formats"), [
    ([5, 7], [0, 1], [], [], [0, 1]),                    # CSR, row major
    ([5, 7], [1, 0], [], [], [0, 1]),                    # CSC: column-major traversal
    ([6, 8], [0, 1], [], [], [1, 1]),                    # doubly compressed
    ([4, 8], [0, 1, 2], [1], [4], [0, 1, 0]),            # 1x4 blocks (the converter's FC format)
    ([6, 9], [0, 1, 2, 3], [0, 1], [2, 3], [0, 1, 0, 0]),  # 2x3 blocks
    ([5, 6], [1, 0, 2, 3], [0, 1], [2, 2], [1, 1, 0, 0]),  # blocks, padded, column-major block order
    ([2, 3, 3, 8], [0, 1, 2, 3], [], [], [0, 0, 0, 1]),  # conv filter, CSR on input channels
])
@pytest.mark.parametrize("index_dtype", ["uint8", "uint16", "int32"])
def test_decode_sparse_general_formats(shape: list[int], order: list[int], block_map: list[int], block: list[int],
                                       formats: list[int], index_dtype: str) -> None:
    rng = np.random.default_rng(len(shape) * 10 + sum(order))
    dense = (rng.normal(size=shape) * (rng.random(shape) > 0.6)).astype(np.float32)
    values, params = _encode(dense, order, block_map, block, formats, index_dtype)
    np.testing.assert_array_equal(decode_sparse(values, params, shape), dense)


def test_decode_sparse_rejects_inconsistent_metadata() -> None:
    dense = np.eye(4, dtype=np.float32)
    values, params = _encode(dense, [0, 1], [], [], [0, 1], "int32")
    params["dim_metadata"][1]["array_indices"] = np.asarray([0, 1, 2, 9], np.int32)
    with pytest.raises(ValueError, match="dimension 1|index"):
        decode_sparse(values, params, [4, 4])
    params["dim_metadata"][1]["array_segments"] = np.asarray([0, 1, 2], np.int32)
    with pytest.raises(ValueError, match="array_segments"):
        decode_sparse(values, params, [4, 4])
    with pytest.raises(ValueError, match="traversal order"):
        decode_sparse(values, {**params, "traversal_order": [0]}, [4, 4])


def test_bad_files_are_clear_errors(built: dict[str, Any], tmp_path: Path) -> None:
    good = built["float"].read_bytes()
    cases = {
        "empty.tflite": (b"", "empty"),
        "garbage.tflite": (b"hello world, not a model" * 10, "not a TFLite flatbuffer"),
        "model.keras": (b"PK\x03\x04" + b"\0" * 100, "zip archive"),
        "tiny.tflite": (good[:6], "not a TFLite flatbuffer"),
    }
    for fraction in (0.1, 0.5, 0.9, 0.999):
        cases[f"cut{fraction}.tflite"] = (good[: int(len(good) * fraction)], "truncated")
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ProfileError, match=message):
            inspect_tflite(tmp_path / name)
    with pytest.raises(ProfileError, match="does not exist"):
        inspect_tflite(tmp_path / "missing.tflite")
    with pytest.raises(ProfileError, match="folder"):
        inspect_tflite(tmp_path)


def test_buffer_pointing_past_the_end_is_reported(built: dict[str, Any]) -> None:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    data = built["dense"].read_bytes()
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    sizes = [0 if b.data is None else len(b.data) for b in model.buffers]
    big = int(np.argmax(sizes))
    model.buffers[big].data = None
    model.buffers[big].offset, model.buffers[big].size = len(data) + 64, 4096  # external data, missing
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    with pytest.raises(ProfileError, match=f"buffer {big} spans bytes"):
        inspect_tflite(bytes(builder.Output()))


def test_operator_codes_old_new_and_custom(built: dict[str, Any]) -> None:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(built["dense"].read_bytes()), 0)
    codes = model.operatorCodes
    # an old file: only the deprecated one-byte field is set
    codes[0].builtinCode, codes[0].deprecatedBuiltinCode = 0, schema.BuiltinOperator.FULLY_CONNECTED
    # a new op beyond 127: deprecated_builtin_code holds the placeholder
    codes[1].builtinCode = schema.BuiltinOperator.GELU
    codes[1].deprecatedBuiltinCode = schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES
    codes[2].builtinCode, codes[2].deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM, schema.BuiltinOperator.CUSTOM
    codes[2].customCode = "MyOp"
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    info = inspect_tflite(bytes(builder.Output()))
    assert {0, 1, 2} <= {op.opcodeIndex for op in model.subgraphs[0].operators}
    assert {"FULLY_CONNECTED", "GELU", "CUSTOM:MyOp"} <= set(info.op_counts)


def test_inspection_does_not_import_tensorflow(built: dict[str, Any]) -> None:
    code = (
        "import sys\n"
        "import edgesparse.profile\n"
        "from edgesparse.tflite.inspect import inspect_tflite\n"
        "from edgesparse.tflite.footprint import footprint\n"
        f"info = inspect_tflite({str(built['float'])!r})\n"
        f"fp = footprint({str(built['int8'])!r})\n"
        "assert info.sparse_encoded and fp.params > 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_verification_rejects_nan_outputs() -> None:
    """float16 + 1x4-block FC weights: the converter's output runs but yields NaN (measured, TF 2.21)."""
    from edgesparse.errors import ExportError
    from edgesparse.export.convert import convert
    from edgesparse.export.verify import verify

    from edgesparse import _tf

    keras = _tf.keras()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64,))
    dense = keras.layers.Dense(32, name="fc")
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(dense(inputs)))
    k = dense.kernel.numpy()
    keep = np.random.default_rng(0).random((k.shape[0] // 4, k.shape[1])) > 0.8
    dense.kernel.assign(k * np.repeat(keep, 4, axis=0))
    blob = convert(model, "float16", sparse_encoding=True)
    x = np.random.default_rng(1).random((16, 64), dtype=np.float32)
    out = model.predict(x, verbose=0)
    from edgesparse.export.litert import load_interpreter, predict

    raw = predict(load_interpreter(blob), x)
    if np.isnan(raw).any():
        with pytest.raises(ExportError, match="NaN"):
            verify(blob, x, np.argmax(out, -1), out)
    else:  # a fixed converter/runtime: then verification passes and agrees
        assert verify(blob, x, np.argmax(out, -1), out).agreement > 0.9


@pytest.mark.parametrize("keep, expect_encoded", [(0.5, False), (0.05, True)])
def test_convert_smallest_keeps_the_smaller_encoding(keep: float, expect_encoded: bool) -> None:
    """int8 at 50% sparsity: CSR indices cost more than the zeros they drop; at 95% they pay off."""
    from edgesparse import _tf
    from edgesparse.export.convert import convert_smallest

    keras = _tf.keras()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((256,))
    dense = keras.layers.Dense(128, name="fc")
    model = keras.Model(inputs, keras.layers.Dense(4)(dense(inputs)))
    rng = np.random.default_rng(0)
    k = dense.kernel.numpy()
    dense.kernel.assign(k * (rng.random(k.shape) < keep))  # unstructured: CSR
    rep = (rng.random((256,), dtype=np.float32) for _ in range(16))  # a generator: consumed once, used twice
    blob, encoded, sizes = convert_smallest(model, "int8", representative=rep)
    assert encoded is expect_encoded
    assert len(blob) == min(sizes.values()) and sizes["sparse"] != sizes["plain"]
