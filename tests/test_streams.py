"""Data of any size, also from Python: streamed splits, data factories, image folders read from disk, and model and
data objects given to the API (issue 17). Every run trains a tiny real model; nothing is mocked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgesparse import _tf
from edgesparse.data import load_dataset, validate_data_config
from edgesparse.data.stream import Split
from edgesparse.errors import DataError, RecipeError
from tests.conftest import tiny_recipe, write_recipe
from tests.factories import digits_arrays, generated_stream

ROOT = Path(__file__).resolve().parents[1]


def _recipe(tmp: Path, **sections: Any) -> Any:
    from edgesparse.recipe import Recipe

    raw = tiny_recipe(tmp, **sections)
    for key in [k for k, v in raw.items() if v == "DROP"]:
        del raw[key]
    return Recipe.model_validate(raw)


# ---- Split ----------------------------------------------------------------------------------------------------


def test_stream_split_counts_batches_and_bounds_what_it_materialises() -> None:
    d = generated_stream(100)
    train = Split(stream=d["train"], name="train")  # from_generator: length unknown until counted
    assert int(d["train"].cardinality()) < 0
    assert train.n == 60 and train.input_shapes() == [8, 8, 1]
    order = [int(y) for _, yb in train.batches(16) for y in yb]
    assert order == [int(y) for _, yb in train.batches(16) for y in yb]  # same order every pass
    assert [len(yb) for _, yb in train.batches(16)] == [16, 16, 16, 12]
    x, y = train.head(10)
    assert x.shape == (10, 8, 8, 1) and list(y) == order[:10]
    assert train.sample(7, seed=1).shape == (7, 8, 8, 1)
    # a stream's shuffle buffer is bounded (64 MB of samples), an in-memory split shuffles all of it
    assert train.shuffle_buffer(32) == 60  # no larger than the split
    tf = _tf.tf()
    many = Split(stream=tf.data.Dataset.from_tensor_slices((np.zeros((3, 64, 64, 3), np.float32), [0, 1, 2])).repeat(10**5))
    assert many.shuffle_buffer(32) == 64 * 2**20 // (64 * 64 * 3 * 4)  # 64 MB of samples
    big = Split(stream=tf.data.Dataset.from_tensor_slices((np.zeros((3, 512, 512, 3), np.float32), [0, 1, 2])).repeat(100))
    assert big.shuffle_buffer(32) == 32  # 3 MB per sample: one batch
    assert Split(np.zeros((5, 2)), np.zeros(5)).shuffle_buffer(32) == 5
    with pytest.raises(DataError, match="streamed"):
        _ = train.x



def test_label_probes_of_a_stream_read_its_targets_without_keeping_its_inputs() -> None:
    d = generated_stream(100)
    train = Split(stream=d["train"], name="train")
    assert list(train.targets(10)) == list(train.head(10)[1])
    assert len(train.targets()) == 60
    assert list(Split(np.zeros((5, 2)), np.arange(5)).targets(3)) == [0, 1, 2]
    # the class probe, bind_task's label checks and the health check's chance level read only targets: a stream
    # whose inputs cannot be materialised (one sample is 3 MB, the probes read up to 4096 samples) still binds
    tf = _tf.tf()
    big = Split(stream=tf.data.Dataset.range(4096).map(lambda i: (tf.zeros((512, 512, 3)), i % 4)), name="train")
    assert big.targets(4096).shape == (4096,)

# ---- factories ------------------------------------------------------------------------------------------------


def test_factory_tf_data_two_inputs_two_outputs_end_to_end(tmp_path: Path) -> None:
    """A factory's tf.data splits of dict elements train, prune, quantize to int8 and verify, nothing materialised."""
    from edgesparse import train

    recipe = _recipe(tmp_path, data={"factory": "tests.factories:stream_two_in_two_out", "kwargs": {"n": 400},
                                     "batch_size": 32},
                     model={"factory": "tests.factories:two_in_two_out"}, baseline={"epochs": 4},
                     quantization={"mode": "int8"}, export={"sparse_encoding": False, "objective": "size"})
    s = train(recipe, run_dir=tmp_path / "run").summary
    src = s.data.source
    assert src["factory"] == "tests.factories:stream_two_in_two_out"
    assert {k: v["kind"] for k, v in src["splits"].items()} == {"train": "stream", "validation": "stream",
                                                               "test": "stream"}
    assert src["splits"]["train"]["element_spec"]["x"]["shape"] == {"img": [8, 8, 1], "meta": [3]}
    assert (s.data.train, s.data.validation, s.data.test) == (240, 80, 80)
    assert s.task["primary"] == "cls"
    assert s.baseline.metrics["cls/accuracy"] > 0.5  # 4 bright quadrants: learnable in 4 epochs
    v = json.loads((tmp_path / "bundle" / "export.json").read_text())["verification"]
    assert v["samples"] == 80 and set(v["heads"]) == {"cls", "box"}
    assert s.tflite.quantization == "int8" and abs(v["drop"]) <= 10


