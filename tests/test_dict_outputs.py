"""A model whose outputs are a dict (``keras.Model(x, {"cls": ..., "seg": ...})``) through every stage: compile,
baseline, guards, channels (outputs of different shapes), sparsity, int8, export, verify and deploy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgesparse  # noqa: F401  (before tensorflow)


def dict_model(keras: Any = None) -> Any:
    """8x8 grey images in; ``cls`` (softmax over 3: which quadrant is brightest) and ``seg`` (per-pixel softmax over
    2: bright or not) out, as a dict."""
    from edgesparse import _tf

    keras = keras or _tf.keras()
    layers = keras.layers
    x = keras.Input((8, 8, 1), name="image")
    h = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    h = layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(h)
    seg = layers.Conv2D(2, 1, activation="softmax", name="seg")(h)
    pooled = layers.GlobalAveragePooling2D(name="pool")(layers.Conv2D(12, 3, strides=2, activation="relu",
                                                                      name="conv3")(h))
    cls = layers.Dense(3, activation="softmax", name="cls")(layers.Dense(16, activation="relu", name="fc")(pooled))
    return keras.Model(x, {"cls": cls, "seg": seg}, name="dict_outputs")


def _data(n: int = 600, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((n, 8, 8, 1)).astype(np.float32) * 0.4
    cls = rng.integers(0, 3, n)
    corner = [(0, 0), (0, 4), (4, 0)]
    for i, c in enumerate(cls):
        r, q = corner[c]
        x[i, r:r + 4, q:q + 4] += 0.5
    seg = (x[..., 0] > 0.45).astype(np.int64)
    return {"x": x, "y_cls": cls, "y_seg": seg}


@pytest.mark.parametrize("library", ["tf_keras", "keras3"])
def test_dict_outputs_become_a_list_named_by_the_keys_with_the_same_predictions(library: str) -> None:
    from edgesparse import _tf
    from edgesparse.models import prepare_model

    keras = _tf.keras() if library == "tf_keras" else _tf.keras3()
    model = dict_model(keras)
    x = _data(8)["x"]
    before = model.predict(x, verbose=0)
    prepared = prepare_model(model)
    assert isinstance(prepared, _tf.keras().Model) and prepared.output_names == ["cls", "seg"]
    after = prepared.predict(x, verbose=0)
    for i, key in enumerate(("cls", "seg")):
        np.testing.assert_allclose(after[i], before[key], atol=1e-5)
    # keys that differ from the layers' names name the outputs (an identity Activation), in the dict's order
    inp = keras.Input((3,))
    renamed = keras.Model(inp, {"score": keras.layers.Dense(2, name="dense_a")(inp),
                                "aux": keras.layers.Dense(1, name="dense_b")(inp)})
    assert prepare_model(renamed).output_names == ["score", "aux"]


def test_dict_outputs_of_different_shapes_pass_channel_surgery() -> None:
    from edgesparse.models import prepare_model
    from edgesparse.train.channels.graph import build_graph
    from edgesparse.train.channels.surgery import check_equal, mask_model, thin_model

    model = prepare_model(dict_model())
    graph = build_graph(model)
    keep = np.ones(graph.num_units, dtype=bool)
    for g in graph.groups:
        keep[g.units[: len(g.units) // 2]] = False
    assert graph.frozen[graph.node("cls").output].all() and graph.frozen[graph.node("seg").output].all()
    thinned = thin_model(model, graph, keep)
    assert check_equal(mask_model(model, graph, keep), thinned, _data(16)["x"]) <= 1e-4
    assert thinned.output_shape == model.output_shape == [(None, 3), (None, 8, 8, 2)]


@pytest.mark.slow
def test_dict_output_h5_model_through_every_stage(tmp_path: Path) -> None:
    """The issue's case: a tf_keras .h5 with dict outputs crashed the sparsity phase (compile metrics)."""
    from edgesparse.device.deploy import deploy
    from edgesparse.recipe import validate_recipe
    from edgesparse.run import train

    dict_model().save(tmp_path / "model.h5")
    np.savez(tmp_path / "data.npz", **_data())
    recipe = {"name": "dict", "seed": 0, "output_dir": str(tmp_path / "run"),
              "data": {"npz": str(tmp_path / "data.npz"), "batch_size": 32},
              "model": {"path": str(tmp_path / "model.h5")},
              "baseline": {"epochs": 6, "optimizer": {"learning_rate": 0.01}},
              "channels": {"ratio": 0.75, "epochs": 3, "on_drop": "warn"},
              "sparsity": {"final": 0.6, "end": 1, "epochs": 3, "frequency": 5, "on_drop": "warn"},
              "quantization": {"mode": "int8"},
              "export": {"dir": str(tmp_path / "bundle"), "objective": "size", "sparse_encoding": False},
              "task": {"outputs": {"cls": {"kind": "classification"}, "seg": {"kind": "segmentation"}},
                       "primary": "cls"}}
    result = train(validate_recipe(recipe), force=True, progress=False)
    s = result.summary
    assert [h["name"] for h in s.task["outputs"]] == ["cls", "seg"] and s.task["metric"] == "cls/accuracy"
    assert s.baseline.metrics["cls/accuracy"] > 0.9 and s.baseline.metrics["seg/miou"] > 0.9, s.baseline.metrics
    assert s.channels is not None and s.channels.params < s.channels.dense_params
    assert s.sparsity is not None and s.sparsity.validation_metric is not None
    assert s.tflite is not None and s.tflite.metric is not None
    v = json.loads((tmp_path / "bundle" / "export.json").read_text())["verification"]
    assert set(v["heads"]) == {"cls", "seg"} and v["heads"]["seg"]["agreement"] > 0.9, v["heads"]
    assert abs(s.tflite.metrics["seg/miou"] - s.model.metrics["seg/miou"]) <= 0.05
    res = deploy(result.run_dir, "local", dest=str(tmp_path / "device"))
    assert set(res.outputs) == {"cls", "seg"}
    assert all(h["max_abs_diff"] <= 1e-5 for h in res.outputs.values()), res.outputs
    assert res.device_metric == pytest.approx(res.host_metric)
