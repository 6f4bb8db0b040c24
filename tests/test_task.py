"""The task layer (edgesparse/task/): kinds, metrics, directions, inference, and every kind end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgesparse.errors import DataError, RecipeError
from edgesparse.task import Head, OutputInfo, Task, TaskConfig, metric_value, resolve_task, roc_auc
from edgesparse.tflite import inspect_tflite
from edgesparse.tflite.mixed import float_ops, integer_ops
from tests.conftest import tiny_recipe


def _head(kind: str, **kw: Any) -> Head:
    defaults = {"classification": ("sparse_categorical_crossentropy", "accuracy", ("accuracy",), "higher"),
                "binary": ("binary_crossentropy", "accuracy", ("accuracy", "auc"), "higher"),
                "multilabel": ("binary_crossentropy", "accuracy", ("accuracy", "auc"), "higher"),
                "regression": ("mse", "mae", ("mae", "mse"), "lower"),
                "anomaly": ("mse", "auc", ("auc", "pauc", "reconstruction_mse"), "higher")}[kind]
    args = {"name": "out", "kind": kind, "loss": defaults[0], "metric": defaults[1], "metrics": defaults[2],
            "direction": defaults[3], **kw}
    return Head(**args)


def _task(*heads: Head) -> Task:
    return Task(heads=heads, primary=heads[0].name)


# ---- metrics and directions ----------------------------------------------------------------------------------


def test_binary_accuracy_thresholds_probabilities_and_logits_alike() -> None:
    y = np.array([0, 1, 1, 0])
    probs = np.array([[0.2], [0.7], [0.4], [0.6]])
    logits = np.log(probs / (1 - probs))
    assert metric_value(_head("binary"), "accuracy", probs, y) == 0.5
    assert metric_value(_head("binary", logits=True), "accuracy", logits, y) == 0.5
    assert metric_value(_head("binary", threshold=0.35), "accuracy", probs, y) == 0.75


def test_auc_matches_a_hand_count_and_is_none_without_both_labels() -> None:
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8])  # 3 of the 4 positive/negative pairs are ordered right
    assert roc_auc(y, s) == pytest.approx(0.75)
    assert roc_auc(np.zeros(4), s) is None


def test_anomaly_scores_by_reconstruction_error_auc_and_pauc() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16)).astype(np.float32)
    y = np.r_[np.zeros(100), np.ones(100)].astype(np.int64)
    recon = x.copy()
    recon[100:] += rng.normal(0, 1.0, size=(100, 16))  # anomalies are reconstructed badly
    task = _task(_head("anomaly"))
    scores = task.evaluate(recon, y, x)
    assert scores["auc"] > 0.99 and scores["pauc"] > 0.9
    assert scores["reconstruction_mse"] == pytest.approx(np.mean((recon - x) ** 2), rel=1e-5)
    # a split of normal samples only (validation) has no AUC: the guard reads the reconstruction error
    normal = task.evaluate(recon[:100], y[:100], x[:100])
    assert "auc" not in normal and task.guard_key == "reconstruction_mse"


def test_degradation_is_points_for_fractions_and_relative_for_errors() -> None:
    cls = _task(_head("classification"))
    assert cls.degradation(0.90, 0.87) == pytest.approx(3.0)  # 3 points worse
    assert cls.degradation(0.90, 0.95) == pytest.approx(-5.0)
    reg = _task(_head("regression"))
    assert reg.degradation(0.20, 0.22) == pytest.approx(10.0)  # mae up by 10% is worse
    assert reg.degradation(0.20, 0.18) == pytest.approx(-10.0)
    assert reg.unit("mae") == "%" and cls.unit("accuracy") == "points"
    assert reg.max_drop(None) == 10.0 and cls.max_drop(None) == 2.0 and cls.max_drop(0.5) == 0.5
    assert math.isinf(reg.degradation(0.0, 0.1))


def test_compare_agreement_for_classes_and_errors_for_values() -> None:
    t = Task(heads=(_head("classification", name="cls", units=3), _head("regression", name="box", units=2)),
             primary="cls")
    k = {"cls": np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]]), "box": np.array([[1.0, 2.0], [3.0, 4.0]])}
    tl = {"cls": np.array([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1]]), "box": np.array([[1.0, 2.1], [3.0, 4.0]])}
    c = t.compare(k, tl)
    assert c["heads"]["cls"]["agreement"] == 0.5
    assert c["heads"]["box"]["agreement"] is None
    assert c["heads"]["box"]["max_abs_diff"] == pytest.approx(0.1)
    assert c["heads"]["box"]["max_rel_diff"] == pytest.approx(0.1 / 4.0)
    assert c["agreement"] == 0.5


def test_task_round_trips_through_json() -> None:
    t = Task(heads=(_head("classification", name="cls", units=4), _head("regression", name="box", weight=10.0)),
             primary="cls", reason="test", input_names=("img",))
    back = Task.from_json(json.loads(json.dumps(t.to_json())))
    assert back.heads == t.heads and back.primary == "cls" and back.input_names == ("img",)
    assert t.to_json()["kind"] == "multi" and t.metric_key == "cls/accuracy"


# ---- inference from the model and the data -------------------------------------------------------------------


def _infer(outputs: list[OutputInfo], targets: dict[str, Any], **kw: Any) -> Task:
    return resolve_task(None, outputs, targets, **kw)


def test_auto_infers_each_kind_users_ship() -> None:
    rng = np.random.default_rng(0)
    binary = _infer([OutputInfo("score", (1,), "sigmoid")], {"score": rng.integers(0, 2, 50)})
    assert binary.kind == "binary" and "sigmoid" in binary.reason
    onehot = np.eye(5, dtype=np.int64)[rng.integers(0, 5, 50)]
    assert _infer([OutputInfo("p", (5,), "softmax")], {"p": onehot}).kind == "classification"
    multi = (rng.random((50, 3)) > 0.5).astype(np.int64)
    assert _infer([OutputInfo("t", (3,), "sigmoid")], {"t": multi}).kind == "multilabel"
    reg = _infer([OutputInfo("r", (2,), "linear")], {"r": rng.normal(size=(50, 2)).astype(np.float32)})
    assert reg.kind == "regression" and reg.metric_key == "mae" and reg.direction == "lower"
    heads = _infer([OutputInfo("cls", (4,), "softmax"), OutputInfo("box", (4,), "linear")],
                   {"cls": rng.integers(0, 4, 50), "box": rng.normal(size=(50, 4)).astype(np.float32)})
    assert [h.kind for h in heads.heads] == ["classification", "regression"] and heads.primary == "cls"
    ae = _infer([OutputInfo("recon", (640,), "linear")], {"recon": None}, x_shape=(640,), has_test_labels=True)
    assert ae.kind == "anomaly" and ae.metric_key == "auc"


def test_auto_asks_for_a_task_when_an_autoencoder_has_no_labelled_test_split() -> None:
    with pytest.raises(RecipeError, match="anomaly"):
        _infer([OutputInfo("recon", (64,), "linear")], {"recon": None}, x_shape=(64,), has_test_labels=False)


@pytest.mark.parametrize("cfg, outputs, match", [
    ({"kind": "binary"}, [OutputInfo("p", (5,), "softmax")], "one sigmoid"),
    ({"kind": "classification"}, [OutputInfo("s", (1,), "sigmoid")], "task binary"),
    ({"outputs": {"clss": {"kind": "classification"}}}, [OutputInfo("cls", (4,), "softmax")], "did you mean 'cls'"),
    ({"kind": "regression", "loss": "nosuch.module:fn"}, [OutputInfo("r", (1,), "linear")], "does not import"),
    ({"kind": "regression", "metric": "auc"}, [OutputInfo("r", (1,), "linear")], "does not apply"),
])
def test_a_task_the_model_contradicts_is_an_error_naming_the_fix(cfg: dict[str, Any], outputs: list[OutputInfo],
                                                                  match: str) -> None:
    with pytest.raises((RecipeError, ValueError), match=match):
        resolve_task(TaskConfig(**cfg), outputs, {o.name: np.zeros(10, np.int64) for o in outputs})


def test_targets_that_fit_no_task_are_refused() -> None:
    with pytest.raises(DataError, match="NaN"):
        _infer([OutputInfo("r", (1,), "linear")], {"r": np.array([0.5, np.nan])})


def test_recipe_task_forms_validate_and_typos_get_did_you_mean() -> None:
    from edgesparse.recipe import validate_recipe

    base = {"name": "t", "data": {"builtin": "digits"}, "model": {"builtin": "mlp"}}
    assert validate_recipe({**base, "task": "regression"}).task.kind == "regression"
    assert validate_recipe(base).task.kind == "auto"
    two = validate_recipe({**base, "task": {"outputs": {"cls": {"kind": "classification"},
                                                         "box": {"kind": "regression", "loss": "huber", "weight": 10}},
                                             "primary": "cls"}})
    assert two.task.outputs is not None and two.task.outputs["box"].weight == 10
    with pytest.raises(RecipeError, match="did you mean 'binary'"):
        validate_recipe({**base, "task": "binery"})
    with pytest.raises(RecipeError, match="did you mean 'auc'"):
        validate_recipe({**base, "task": {"kind": "binary", "metric": "acu"}})
    with pytest.raises(RecipeError, match="direction"):
        validate_recipe({**base, "task": {"kind": "regression", "metric": "tests.test_task:my_metric"}})


def my_metric(y: Any, out: Any) -> float:
    """A custom metric for the tests (median absolute error)."""
    return float(np.median(np.abs(np.asarray(out).reshape(len(y), -1) - np.asarray(y).reshape(len(y), -1))))


# ---- every kind end to end: train -> prune -> int8 -> export -> verify ------------------------------------------


def _features(rng: np.random.Generator, n: int, d: int = 12) -> np.ndarray:
    return rng.normal(size=(n, d)).astype(np.float32)


def _npz(tmp: Path, **arrays: np.ndarray) -> str:
    path = tmp / "data.npz"
    np.savez(path, **arrays)
    return str(path)


def _run(tmp: Path, data: dict[str, Any], model: dict[str, Any], **sections: Any) -> Any:
    from edgesparse.recipe import validate_recipe
    from edgesparse.run import train

    sparsity = {"final": 0.8, "end": 1, "epochs": 2, "frequency": 5, "on_drop": "warn", **sections.pop("sparsity", {})}
    # one int8 candidate (sparse encoding off) keeps these runs short; the two-input/two-output run converts both ways
    export = {"objective": "size", "sparse_encoding": False, **sections.pop("export", {})}
    recipe = tiny_recipe(tmp, data={"batch_size": 64, **data}, model=model,
                         baseline={"epochs": 8, "optimizer": {"learning_rate": 0.01}}, sparsity=sparsity,
                         quantization=sections.pop("quantization", {"mode": "int8"}), export=export, **sections)
    return train(validate_recipe(recipe))


def _check_export(result: Any, kind: str, metric: str) -> dict[str, Any]:
    s = result.summary
    assert s.task is not None and s.task["kind"] == kind and s.task["metric"] == metric, s.task
    assert s.tflite is not None and s.tflite.quantization == "int8"
    assert s.model is not None and s.model.sparsity_pruned_kernels == pytest.approx(0.8, abs=0.02)
    export = json.loads((Path(s.tflite.bundle) / "export.json").read_text())
    assert export["task"]["kind"] == kind
    v = export["verification"]
    assert v["metric_name"] == metric.replace("/", " ")
    _deploy_locally(result)
    return v


def _deploy_locally(result: Any) -> None:
    """Deploy the run to this machine (the runner in a subprocess): every head matches the host's outputs."""
    from edgesparse.device.deploy import deploy

    res = deploy(result.run_dir, "local", dest=str(Path(result.run_dir) / "device"))
    assert set(res.outputs) == {h["name"] for h in result.summary.task["outputs"]}, res.outputs
    for name, head in res.outputs.items():
        assert head["max_abs_diff"] <= 1e-5, (name, head)  # same runtime, same kernels on both sides
        assert head["agreement"] is None or head["agreement"] == 1.0, (name, head)
    assert res.metric_key == result.summary.task["metric"] and res.device_metric == pytest.approx(res.host_metric)


