"""The baseline health check (issue 20): a dense model at chance is caught, and explained, before compression."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from edgesparse.errors import TrainError
from edgesparse.task import Head, Task
from tests.conftest import ROOT, tiny_recipe

# ---- factories (tf_keras models, built by `model: {factory: "tests.test_health:..."}`) ------------------------


def bn_collapse(input_shape: tuple[int, ...] = (8, 8, 1), num_classes: int = 10) -> Any:
    """A tiny CNN whose BatchNormalization keeps keras.applications' momentum 0.999 (the issue's MobileNetV2)."""
    from edgesparse import _tf

    keras = _tf.keras()
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.999, name="conv_bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, keras.layers.Softmax()(x))


def _dense_head(input_shape: tuple[int, ...], num_classes: int, kernel: float, bias: np.ndarray) -> Any:
    from edgesparse import _tf

    keras = _tf.keras()
    inputs = keras.Input(input_shape)
    out = keras.layers.Dense(num_classes, activation="softmax", name="fc")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, out)
    layer = model.get_layer("fc")
    layer.set_weights([np.full(layer.kernel.shape, kernel, np.float32), bias.astype(np.float32)])
    return model


def constant_three(input_shape: tuple[int, ...] = (8, 8, 1), num_classes: int = 10) -> Any:
    """Ignores its input: zero kernel, a bias that always picks class 3."""
    return _dense_head(input_shape, num_classes, 0.0, np.eye(num_classes)[3] * 5)


def nan_weights(input_shape: tuple[int, ...] = (8, 8, 1), num_classes: int = 10) -> Any:
    """A model file gone bad: NaN weights."""
    return _dense_head(input_shape, num_classes, float("nan"), np.zeros(num_classes))


def sigmoid_regressor(input_shape: tuple[int, ...] = (6,)) -> Any:
    """A regressor ending in a sigmoid: it cannot reach targets above 1."""
    from edgesparse import _tf

    keras = _tf.keras()
    inputs = keras.Input(input_shape, name="x")
    h = keras.layers.Dense(16, activation="relu", name="fc")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="y")(h))


def test_targets_out_of_the_output_range_are_named(tmp_path: Path) -> None:
    """Regression targets in 10..20 for a sigmoid output: the baseline is worse than predicting the mean, and the
    check names the cause (the output's range), with both ranges and the fix."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    path = tmp_path / "reg.npz"
    np.savez(path, x=x, y=(15 + 5 * np.tanh(x[:, :1])).astype(np.float32))
    with pytest.raises(TrainError, match=r"at chance before any compression") as err:
        _train(tmp_path, data={"npz": str(path), "batch_size": 32}, task="regression",
               model={"factory": "tests.test_health:sigmoid_regressor"}, baseline={"epochs": 2})
    msg = str(err.value)
    assert "the targets of the output range" in msg and "ends in sigmoid (0..1)" in msg, msg
    assert "use a linear output, or scale the targets into 0..1" in msg


def _far_from_unit_digits(tmp_path: Path) -> str:
    """scikit-learn's digits in [10, 11]: batch statistics far from BatchNormalization's initial mean 0, variance 1."""
    from sklearn.datasets import load_digits

    d = load_digits()
    path = tmp_path / "far.npz"
    np.savez(path, x=(d.images.astype(np.float32) / 16 + 10)[..., None], y=d.target)
    return str(path)


def _train(tmp_path: Path, **sections: Any) -> Any:
    from edgesparse.recipe import validate_recipe
    from edgesparse.run import train

    return train(validate_recipe(tiny_recipe(tmp_path, sparsity=None, export=None, **sections)))


# ---- end to end ------------------------------------------------------------------------------------------------


def test_inference_mode_collapse_fails_with_its_causes_and_bn_momentum_fixes_it(tmp_path: Path) -> None:
    """Momentum 0.999 for 60 steps: training accuracy ~97%, inference ~11% (chance 10%); bn_momentum 0.9: ~88%."""
    data = {"npz": _far_from_unit_digits(tmp_path), "batch_size": 64}
    model = {"factory": "tests.test_health:bn_collapse"}
    baseline = {"epochs": 3, "optimizer": {"learning_rate": 0.01}}
    with pytest.raises(TrainError) as err:
        _train(tmp_path / "a", data=data, model=model, baseline=baseline, channels={"ratio": 0.5})
    msg = str(err.value)
    assert "the dense baseline is at chance before any compression: its validation accuracy is" in msg
    assert "chance level" in msg and "inference-mode collapse: in baseline epoch 3 the training accuracy" in msg
    assert "Run in training mode (BatchNormalization on batch statistics)" in msg
    assert "what fails at inference is the BatchNormalization moving statistics, not the weights" in msg
    assert "1 of 1 BatchNormalization layers (conv_bn) have momentum 0.999: after 60 training steps" in msg
    assert "0.999^60 = 94%" in msg and "baseline.bn_momentum: 0.9 " in msg and "2,995 steps" in msg
    assert not (tmp_path / "a" / "run" / "channels.keras").exists()  # stopped before compression

    s = _train(tmp_path / "b", data=data, model=model, baseline={**baseline, "bn_momentum": 0.9}).summary
    assert s.baseline.health is not None and s.baseline.health["status"] == "ok", s.baseline.health
    assert s.baseline.validation_accuracy is not None and s.baseline.validation_accuracy > 0.5


def test_constant_predictor_warns_and_is_recorded(tmp_path: Path) -> None:
    """``on_broken: warn`` goes on; summary.json records chance, figures and findings, the table marks it."""
    from rich.console import Console

    from edgesparse.report import comparison_table
    from edgesparse.summary import read_summary

    res = _train(tmp_path, model={"factory": "tests.test_health:constant_three"},
                 baseline={"epochs": 0, "on_broken": "warn"})
    h = read_summary(res.run_dir / "summary.json").baseline.health
    assert h is not None and h["status"] == "warn" and h["broken"] is True
    assert h["metric"] == "accuracy" and h["split"] == "validation"
    assert h["chance"] == pytest.approx(0.1, abs=0.01) and h["value"] == pytest.approx(0.1, abs=0.02)
    assert [f["code"] for f in h["findings"]] == ["untrained", "constant"]
    assert "predicts '3' (class 3) for 100%" in h["findings"][1]["message"]
    assert any("at chance before any compression" in w and "compresses it anyway" in w for w in res.warnings)
    console = Console(width=200, record=True)
    console.print(comparison_table(res.summary))
    assert "(health: warn)" in console.export_text()


def test_nan_model_fails_and_names_the_nan(tmp_path: Path) -> None:
    with pytest.raises(TrainError, match=r"outputs NaN/inf for 100% of the validation samples") as err:
        _train(tmp_path, model={"factory": "tests.test_health:nan_weights"}, baseline={"epochs": 0})
    assert "baseline.on_broken: warn" in str(err.value)


def test_nan_flat_loss_and_underfit_in_the_history_are_named() -> None:
    """The history is read: NaN loss in epoch 2; a loss that did not fall; a training metric near chance too."""
    from edgesparse.train import health

    task = _task(_head("classification", units=3))
    out = np.tile([[0.2, 0.5, 0.3]], (4, 1))
    nan = health._nan(task, out, [{"loss": "1.1"}, {"loss": "nan"}])
    assert nan is not None and "training loss was NaN/inf in baseline epoch 2" in nan.message
    flat = health._loss_flat(task, out, [{"loss": 1.10}, {"loss": 1.09}, {"loss": 1.12}])
    assert flat is not None and "did not fall (1.1 in the first baseline epoch, 1.12 in the last of 3)" in flat.message
    assert health._loss_flat(task, out, [{"loss": 1.1}, {"loss": 0.4}]) is None
    # the real MobileNetV2 case at momentum 0.95: no collapse any more, but 46% training accuracy (chance 25%)
    under = health._underfit(task, "accuracy", [{"accuracy": "0.30"}, {"accuracy": "0.464286"}], 0.25, 140)
    assert under is not None and "training accuracy reached only 46.43% in the last baseline epoch" in under.message
    assert health._underfit(task, "accuracy", [{"accuracy": 0.9}], 0.25, 140) is None


def test_healthy_baseline_is_untouched(trained_run: Any) -> None:
    """No false alarm: the suite's quickstart-sized run passes; its dense .tflite is compared with Keras too."""
    h = trained_run.summary.baseline.health
    assert h is not None and h["status"] == "ok" and not h["broken"] and h["findings"] == []
    assert h["chance"] == pytest.approx(0.1, abs=0.01) and h["value"] > h["threshold"]
    assert not any("at chance" in w for w in trained_run.warnings)
    for section, split in (("tflite_validation", "validation"), ("tflite", "test")):  # before compression; at export
        tfl = h[section]
        assert tfl["split"] == split and tfl["keras_metric"] is not None and tfl["metric"] is not None, tfl
        assert abs(tfl["drop"]) <= 1.0 and tfl["agreement"] >= 0.99 and tfl["max_abs_diff"] < 1e-3, tfl


# ---- chance levels, diagnoses and messages without training ----------------------------------------------------


def _head(kind: str, **kw: Any) -> Head:
    metric = {"regression": "mae", "anomaly": "auc"}.get(kind, "accuracy")
    return Head(**{"name": "out", "kind": kind, "loss": "mse", "metric": metric,
                   "metrics": (metric, "reconstruction_mse") if kind == "anomaly" else (metric,),
                   "direction": "lower" if kind == "regression" else "higher", **kw})


def _task(head: Head) -> Task:
    return Task(heads=(head,), primary=head.name)


@pytest.mark.parametrize("kind, key, chance", [
    ("classification", "accuracy", 0.6),  # the majority class' share
    ("binary", "auc", 0.5),
    ("regression", "mae", 1.0),  # predicting the training mean (0) misses |y| = 1 everywhere
    ("anomaly", "reconstruction_mse", 1.0),  # the mean sample (0) as every reconstruction
])
def test_chance_is_what_a_model_ignoring_its_input_scores(kind: str, key: str, chance: float) -> None:
    from edgesparse.train import health

    y_val = {"classification": np.array([0, 0, 0, 1, 2]), "binary": np.array([[0.], [1.], [1.], [0.], [1.]]),
             "regression": np.array([[1.], [-1.], [1.], [-1.], [1.]]), "anomaly": np.zeros(5)}[kind]
    y_train = {"classification": np.array([0, 0, 1, 2]), "binary": np.array([[0.], [1.], [1.], [1.]]),
               "regression": np.array([[2.], [-2.], [1.], [-1.]]), "anomaly": np.zeros(4)}[kind]
    x_train = np.array([[1., -1.], [-1., 1.], [1., 1.], [-1., -1.]])
    x_val = np.array([[1., 1.], [-1., -1.], [1., -1.], [-1., 1.], [1., 1.]])
    task = _task(_head(kind, units=3 if kind == "classification" else 1,
                       metric=key if kind == "binary" else _head(kind).metric))
    from edgesparse.data.stream import Split

    data = SimpleNamespace(train=Split(x_train, y_train, name="train"))
    scores = task.evaluate(health.trivial_outputs(task, data, 5), y_val, x_val)
    assert scores[key] == pytest.approx(chance)
    threshold, broken = health._verdict(task, key, scores[key], scores[key])
    assert broken and threshold is not None


def test_near_chance_margins() -> None:
    from edgesparse.train import health

    acc, mae = _task(_head("classification", units=10)), _task(_head("regression"))
    assert health._verdict(acc, "accuracy", 0.18, 0.1) == (pytest.approx(0.19), True)  # a tenth of the way up
    assert health._verdict(acc, "accuracy", 0.25, 0.1)[1] is False
    assert health._verdict(mae, "mae", 0.95, 1.0)[1] is True and health._verdict(mae, "mae", 0.8, 1.0)[1] is False
    assert health._verdict(acc, "accuracy", float("nan"), 0.1)[1] is True
    anomaly = _task(_head("anomaly"))  # noise dominates normal frames: 1% below the mean sample's error is learning
    assert health._verdict(anomaly, "reconstruction_mse", 0.985, 1.0)[1] is False
    assert health._verdict(anomaly, "reconstruction_mse", 0.995, 1.0)[1] is True


def test_bn_momentum_of_the_issue_is_named_with_its_figures() -> None:
    """keras.applications' 0.999 for 340 steps (MobileNetV2, 10 epochs of 34): 71% of the initial statistics."""
    from edgesparse import _tf
    from edgesparse.train import health

    keras = _tf.keras()
    inputs = keras.Input((4, 4, 1))
    x = keras.layers.BatchNormalization(momentum=0.999, name="bn_Conv1")(keras.layers.Conv2D(2, 1)(inputs))
    model = keras.Model(inputs, keras.layers.BatchNormalization(momentum=0.9, name="late_bn")(x))
    found = health._bn_unconverged(model, 340, 34)
    assert found is not None and found.details["layers"] == ["bn_Conv1"]
    assert "1 of 2 BatchNormalization layers (bn_Conv1) have momentum 0.999: after 340 training steps" in found.message
    assert "0.999^340 = 71%" in found.message and "baseline.bn_momentum: 0.95 (0.95^340 < 0.1%)" in found.message
    assert health._bn_unconverged(model, 5000, 34) is None
    untrained = health._bn_unconverged(model, 0, 34)  # baseline.epochs: 0 and statistics never moved
    assert untrained is not None and untrained.code == "bn_untrained" and "never trained" in untrained.message
    assert health.set_bn_momentum(model, 0.9) == 2 and model.get_layer("bn_Conv1").get_config()["momentum"] == 0.9


def test_dense_tflite_that_loses_accuracy_blames_the_converter_not_compression() -> None:
    from edgesparse.export.verify import Verification, _drop_message

    task = _task(_head("classification", units=4))
    v = Verification(samples=100, accuracy=0.25, keras_accuracy=0.9, agreement=0.3, max_abs_diff=0.8,
                     resolver="xnnpack", fallback_reason=None, float_model=True, metric=0.25, keras_metric=0.9,
                     drop=65.0)
    dense = _drop_message(task, v, 2.0, "dense.tflite")
    assert "float32 conversion of the dense baseline — no sparsity, no quantization" in dense
    assert "converter or the LiteRT runtime" in dense and "qat" not in dense
    assert "qat/pqat" in _drop_message(task, v, 2.0, "model (int8)")


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_no_shipped_recipe_leaves_batchnorm_unconverged(path: Path) -> None:
    """Every shipped recipe's model and baseline steps: no BatchNormalization layer trains too few steps."""
    from edgesparse.data import load_dataset
    from edgesparse.models import build_model
    from edgesparse.recipe import load_recipe, recipe_dir
    from edgesparse.train import health

    r = load_recipe(path)
    data = load_dataset(r.data, r.seed, base_dir=recipe_dir(r))
    model = build_model(r.model, tuple(data.input_shape), data.num_classes, recipe_dir(r))
    per_epoch = data.steps_per_epoch(r.data.batch_size)
    assert health._bn_unconverged(model, r.baseline.epochs * per_epoch, per_epoch) is None