def test_factory_returning_arrays_and_generator_stream(tmp_path: Path) -> None:
    """Arrays from a factory stay in memory; a generator stream of unknown length is counted and trained on."""
    ds = load_dataset(validate_data_config({"factory": "tests.factories:digits_arrays", "kwargs": {"limit": 300}}),
                      seed=0)
    assert not ds.streamed and ds.sizes() == (210, 45, 45) and ds.num_classes == 10
    assert ds.x_train.dtype == np.float32
    from edgesparse import train

    recipe = _recipe(tmp_path, data={"factory": "tests.factories:generated_stream", "kwargs": {"n": 300}},
                     model={"builtin": "small_cnn", "filters": [4, 8], "dense": 16}, baseline={"epochs": 2},
                     sparsity={"end": 1}, export=None)
    s = train(recipe, run_dir=tmp_path / "run").summary
    assert (s.data.train, s.data.num_classes) == (180, 4)
    assert s.sparsity is not None and all(v >= 0.74 for v in s.sparsity.achieved.layers.values())


@pytest.mark.parametrize(("data", "match"), [
    ({"factory": "no_such_module_xyz:make"}, "cannot import module 'no_such_module_xyz'"),
    ({"factory": "tests.factories:no_such_function"}, "has no attribute 'no_such_function'"),
    ({"factory": "tests.factories:NOT_CALLABLE"}, "not a function"),
    ({"factory": "tests.factories:not_a_mapping"}, "returned a builtins.list; it must return a mapping"),
    ({"factory": "tests.factories:no_validation"}, "no 'validation' split: the guards compare"),
    ({"factory": "tests.factories:batched_stream"}, "is batched .*remove .batch"),
    ({"factory": "tests.factories:empty_test"}, "'test' dataset is empty"),
    ({"factory": "tests.factories:digits_arrays", "kwargs": {"bogus": 1}}, "raised TypeError: .*bogus"),
])
def test_bad_factories_are_explained(data: dict[str, Any], match: str) -> None:
    with pytest.raises(DataError, match=match):
        load_dataset(validate_data_config(data), seed=0)


def test_stream_elements_that_do_not_fit_the_model_are_explained(tmp_path: Path) -> None:
    from edgesparse.check import check_recipe

    recipe = _recipe(tmp_path, data={"factory": "tests.factories:wrong_shape_stream"},
                     model={"factory": "tests.factories:five_outputs"})
    with pytest.raises(DataError, match=r"samples have shape \(6, 6, 1\) but the model .* expects \(8, 8, 1\)"):
        check_recipe(recipe)
    tf = _tf.tf()
    text = tf.data.Dataset.from_tensor_slices((["a", "b"], [0, 1]))
    from edgesparse import train

    with pytest.raises(DataError, match="input x has dtype string"):
        train(_recipe(tmp_path, data="DROP", model="DROP"), model=_tf.keras().Sequential([_tf.keras().Input((1,)),
                                                                               _tf.keras().layers.Dense(2)]),
              data={"train": text, "validation": text, "test": text}, run_dir=tmp_path / "strings")


# ---- image folder, streamed from disk -------------------------------------------------------------------------