def test_keras3_binary_detector_end_to_end(tmp_path: Path) -> None:
    """A Keras 3 model ending in Dense(1, sigmoid) with 0/1 labels: inferred binary, translated, written back."""
    rng = np.random.default_rng(0)
    x = _features(rng, 800)
    y = (x @ rng.normal(size=12) > 0).astype(np.int64)
    r = _run(tmp_path, {"npz": _npz(tmp_path, x=x, y=y)}, {"factory": "tests.factories:keras3_binary"})
    v = _check_export(r, "binary", "accuracy")
    assert r.summary.baseline.keras3_input and r.summary.keras3 and "error" not in r.summary.keras3
    assert r.summary.baseline.metric > 0.85 and r.summary.baseline.metrics["auc"] > 0.9
    assert v["agreement"] >= 0.95 and v["metric"] > 0.8 and v["metrics"]["auc"] > 0.85


def test_one_hot_labels_train_a_classifier_end_to_end(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = _features(rng, 800)
    labels = np.argmax(x @ rng.normal(size=(12, 5)), axis=1)
    r = _run(tmp_path, {"npz": _npz(tmp_path, x=x, y=np.eye(5, dtype=np.int64)[labels])},
             {"factory": "tests.factories:five_class"})
    v = _check_export(r, "classification", "accuracy")
    assert r.summary.baseline.accuracy > 0.7  # chance is about 0.2
    assert v["agreement"] >= 0.9 and v["accuracy"] > 0.6


def test_multilabel_end_to_end(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = _features(rng, 800)
    y = (x @ rng.normal(size=(12, 3)) > 0).astype(np.int64)
    r = _run(tmp_path, {"npz": _npz(tmp_path, x=x, y=y)}, {"factory": "tests.factories:multilabel_sigmoid"})
    v = _check_export(r, "multilabel", "accuracy")
    assert r.summary.baseline.metric > 0.85 and v["agreement"] >= 0.9 and v["metric"] > 0.8


def test_conv1d_regressor_with_two_continuous_outputs_end_to_end(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(800, 32, 3)).astype(np.float32)
    y = np.stack([x[:, :, 0].mean(axis=1) * 3, (x[:, :, 1] - x[:, :, 2]).mean(axis=1) * 3], axis=1)
    r = _run(tmp_path, {"npz": _npz(tmp_path, x=x, y=y.astype(np.float32))},
             {"factory": "tests.factories:conv1d_regressor"})
    v = _check_export(r, "regression", "mae")
    s = r.summary
    predict_mean = float(np.mean(np.abs(y - y.mean(axis=0))))  # the mae of predicting the mean
    assert s.baseline.metric < 0.5 * predict_mean, (s.baseline.metric, predict_mean)
    assert s.task["direction"] == "lower" and v["agreement"] is None and v["unit"] == "%"
    # the int8 model's mae within export.max_accuracy_drop's default 10% of the Keras model's
    assert v["metric"] <= v["keras_metric"] * 1.10 and v["max_abs_diff"] > 0


def test_a_head_that_loses_an_output_is_named_and_the_guard_says_the_model_collapsed(tmp_path: Path) -> None:
    """The two-output regression head pruned to 99% keeps 1 of its 64 weights: one output has none left and
    predicts a constant. The run names the emptied unit, and the guard calls it a collapse (the constant output
    column) and advises the learning rate and the schedule, not more epochs."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(800, 32, 3)).astype(np.float32)
    y = np.stack([x[:, :, 0].mean(axis=1) * 3, (x[:, :, 1] - x[:, :, 2]).mean(axis=1) * 3], axis=1)
    r = _run(tmp_path, {"npz": _npz(tmp_path, x=x, y=y.astype(np.float32))},
             {"factory": "tests.factories:conv1d_regressor"},
             sparsity={"layers": [{"match": "^targets$", "final": 0.99, "pattern": "unstructured"}]})
    warnings = r.summary.warnings
    emptied = [w for w in warnings if "output layer 'targets' has 1 of its 2 units with no weight left" in w]
    assert emptied, warnings
    [guard] = [w for w in warnings if w.startswith("after sparsity")]
    assert "collapsed in the phase" in guard and "of 'targets' (2 columns) barely varies" in guard, guard
    assert "Lower sparsity.optimizer.learning_rate (now 0.0005)" in guard and "more sparsity.epochs" not in guard


def test_int16x8_regressor_keeps_int16_activations_and_the_error_within_the_drop(tmp_path: Path) -> None:
    """int16x8 on a pruned regressor: int16 activations, int8 kernels with the pruned zeros, the
    TFLite mae within export.max_accuracy_drop (10%) of the Keras model's, the same on the deployed runner."""
    rng = np.random.default_rng(4)
    x = _features(rng, 800)
    y = (x[:, :6].sum(axis=1) + np.abs(x[:, 6:] @ rng.normal(size=6))).astype(np.float32)
    r = _run(tmp_path, {"npz": _npz(tmp_path, x=x, y=y)}, {"factory": "tests.factories:tiny_regressor"},
             quantization={"mode": "int16x8"})
    s = r.summary
    assert s.task["kind"] == "regression" and s.tflite.quantization == "int16x8"
    model = Path(s.tflite.bundle) / "model.tflite"
    info = inspect_tflite(model)
    acts = {info.tensors[t].dtype for op in info.operators if op.op == "FULLY_CONNECTED" for t in op.outputs}
    assert acts == {"int16"}, acts
    kernels = {w.name: (w.dtype, w.sparsity) for w in info.weights if w.role == "weight"}
    assert {d for d, _ in kernels.values()} == {"int8"}
    assert all(sp == pytest.approx(0.8, abs=0.03) for _, sp in kernels.values()), kernels
    v = json.loads((Path(s.tflite.bundle) / "export.json").read_text())["verification"]
    assert v["metric"] <= v["keras_metric"] * 1.10, v
    _deploy_locally(r)


def test_detector_with_two_inputs_and_two_heads_end_to_end(tmp_path: Path) -> None:
    """An image and a metadata vector in; `cls` (softmax over 4) and `box` (4 values) out.

    Keras orders the inputs img, meta and the outputs cls, box; the converter sorts both by name (meta, img;
    box, cls): fed and read by name, the int8 model must agree with Keras on every head.
    """
    rng = np.random.default_rng(5)
    img = rng.random((800, 8, 8, 1)).astype(np.float32)
    meta = rng.normal(size=(800, 3)).astype(np.float32)
    regions = np.stack([img[:, 0:3].mean(axis=(1, 2, 3)), img[:, 3:6].mean(axis=(1, 2, 3)),
                        img[:, 6:8].mean(axis=(1, 2, 3)), img[:, :, :4].mean(axis=(1, 2, 3))], axis=1)
    cls = np.argmax(np.c_[meta, np.zeros(800)] + 8 * (regions - 0.5), axis=1)
    box = np.c_[meta * 0.5, regions[:, :1] * 2 - 1].astype(np.float32)
    r = _run(tmp_path, {"npz": _npz(tmp_path, x_img=img, x_meta=meta, y_cls=cls, y_box=box)},
             {"factory": "tests.factories:two_in_two_out"}, export={"sparse_encoding": "auto"},
             task={"outputs": {"cls": {"kind": "classification"}, "box": {"kind": "regression", "weight": 2.0}},
                   "primary": "cls"}, quantization={"mode": "int8", "keep_float": ["^box$"]})
    v = _check_export(r, "multi", "cls/accuracy")
    s = r.summary
    # keep_float on the regression head of a two-input model: its op in float32, the rest int8, zeros kept
    assert s.tflite.float_ops == ["box (FULLY_CONNECTED)"], s.tflite.float_ops
    model = Path(s.tflite.bundle) / "model.tflite"
    # read from the flatbuffer: one float op (an output tensor, so named by the signature, not by the layer)
    assert [o["op"] for o in float_ops(model)] == ["FULLY_CONNECTED"] and integer_ops(model) >= 4
    kernels = {w.name: (w.dtype, w.sparsity) for w in inspect_tflite(model).weights if w.role == "weight"}
    assert sorted(d for d, _ in kernels.values()) == ["float16", "int8", "int8", "int8", "int8"], kernels
    assert all(sp == pytest.approx(0.8, abs=0.03) for _, sp in kernels.values()), kernels
    assert s.baseline.metrics["cls/accuracy"] > 0.6 and s.baseline.metrics["box/mae"] < 0.3, s.baseline.metrics
    assert v["heads"]["cls"]["agreement"] >= 0.9 and v["heads"]["box"]["agreement"] is None
    assert v["metrics"]["box/mae"] <= v["keras_metrics"]["box/mae"] * 1.3
    with np.load(Path(s.tflite.bundle) / "verify.npz") as z:
        assert {"x_img", "x_meta", "y_cls", "y_box", "keras_outputs_cls", "keras_outputs_box"} <= set(z.files)


def test_the_anomaly_guard_catches_a_ruined_autoencoder(tmp_path: Path) -> None:
    from edgesparse.errors import TrainError

    data = {"builtin": "machine_sound", "normal": 300, "test_normal": 50, "test_anomalous": 50, "mels": 16,
            "frames": 2}
    model = {"builtin": "autoencoder", "units": 16, "layers": 1, "bottleneck": 4}
    # 99% of the weights removed in one step, no recovery epochs: the reconstruction error explodes
    with pytest.raises(TrainError, match=r"validation reconstruction_mse .* above the dense baseline"):
        _run(tmp_path, data, model, sparsity={"final": 0.99, "schedule": "constant", "start": 0, "end": 1,
                                              "epochs": 1, "frequency": 1, "on_drop": "fail",
                                              "optimizer": {"learning_rate": 1e-6}})


def test_an_npz_missing_an_input_array_names_it(tmp_path: Path) -> None:
    from edgesparse.check import check_recipe
    from edgesparse.recipe import validate_recipe

    rng = np.random.default_rng(0)
    path = _npz(tmp_path, x_img=rng.random((40, 8, 8, 1)).astype(np.float32), y_cls=rng.integers(0, 4, 40),
                y_box=rng.random((40, 4)).astype(np.float32))
    recipe = validate_recipe(tiny_recipe(tmp_path, data={"npz": path},
                                         model={"factory": "tests.factories:two_in_two_out"}))
    with pytest.raises(DataError, match="no array for meta"):
        check_recipe(recipe)


def test_anomaly_without_a_labelled_test_split_is_an_error(tmp_path: Path) -> None:
    from edgesparse.check import check_recipe
    from edgesparse.recipe import validate_recipe

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 64)).astype(np.float32)
    path = _npz(tmp_path, x=x, y=np.zeros(60, np.int64))
    recipe = validate_recipe(tiny_recipe(tmp_path, data={"npz": path}, task="anomaly",
                                         model={"builtin": "autoencoder", "units": 8, "layers": 1}))
    with pytest.raises(DataError, match="x_test"):
        check_recipe(recipe)


