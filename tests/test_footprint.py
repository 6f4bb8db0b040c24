"""Footprint on real converted models: exact parameter, non-zero and MAC counts, weight bytes stored
vs held, the activation estimate, and the XNNPACK sparse-inference check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgesparse.errors import ProfileError
from edgesparse.tflite.footprint import footprint


def _save(model: Any, mode: str, path: Path) -> Path:
    """Convert with the project's converter: dense float, sparse float ("sparse") or sparse full int8."""
    from edgesparse.export.convert import convert

    shape = tuple(model.input_shape[1:])
    rep = [np.random.default_rng(i).random(shape, dtype=np.float32) for i in range(16)]
    if mode == "int8":
        blob = convert(model, "int8", sparse_encoding=True, representative=rep)
    else:
        blob = convert(model, "none", sparse_encoding=(mode == "sparse"))
    path.write_bytes(blob)
    return path


def _prune(layer: Any, keep: float, rng: np.random.Generator) -> None:
    kernel = layer.weights[0]
    kernel.assign(kernel.numpy() * (rng.random(kernel.shape) < keep))
    layer.weights[1].assign(rng.normal(0, 0.1, layer.weights[1].shape).astype(np.float32))  # non-zero bias


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Conv 3x3 (2->4 channels, 6x6 -> 4x4) + Dense 64->5, 70% of both kernels zero."""
    from edgesparse import _tf

    keras = _tf.keras()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(5, name="fc")(x))
    rng = np.random.default_rng(0)
    for name in ("conv", "fc"):
        _prune(model.get_layer(name), 0.3, rng)
    tmp = tmp_path_factory.mktemp("footprint")
    out = {"model": model}
    for mode in ("dense", "sparse", "int8"):
        out[mode] = _save(model, mode, tmp / f"{mode}.tflite")
    return out


def _mobile(same_padding: bool = False, keep: float = 0.15) -> Any:
    """A Fast-Sparse-ConvNets-shaped model: 3x3/2 stem on RGB, sparse 1x1 convs, depthwise, GAP."""
    from edgesparse import _tf

    keras = _tf.keras()
    keras.utils.set_random_seed(1)
    inputs = keras.Input((16, 16, 3))
    if same_padding:
        x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inputs)
    else:
        x = keras.layers.ZeroPadding2D(1)(inputs)
        x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    y = keras.layers.Conv2D(32, 1, activation="relu", name="expand")(x)
    z = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(y)
    z = keras.layers.Conv2D(32, 1, name="project")(z)
    x = keras.layers.Add()([y, z])
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4)(x))
    rng = np.random.default_rng(1)
    for name in ("expand", "project"):
        _prune(model.get_layer(name), keep, rng)
    return model


def test_counts_match_keras(tiny: dict[str, Any]) -> None:
    model = tiny["model"]
    conv_k = model.get_layer("conv").weights[0].numpy()
    fc_k = model.get_layer("fc").weights[0].numpy()
    nnz_conv, nnz_fc = int(np.count_nonzero(conv_k)), int(np.count_nonzero(fc_k))
    for mode in ("dense", "sparse", "int8"):
        fp = footprint(tiny[mode])
        assert fp.params == model.count_params() == (3 * 3 * 2 * 4 + 4) + (64 * 5 + 5), mode
        # conv: 4x4 output positions x 4 channels x (3x3x2) inputs; fc: 64 x 5
        assert fp.macs_dense == 4 * 4 * 4 * 18 + 64 * 5 == 1472, mode
        assert [(layer.op, layer.macs_dense) for layer in fp.layers] == [("CONV_2D", 1152), ("FULLY_CONNECTED", 320)]
        if mode == "int8":  # rounding may only add zeros
            assert fp.nonzero_params <= nnz_conv + nnz_fc + 9
            assert fp.macs_nonzero <= 16 * nnz_conv + nnz_fc
        else:
            assert fp.nonzero_params == nnz_conv + nnz_fc + 9  # + the non-zero biases
            assert fp.macs_nonzero == 16 * nnz_conv + nnz_fc
        assert fp.sparsity == pytest.approx(1 - fp.nonzero_params / fp.params)
        json.dumps(fp.to_dict())


def test_weight_bytes_stored_vs_held(tiny: dict[str, Any]) -> None:
    dense, sparse, int8 = (footprint(tiny[m]) for m in ("dense", "sparse", "int8"))
    assert dense.weight_stored_bytes == dense.weight_runtime_bytes == dense.weight_dense_bytes == 401 * 4
    assert dense.densify_ops == 0 and dense.sparse_tensors == 0
    assert not any("densifies" in n for n in dense.notes)
    # CSR weights shrink the file, but DENSIFY expands them at load: the runtime holds all 401 floats
    assert sparse.densify_ops == sparse.sparse_tensors == 2
    assert sparse.weight_runtime_bytes == 401 * 4 > sparse.weight_stored_bytes
    assert sparse.file_bytes < dense.file_bytes
    statement = (f"runtime weight bytes = {sparse.weight_runtime_bytes:,}, not the stored "
                 f"{sparse.weight_stored_bytes:,}")
    assert any("densifies the weights at load" in n and statement in n for n in sparse.notes)
    assert int8.weight_runtime_bytes == 72 + 320 + 4 * 9  # int8 kernels, int32 biases
    by_name = {t.name: t for t in sparse.tensors}
    assert sum(t.runtime_bytes for t in by_name.values()) == sparse.weight_runtime_bytes
    assert {t.encoding for t in sparse.tensors if t.role == "weight"} == {"csr"}
    assert sum(layer.stored_bytes for layer in sparse.layers) == sparse.weight_stored_bytes
    assert sparse.by_op["CONV_2D"]["macs_dense"] == 1152 and sparse.by_op["FULLY_CONNECTED"]["params"] == 325


def test_activation_estimate(tiny: dict[str, Any]) -> None:
    from ai_edge_litert.interpreter import Interpreter

    for mode in ("dense", "sparse"):
        fp = footprint(tiny[mode])
        # the conv step holds its input (6x6x2 floats) and output (4x4x4 floats); DENSIFY outputs are weights
        assert fp.activation_bytes == 6 * 6 * 2 * 4 + 4 * 4 * 4 * 4 == 544, mode
        assert fp.activation_total_bytes == 288 + 256 + 256 + 20  # + the flattened copy and the logits
    fp = footprint(tiny["int8"])
    interp = Interpreter(model_path=str(tiny["int8"]))
    every_tensor = sum(int(np.prod(d["shape"])) * np.dtype(d["dtype"]).itemsize for d in interp.get_tensor_details())
    assert 0 < fp.activation_bytes <= fp.activation_total_bytes <= every_tensor


def test_transpose_conv_and_3d_fully_connected_macs(tmp_path: Path) -> None:
    from edgesparse import _tf

    tf, keras = _tf.tf(), _tf.keras()
    keras.utils.set_random_seed(2)
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Conv2DTranspose(2, 3, strides=2, padding="same")(inputs)  # -> 8x8x2
    x = keras.layers.Reshape((64, 2))(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))  # FC applied to 64 rows
    for layer in model.layers[1:]:
        if layer.weights:
            layer.weights[1].assign(np.full(layer.weights[1].shape, 0.5, np.float32))
    # with a dynamic batch the converter computes these shapes at run time (SHAPE, PACK...) and the
    # file holds placeholders: the footprint says its figures are not exact
    dynamic = footprint(_save(model, "dense", tmp_path / "dynamic.tflite"))
    assert not dynamic.shapes_exact and any("not exact" in n for n in dynamic.notes)
    fn = tf.function(model).get_concrete_function(tf.TensorSpec([1, 4, 4, 3], tf.float32))
    (tmp_path / "fixed.tflite").write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([fn], model).convert())
    fp = footprint(tmp_path / "fixed.tflite")
    assert fp.shapes_exact
    # transpose conv scatters every input pixel through the whole 3x3x3->2 filter
    assert {layer.op: layer.macs_dense for layer in fp.layers if layer.macs_dense} == {
        "TRANSPOSE_CONV": 4 * 4 * 3 * 3 * 3 * 2, "FULLY_CONNECTED": 64 * 2 * 3}
    assert fp.params == model.count_params()


def test_xnnpack_sparse_check(tmp_path: Path, tiny: dict[str, Any]) -> None:
    eligible = footprint(_save(_mobile(), "sparse", tmp_path / "mobile.tflite"))
    check = eligible.xnnpack_sparse
    assert check["eligible"], check["reasons"]
    assert check["arm_only"] and "ARM" in check["note"]
    [cluster] = check["clusters"]
    assert cluster["ok"] and cluster["conv1x1_zero_fraction"] > 2 / 3
    assert any("can apply" in n and "ARM" in n for n in eligible.notes)

    int8 = footprint(tiny["int8"]).xnnpack_sparse
    assert not int8["eligible"] and any("int8" in r and "float" in r for r in int8["reasons"])

    same = footprint(_save(_mobile(same_padding=True), "sparse", tmp_path / "same.tflite")).xnnpack_sparse
    assert not same["eligible"] and any("'same' padding" in r and "ZeroPadding2D(1)" in r for r in same["reasons"])

    dense_1x1 = footprint(_save(_mobile(keep=0.5), "sparse", tmp_path / "half.tflite")).xnnpack_sparse
    assert not dense_1x1["eligible"] and any("more than 2/3" in r for r in dense_1x1["reasons"])

    plain = footprint(tiny["dense"]).xnnpack_sparse
    assert not plain["eligible"]
    assert any("DENSIFY" in r for r in plain["reasons"]) and any("MEAN" in r for r in plain["reasons"])


def test_bad_files(tmp_path: Path, tiny: dict[str, Any]) -> None:
    data = tiny["sparse"].read_bytes()
    for name, content, message in (("empty.tflite", b"", "empty"), ("junk.tflite", b"\x00" * 64, "not a TFLite"),
                                    ("cut.tflite", data[: len(data) // 2], "truncated")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ProfileError, match=message):
            footprint(tmp_path / name)