def _png_folder(root: Path, per_class: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, name in enumerate(("dark", "light")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            arr = np.clip(rng.normal(60 + 120 * k, 30, (12, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr, "RGB").save(root / name / f"{i}.png")
    return root


def test_image_folder_streams_end_to_end_under_mirrored(tmp_path: Path) -> None:
    """`edgesparse train` on a PNG folder read batch by batch (cached on disk), on two mirrored CPU replicas."""
    _png_folder(tmp_path / "photos", per_class=40)
    recipe = tiny_recipe(tmp_path, data={"image_folder": "photos", "image_size": 8, "batch_size": 16,
                                         "cache": str(tmp_path / "cache" / "imgs")},
                         baseline={"epochs": 3}, sparsity={"end": 1}, training={"distribution": "mirrored"})
    (tmp_path / "cache").mkdir()
    path = write_recipe(tmp_path, recipe)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGESPARSE_CPU_DEVICES": "2"}
    proc = subprocess.run([sys.executable, "-m", "edgesparse.cli", "train", str(path)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["training"] == {"distribution": "mirrored", "replicas": 2}
    assert s["data"]["source"]["files"] == 80 and s["data"]["source"]["splits"]["train"]["kind"] == "stream"
    assert s["data"]["class_names"] == ["dark", "light"]
    assert s["baseline"]["accuracy"] >= 0.75  # dark vs light, 16 test images
    assert any(p.name.startswith("imgs.train") for p in (tmp_path / "cache").iterdir())
    assert (tmp_path / "bundle" / "model.tflite").exists()


# ---- objects in the Python API --------------------------------------------------------------------------------


def test_api_keras3_model_object_and_arrays(tmp_path: Path) -> None:
    """A Keras 3 model object and numpy arrays, no model or data section: translated, trained, written back."""
    from edgesparse import Recipe, train

    keras3 = _tf.keras3()
    inputs = keras3.Input((8, 8, 1))
    x = keras3.layers.Flatten()(inputs)
    x = keras3.layers.Dense(32, activation="relu", name="fc1")(x)
    model = keras3.Model(inputs, keras3.layers.Dense(10, activation="softmax", name="out")(x))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    before = [w.copy() for w in model.get_weights()]
    recipe = Recipe(name="mine", baseline={"epochs": 6, "optimizer": {"learning_rate": 0.01}},
                    sparsity={"final": 0.5, "end": 1, "epochs": 2, "on_drop": "warn"},
                    quantization={"mode": "int8"}, export={"dir": str(tmp_path / "bundle"), "objective": "size"})
    result = train(recipe, model=model, data=digits_arrays(), run_dir=tmp_path / "run")
    s = result.summary
    assert s.baseline.model_source["keras"] == "3" and s.baseline.model_source["inputs"] == [[8, 8, 1]]
    splits = s.data.source["splits"]
    assert s.data.source["python"] == "data"
    assert {k: (v["samples"], v["kind"]) for k, v in splits.items()} == {
        "train": (1257, "arrays"), "validation": (270, "arrays"), "test": (270, "arrays")}
    assert splits["test"]["element_spec"] == {"x": {"shape": [8, 8, 1], "dtype": "float32"},
                                              "y": {"shape": [], "dtype": "int64"}}
    assert s.baseline.keras3_input and (tmp_path / "run" / "final_keras3.keras").exists()
    assert s.baseline.accuracy > 0.85 and s.model.accuracy > 0.7 and s.tflite.quantization == "int8"
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # the object is not trained


def test_api_tf_keras_model_object_and_tf_data_splits(tmp_path: Path) -> None:
    from edgesparse import Recipe, analyze, train

    keras = _tf.keras()
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(16, activation="relu", name="fc1"),
                              keras.layers.Dense(4, activation="softmax", name="out")])
    before = [w.copy() for w in model.get_weights()]
    recipe = Recipe(name="obj", data={"python": "shapes", "batch_size": 16}, baseline={"epochs": 2},
                    sparsity={"final": 0.5, "end": 1, "epochs": 1, "on_drop": "warn"}, export=None)
    data = generated_stream(200)
    s = train(recipe, model=model, data=data, run_dir=tmp_path / "run").summary
    assert s.data.name == "shapes" and s.data.source["splits"]["train"]["kind"] == "stream"
    assert s.baseline.model_source["keras"] == "tf_keras"
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    report = analyze(recipe, model=model, data=data, out_dir=tmp_path / "analyze", ratios=[0.5])
    assert [r.group for r in report.rows] == ["fc1"] and report.json_path.exists()
    # one source for each of model and data: the call or the recipe, never both, never neither
    with pytest.raises(RecipeError, match="model= was given together with the recipe's own model: section"):
        train(_recipe(tmp_path), model=model, data=data, run_dir=tmp_path / "x")
    with pytest.raises(RecipeError, match="the recipe has no data section and the call gives no data="):
        train(recipe, model=model, run_dir=tmp_path / "y")
    with pytest.raises(DataError, match="only exist in the process"):
        load_dataset(recipe.data, seed=0)
