"""Knowledge distillation on tiny real models: the loss is the documented formula, and it trains
plain, pruning-wrapped and PQAT students."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgesparse import _tf
from edgesparse.errors import ModelError, RecipeError
from edgesparse.recipe import DistillationConfig, OptimizerConfig, validate_recipe
from edgesparse.train import distill, fit
from tests.conftest import tiny_recipe


def _mlp(seed: int, classes: int = 3, features: int = 6, name: str = "m") -> Any:
    keras = _tf.keras()
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((features,))
    x = keras.layers.Dense(32, activation="relu", name="fc")(inputs)
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax", name="out")(x), name=name)


def _data(n: int = 256, features: int = 6, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, features)).astype(np.float32)
    y = (np.argmax(x[:, :classes], axis=1)).astype(np.int64)
    return x, y


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_loss_is_the_documented_formula_on_a_fixed_batch() -> None:
    x, y = _data(32)
    teacher, student = _mlp(1, name="teacher"), _mlp(2, name="student")
    cfg = DistillationConfig(weight=0.3, temperature=4.0)
    distill.compile_for_distillation(student, teacher, cfg, OptimizerConfig(name="sgd", learning_rate=1e-9))
    p_s = student.predict(x, verbose=0).astype(np.float64)
    p_t = teacher.predict(x, verbose=0).astype(np.float64)
    ce = -np.mean(np.log(p_s[np.arange(len(y)), y]))
    t = cfg.temperature
    q_t, q_s = _softmax(np.log(p_t) / t), _softmax(np.log(p_s) / t)
    kl = np.mean(np.sum(q_t * (np.log(q_t) - np.log(q_s)), axis=-1))
    expected = (1 - cfg.weight) * ce + cfg.weight * t * t * kl
    got = student.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)["loss"]
    assert got == pytest.approx(expected, rel=1e-4)
    # the same value drives the training step (train_on_batch reports the loss before its update)
    assert float(student.train_on_batch(x, y, return_dict=True)["loss"]) == pytest.approx(expected, rel=1e-4)
    distill.remove_distillation(student)
    assert "compute_loss" not in vars(student)


def test_weight_zero_is_cross_entropy_and_teacher_is_never_trained(tmp_path: Path) -> None:
    x, y = _data()
    teacher, student = _mlp(1, name="teacher"), _mlp(2, name="student")
    before = [w.copy() for w in teacher.get_weights()]
    distill.compile_for_distillation(student, teacher, DistillationConfig(weight=0.0, temperature=2.0),
                                     OptimizerConfig(learning_rate=1e-2))
    ce = float(_tf.keras().losses.SparseCategoricalCrossentropy()(y, student(x)).numpy())
    assert student.evaluate(x, y, verbose=0, batch_size=len(x))[0] == pytest.approx(ce, rel=1e-4)
    student.fit(x, y, epochs=2, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, teacher.get_weights()))
    assert len(student.trainable_variables) == 4  # the teacher's variables are not the student's


def test_mismatched_teacher_is_refused() -> None:
    with pytest.raises(ModelError, match="must match"):
        distill.compile_for_distillation(_mlp(0, classes=4), _mlp(1, classes=3), DistillationConfig(),
                                         OptimizerConfig())


def _phase(tmp_path: Path, model: Any, teacher: Any, x: np.ndarray, y: np.ndarray, phase: str, epochs: int,
           callbacks: list[Any] = ()) -> fit.PhaseResult:  # type: ignore[assignment]
    from edgesparse.data import Dataset

    data = Dataset.from_arrays("toy", x, y, x[:32], y[:32], x[:32], y[:32], 3, [])
    return fit.run_phase(phase, model, data, epochs=epochs, optimizer=OptimizerConfig(learning_rate=5e-3),
                         batch_size=32, seed=0, run_dir=tmp_path, history=fit.History(tmp_path / "h.csv"),
                         resume=False, extra_callbacks=list(callbacks), teacher=teacher,
                         distillation=DistillationConfig(weight=0.7, temperature=3.0))


def test_distillation_trains_a_pruned_student_and_pruning_still_updates(tmp_path: Path) -> None:
    """UpdatePruningStep sees the wrappers of the student being fit: the target sparsity is reached."""
    from edgesparse.recipe import SparsityConfig
    from edgesparse.train import sparsity

    x, y = _data(512)
    teacher = _mlp(1, name="teacher")
    fit.compile_model(teacher, OptimizerConfig(learning_rate=1e-2))
    teacher.fit(x, y, epochs=10, verbose=0)
    t_acc, _ = fit.evaluate(teacher, x, y)
    cfg = SparsityConfig(final=0.8, start=0, end=2, epochs=4, frequency=4)
    plan = sparsity.plan_sparsity(teacher, cfg, 16)
    student = sparsity.apply_pruning(teacher, cfg, plan)
    tfmot_sp = _tf.tfmot().sparsity.keras
    r = _phase(tmp_path, student, teacher, x, y, "sparsity", 4, [tfmot_sp.UpdatePruningStep()])
    assert np.isfinite([float(h["loss"]) for h in r.history]).all() and len(r.history) == 4
    stripped = sparsity.strip(student)
    assert sparsity.measure_sparsity(stripped)["overall"] >= 0.79
    acc, _ = fit.evaluate(stripped, x, y)
    assert acc > 0.6 and t_acc > 0.8
    assert "compute_loss" not in vars(student)


@pytest.mark.parametrize("mode", ["qat", "pqat"])
def test_distillation_trains_a_quantization_aware_student(tmp_path: Path, mode: str) -> None:
    from edgesparse.train.quantize import prepare

    x, y = _data(256)
    teacher = _mlp(1, name="teacher")
    fit.compile_model(teacher, OptimizerConfig(learning_rate=1e-2))
    teacher.fit(x, y, epochs=5, verbose=0)
    qstudent = prepare(_mlp(3, name="student"), mode)
    r = _phase(tmp_path, qstudent, teacher, x, y, "quantization", 2)
    losses = [float(h["loss"]) for h in r.history]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_recipe_section_is_validated(tmp_path: Path) -> None:
    rec = validate_recipe(tiny_recipe(tmp_path, distillation={"weight": 0.5, "temperature": 2}))
    assert rec.distillation is not None and rec.distillation.phases is None  # every phase that trains
    assert distill.teacher_for(rec.distillation, "sparsity", "dense") == "dense"
    only = validate_recipe(tiny_recipe(tmp_path, distillation={"phases": ["sparsity"]},
                                       quantization={"mode": "qat", "epochs": 1}))
    assert distill.teacher_for(only.distillation, "quantization", "dense") is None
    assert validate_recipe(tiny_recipe(tmp_path)).distillation is None  # off by default
    with pytest.raises(RecipeError, match="unknown key 'temprature'.*did you mean 'temperature'"):
        validate_recipe(tiny_recipe(tmp_path, distillation={"temprature": 2}))
    with pytest.raises(RecipeError, match="distillation.weight"):
        validate_recipe(tiny_recipe(tmp_path, distillation={"weight": 1.5}))
    with pytest.raises(RecipeError, match="does not train"):
        validate_recipe(tiny_recipe(tmp_path, sparsity=None, distillation={"phases": ["sparsity"]}))


def test_pipeline_distils_when_configured(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from edgesparse.run import train

    rec = validate_recipe(tiny_recipe(tmp_path, distillation={"weight": 0.5, "temperature": 2.0,
                                                              "phases": ["sparsity"]},
                                      quantization={"mode": "pqat", "epochs": 1}, export=None))
    with caplog.at_level(logging.INFO, logger="edgesparse"):
        res = train(rec)
    assert "sparsity: distilling from 'small_cnn' (weight 0.5, temperature 2)" in caplog.text
    assert "quantization: distilling" not in caplog.text  # phases: [sparsity] only
    assert res.summary.sparsity.achieved.overall >= 0.74
    assert res.summary.model.accuracy > 0.5
    assert res.summary.distillation == {"weight": 0.5, "temperature": 2.0, "phases": ["sparsity"]}