@pytest.mark.parametrize("recipe, overrides, kind", [
    ("wake_word.yaml", ["data.samples=800", "model.filters=16", "model.blocks=2", "baseline.epochs=10",
                        "sparsity.epochs=3", "sparsity.end=1", "sparsity.on_drop=warn"], "binary"),
    ("anomaly_autoencoder.yaml", ["data.normal=500", "data.test_normal=100", "data.test_anomalous=100",
                                  "model.units=32", "model.layers=2", "baseline.epochs=8", "sparsity.epochs=2",
                                  # 32 units are two 16-wide blocks per row: 1x16 blocks at 80% would empty rows
                                  "sparsity.end=1", "sparsity.on_drop=warn", "sparsity.pattern=unstructured"],
     "anomaly"),
])
def test_shipped_task_recipes_run_end_to_end(tmp_path: Path, recipe: str, overrides: list[str], kind: str) -> None:
    """The shipped binary and anomaly recipes, shrunk: train -> prune -> int8 -> export -> verify."""
    from edgesparse.recipe import load_recipe
    from edgesparse.run import train
    from tests.conftest import ROOT

    # objective size: keep the int8 conversion whatever its speed here (balanced may keep float on this CPU)
    r = load_recipe(ROOT / "recipes" / recipe, [*overrides, f"output_dir={tmp_path / 'run'}",
                                                 f"export.dir={tmp_path / 'bundle'}", "export.objective=size"])
    result = train(r)
    s = result.summary
    assert s.task is not None and s.task["kind"] == kind
    assert s.tflite is not None and s.tflite.metric is not None
    _deploy_locally(result)
    candidates = json.loads((tmp_path / "bundle" / "export.json").read_text())["candidates"]
    assert s.tflite.quantization == "int8", candidates
    better_than_chance = 0.7 if kind == "binary" else 0.65  # accuracy vs 60% majority; AUC vs 0.5
    assert s.baseline.metric is not None and s.baseline.metric > better_than_chance, s.baseline.metrics
    assert s.tflite.metric > better_than_chance - 0.05
    if kind == "anomaly":  # guarded on validation by the reconstruction error, verified on test by the AUC
        assert s.task["guard_metric"] == "reconstruction_mse" and "pauc" in s.baseline.metrics
        # the dense .tflite's check before compression compares the reconstruction error on validation (no labels
        # there for the AUC), as a relative change
        tv = (s.baseline.health or {}).get("tflite_validation") or {}
        assert tv.get("metric") is not None and tv.get("unit") == "%" and abs(tv["drop"]) < 1.0, tv
        assert s.sparsity is not None and s.sparsity.validation_metric is not None
        assert s.baseline.validation_metric is not None and s.tflite.max_abs_diff is not None
        assert abs(s.tflite.metric - s.model.metric) <= 0.02


