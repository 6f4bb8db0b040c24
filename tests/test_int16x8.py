"""quantization.mode int16x8 (int16 activations, int8 weights): export, verification, refusals and the int8 fallback.

Measured facts these tests hold (ai-edge-litert 2.3, TF 2.21): XNNPACK loads an int16x8 model and takes none of its
ops (the builtin kernels run them); the converter refuses int8 I/O for it and accepts int16; an input whose one
feature is about 1000x the others' scale loses tens of points in int8 (the input's one int8 scale rounds the small
features to zero) and stays within a few points of float in int16x8.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgesparse.errors import RecipeError
from edgesparse.recipe import validate_recipe
from edgesparse.tflite import inspect_tflite
from tests.conftest import tiny_recipe


def _int_tensor_types(model: Path) -> tuple[set[str], set[str]]:
    """(activation dtypes, weight dtypes) of the main graph: its non-constant tensors but the float I/O and the
    kernels DENSIFY expands, and the kernels of its CONV_2D / FULLY_CONNECTED ops."""
    info = inspect_tflite(model)
    skip = {t.index for t in info.inputs} | {t.index for t in info.outputs}
    skip |= {t for op in info.operators if op.op == "DENSIFY" for t in op.outputs}
    acts = {t.dtype for t in info.tensors if not t.has_data and t.index not in skip}
    weights = {info.tensors[op.inputs[1]].dtype for op in info.operators
               if op.op in ("CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D")}
    return acts, weights


def test_int16x8_end_to_end_keeps_int16_activations_int8_weights_and_the_zeros(tmp_path: Path) -> None:
    """A pruned tiny CNN on digits exported int16x8 (sparse encoding auto: plain only, the encoding breaks int16x8
    convolutions): int16 activations and int8 kernels in the flatbuffer, the pruned zeros kept in them, verification
    within the drop, XNNPACK's (non-)delegation reported, and the bundle deploys to this machine with the host's
    outputs."""
    from edgesparse.device.deploy import deploy
    from edgesparse.run import train

    recipe = validate_recipe(tiny_recipe(tmp_path, quantization={"mode": "int16x8"}, baseline={"epochs": 2},
                                         export={"objective": "size", "sparse_encoding": "auto"}))
    result = train(recipe)
    s = result.summary
    assert s.tflite is not None and s.tflite.quantization == "int16x8"
    bundle = Path(s.tflite.bundle)
    acts, weights = _int_tensor_types(bundle / "model.tflite")
    assert acts == {"int16"}, acts
    assert weights == {"int8"}, weights
    info = json.loads((bundle / "export.json").read_text())
    v = info["verification"]
    assert v["drop_points"] <= 2.0 and v["accuracy"] is not None and v["accuracy"] > 0.5, v
    [chosen] = info["candidates"]
    assert chosen["mode"] == "int16x8" and not chosen["sparse_encoding"] and chosen["chosen"], chosen
    assert chosen["tried_because"] == "the requested mode"
    assert chosen["xnnpack_ops"].startswith("0/") and chosen["builtin_ops"]["CONV_2D"] >= 2, chosen
    assert chosen["latency_ratio"] > 0 and chosen["resolver"] == "xnnpack"
    assert any("XNNPACK took 0/" in w for w in s.warnings), s.warnings
    # the pruned zeros survive in the dense int8 kernels, at the sparsity training reached
    kernels = {w["name"]: w["sparsity"] for w in info["model"]["weights"] if w["dtype"] == "int8"}
    assert info["model"]["encodings"] == {"dense": len(info["model"]["weights"])}, info["model"]["encodings"]
    assert len(kernels) == 4 and s.model is not None, kernels  # conv1, conv2, fc1, logits
    assert all(v == pytest.approx(s.model.sparsity_pruned_kernels, abs=0.01) for v in kernels.values()), kernels
    res = deploy(result.run_dir, "local", dest=str(tmp_path / "device"))
    assert res.device_metric == pytest.approx(res.host_metric)


def test_int16x8_with_int8_io_is_refused_and_int16_io_converts(tmp_path: Path) -> None:
    """The converter takes only float32 or int16 I/O for int16x8: the recipe refuses io int8 (naming int16 and
    float32), io int16 with another mode, and io int16 converts to int16 input and output tensors."""
    from edgesparse import _tf
    from edgesparse.export.convert import convert
    from edgesparse.export.litert import load_interpreter, predict

    with pytest.raises(RecipeError, match=r"int16x8.*int16 or float32"):
        validate_recipe(tiny_recipe(tmp_path, quantization={"mode": "int16x8"}, export={"io": "int8"}))
    with pytest.raises(RecipeError, match="sparse_encoding: false or auto"):
        validate_recipe(tiny_recipe(tmp_path, quantization={"mode": "int16x8"}, export={"sparse_encoding": True}))
    with pytest.raises(RecipeError, match=r"int16 needs quantization\.mode: int16x8"):
        validate_recipe(tiny_recipe(tmp_path, quantization={"mode": "int8"}, export={"io": "int16"}))
    with pytest.raises(RecipeError, match=r"Use export\.io: int16"):
        convert(_tf.keras().Sequential([_tf.keras().Input((4,)), _tf.keras().layers.Dense(2)]), "int16x8", io="int8",
                representative=[np.zeros(4, np.float32)])
    keras = _tf.keras()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype(np.float32)
    data = convert(model, "int16x8", io="int16", representative=list(x))
    info = inspect_tflite(data)
    assert [t.dtype for t in info.inputs] == ["int16"] and [t.dtype for t in info.outputs] == ["int16"]
    out = predict(load_interpreter(data), x)  # float in, quantized with the int16 tensor's scale, float out
    assert np.abs(out - model.predict(x, verbose=0)).max() < 0.05


def _fusion_data(tmp: Path, n: int = 3000) -> str:
    """15 unit-scale features and one raw reading about 1000x their scale; the class is a linear function of the 15."""
    rng = np.random.default_rng(0)
    small = rng.normal(size=(n, 15)).astype(np.float32)
    raw = (1000.0 * rng.normal(size=(n, 1))).astype(np.float32)
    y = np.argmax(small @ rng.normal(size=(15, 4)), axis=1).astype(np.int64)
    path = tmp / "fusion.npz"
    np.savez(path, x=np.concatenate([small, raw], axis=1), y=y)
    return str(path)


def test_int8_failing_for_accuracy_falls_back_to_int16x8_and_says_why(tmp_path: Path) -> None:
    """The issue's sensor-fusion MLP: int8 is rejected for accuracy (the input's one int8 scale is the raw reading's),
    so the candidates try int16x8, which keeps the float accuracy; export.json and the warning give that reason, not
    "ran as fast"."""
    from edgesparse.device.deploy import deploy
    from edgesparse.run import train

    recipe = tiny_recipe(tmp_path, data={"npz": _fusion_data(tmp_path), "batch_size": 64},
                         model={"factory": "tests.factories:scaled_input_mlp"},
                         baseline={"epochs": 10, "optimizer": {"learning_rate": 0.01}}, sparsity=None,
                         quantization={"mode": "int8"},
                         # measured: int8 loses about 47 points, int16x8 about 2 (fc1's int8 weights)
                         export={"objective": "size", "sparse_encoding": False, "max_accuracy_drop": 5.0})
    result = train(validate_recipe(recipe))
    s = result.summary
    assert s.baseline.accuracy is not None and s.baseline.accuracy > 0.7, s.baseline
    assert s.tflite is not None and s.tflite.quantization == "int16x8"
    info = json.loads((Path(s.tflite.bundle) / "export.json").read_text())
    int8, plain16, equalized = info["candidates"]
    assert int8["mode"] == "int8" and int8["rejected_for"] == "accuracy" and int8["drop"] > 20, int8
    # int16x8 is converted as it is and with its inputs equalized (fc1's raw-reading row is ~1000x smaller than
    # the others); the more accurate of the two is kept, the other set aside as superseded
    assert plain16["mode"] == equalized["mode"] == "int16x8" and not plain16["equalized"], plain16
    assert equalized["equalized"] == ["fc1"] and info["equalized"]["sensors"]["layer"] == "fc1", info["equalized"]
    int16 = next(c for c in (plain16, equalized) if c["chosen"])
    other = plain16 if int16 is equalized else equalized
    assert other["rejected_for"] == "superseded" and int16["drop"] <= other["drop"] and int16["drop"] <= 5.0, int16
    assert "every int8 conversion lost more than export.max_accuracy_drop" in int16["tried_because"]
    assert info["fallback"] == {"mode": "int16x8", "why": int16["tried_because"]}
    kept = next(w for w in s.warnings if w.startswith("export kept"))
    assert "max_accuracy_drop" in kept and "as fast" not in kept, kept
    # the kept int16x8 file (with its equalizing MUL and RESHAPE when that one won) runs on the device runner
    res = deploy(result.run_dir, "local", dest=str(tmp_path / "device"))
    assert res.device_metric == pytest.approx(res.host_metric)


def test_equalize_rescales_inputs_and_rows_without_changing_the_float_model(tmp_path: Path) -> None:
    """equalize() divides each input feature by c and multiplies the first layer's kernel row by it: the float
    outputs stay the same, the rows come within MAX_RATIO of each other in range, names are kept, and the converted
    int16x8 model holds the MUL and one RESHAPE (the converter would otherwise fold the MUL back into the weights).
    Inputs with a second consumer, or rows of about one range, are left alone."""
    from edgesparse import _tf
    from edgesparse.export.convert import convert
    from edgesparse.export.equalize import MAX_RATIO, equalize, factors
    from tests.factories import scaled_input_mlp

    keras = _tf.keras()
    keras.utils.set_random_seed(0)
    model = scaled_input_mlp()
    x = np.asarray(np.load(_fusion_data(tmp_path))["x"][:200])
    eq = equalize(model, x)
    assert eq is not None and eq.layers == ["fc1"] and eq.inputs["sensors"]["row_spread"] > 100, eq and eq.inputs
    assert eq.model.input_names == model.input_names and eq.model.output_names == model.output_names
    np.testing.assert_allclose(eq.model.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-4, atol=1e-4)
    def spread(m: Any) -> float:
        rows = np.abs(m.get_layer("fc1").get_weights()[0]).max(axis=1)
        return float(rows.max() / rows.min())

    assert spread(eq.model) * 10 < spread(model) and eq.inputs["sensors"]["factor_max"] <= MAX_RATIO
    ops = inspect_tflite(convert(eq.model, "int16x8", representative=list(x))).op_counts
    assert ops.get("MUL") == 1 and ops.get("RESHAPE") == 1 and ops.get("FULLY_CONNECTED") == 3, ops
    # a Sequential model keeps its input's name (the .tflite signature's)
    seq = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8)])
    seq.layers[0].kernel.assign(seq.layers[0].kernel.numpy() * np.r_[np.ones(15), 1e-3][:, None])
    eq_seq = equalize(seq, x)
    assert eq_seq is not None and eq_seq.model.input_names == seq.input_names == list(eq_seq.inputs), eq_seq.inputs
    np.testing.assert_allclose(eq_seq.model.predict(x, verbose=0), seq.predict(x, verbose=0), rtol=1e-4, atol=1e-3)
    # factors: 1 for the largest rows, at most MAX_RATIO, and a pruned-away row keeps 1
    c = factors(np.array([[0.5, 0.3], [0.001, 0.002], [0.0, 0.0]]), np.array([1.0, 1000.0, 5.0]))
    assert c is not None and c[0] == 1.0 and c[2] == 1.0 and 1.0 < c[1] <= MAX_RATIO, c
    # an input feeding two layers (a skip connection) is not equalized; nor a kernel whose rows are alike
    inp = keras.Input((16,), name="sensors")
    two = keras.Model(inp, keras.layers.Concatenate()([keras.layers.Dense(4, name="a")(inp), inp]))
    assert equalize(two, x) is None
    alike = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, kernel_initializer="ones")])
    assert equalize(alike, np.ones((4, 16), np.float32)) is None