def test_distillation_term_follows_the_kind() -> None:
    """KL for classes (zero when student equals teacher), Bernoulli KL for sigmoid units, MSE for values."""
    from edgesparse.train.distill import head_term

    t = np.array([[0.2, 0.8], [0.6, 0.4]], np.float32)
    s = np.array([[0.5, 0.5], [0.5, 0.5]], np.float32)
    cls = _head("classification", units=2)
    assert float(head_term(cls, t, t, 4.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(head_term(cls, s, t, 4.0)) > 0
    binary = _head("binary")
    p = np.array([[0.9], [0.1]], np.float32)
    assert float(head_term(binary, p, p, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(head_term(binary, 1 - p, p, 2.0)) > 0
    reg = _head("regression")
    assert float(head_term(reg, np.ones((2, 3), np.float32), np.zeros((2, 3), np.float32), 4.0)) == pytest.approx(1.0)


def test_distillation_trains_a_regressor(tmp_path: Path) -> None:
    """Distillation on a regression task: the soft term is the MSE to the dense model, and the run completes."""
    rng = np.random.default_rng(6)
    x = _features(rng, 300)
    y = (x[:, 0] * 0.5 + 0.1).astype(np.float32)
    from edgesparse.recipe import validate_recipe
    from edgesparse.run import train

    recipe = tiny_recipe(tmp_path, data={"npz": _npz(tmp_path, x=x, y=y)},
                         model={"factory": "tests.factories:tiny_regressor"},
                         # 16 steps leave it worse than predicting the mean (health check): the run is the point
                         baseline={"epochs": 4, "optimizer": {"learning_rate": 0.01}, "on_broken": "warn"},
                         sparsity={"final": 0.5, "end": 1, "epochs": 2, "on_drop": "warn"},
                         distillation={"weight": 0.5}, export=None)
    s = train(validate_recipe(recipe)).summary
    assert s.task is not None and s.task["kind"] == "regression" and s.distillation is not None
    assert s.model is not None and s.model.metric is not None and np.isfinite(s.model.metric)


def test_a_one_output_head_pruned_in_blocks_falls_back_to_unstructured_and_trains() -> None:
    """tfmot's block pooling fails on a (N, 1) kernel mid-training; the plan prunes that head unstructured."""
    from edgesparse import _tf
    from edgesparse.recipe import SparsityConfig
    from edgesparse.train import sparsity

    keras = _tf.keras()
    inputs = keras.Input((32,))
    x = keras.layers.Dense(32, activation="relu", name="fc1")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="score")(x))
    cfg = SparsityConfig(final=0.5, end=1, epochs=1, pattern="block:1x16")
    plan = sparsity.plan_sparsity(model, cfg, steps_per_epoch=2)
    head = next(lp for lp in plan.pruned if lp.name == "score")
    assert head.pattern == "unstructured" and "one output" in head.note
    pruned = sparsity.apply_pruning(model, cfg, plan)
    pruned.compile(optimizer="adam", loss="binary_crossentropy")
    rng = np.random.default_rng(0)
    pruned.fit(rng.normal(size=(64, 32)), rng.integers(0, 2, 64), epochs=1, batch_size=32, verbose=0,
               callbacks=[_tf.tfmot().sparsity.keras.UpdatePruningStep()])
