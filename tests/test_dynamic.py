"""Dynamic sparse training (``sparsity.method: rigl | set``): edgesparse.train.dynamic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgesparse import _tf
from edgesparse.errors import RecipeError
from edgesparse.recipe import validate_recipe
from edgesparse.train import dynamic
from tests.conftest import tiny_recipe

N_IN, N_OUT, TARGET = 8, 4, 0.5  # a 32-weight kernel, 16 zeros


def _wrapped_dense(kernel: np.ndarray) -> Any:
    """A compiled one-layer model whose Dense kernel is ``kernel``, wrapped by tfmot as method rigl wraps it."""
    keras, sp = _tf.keras(), _tf.tfmot().sparsity.keras
    inp = keras.Input((N_IN,))
    layer = keras.layers.Dense(N_OUT, use_bias=False)
    out = sp.prune_low_magnitude(layer, pruning_schedule=sp.ConstantSparsity(TARGET, 0, 0, 1))(inp)
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.SGD(0.0), "mse")
    dynamic.pruning_vars(model.layers[1])[0].assign(kernel)
    model.layers[1].pruning_step.assign(1)  # as in training: the wrapper refuses a training call at step 0
    return model


def _batch_with_gradient(effective: np.ndarray, scores: dict[tuple[int, int], float]) -> tuple[Any, Any]:
    """Inputs and targets whose MSE gradient w.r.t. the kernel is ``scores[(i, j)]`` at (i, j), 0 elsewhere.

    Sample n is the one-hot input e_i, its target the model's output ``effective[i]`` except ``-s`` at j:
    dL/dW[i, j] = x_i * dL/dy_j is then non-zero at (i, j) only.
    """
    x = np.zeros((len(scores), N_IN), np.float32)
    y = np.zeros((len(scores), N_OUT), np.float32)
    for n, ((i, j), s) in enumerate(scores.items()):
        x[n, i] = 1.0
        y[n] = effective[i]
        y[n, j] -= s
    return x, y


def _vars(model: Any) -> tuple[np.ndarray, np.ndarray]:
    weight, mask = dynamic.pruning_vars(model.layers[1])
    return weight.numpy(), mask.numpy()


def test_rigl_drops_the_smallest_active_and_regrows_where_the_gradient_is_largest() -> None:
    rng = np.random.default_rng(0)
    magnitudes = rng.permutation(np.arange(1, N_IN * N_OUT + 1)).reshape(N_IN, N_OUT) / 32.0
    kernel = (magnitudes * rng.choice([-1.0, 1.0], size=magnitudes.shape)).astype(np.float32)
    model = _wrapped_dense(kernel)
    dynamic.set_initial_masks(model)
    w, mask = _vars(model)
    zeros = int(round(TARGET * kernel.size))
    assert int((mask == 0).sum()) == zeros
    assert set(np.flatnonzero(mask == 0)) == set(np.argsort(np.abs(kernel).ravel())[:zeros])  # the smallest 16
    assert np.all(w[mask == 0] == 0)

    batches: list[tuple[Any, Any]] = []
    updater = dynamic.DynamicSparsity("rigl", frequency=10, end_step=100, drop_fraction=0.3, batches=iter(batches))
    for update in range(4):
        w, mask = _vars(model)
        active = np.flatnonzero(mask.ravel() > 0)
        k = int(round(dynamic.drop_fraction_at(10 * update, 100, 0.3) * active.size))
        inactive = np.flatnonzero(mask.ravel() == 0)
        # graded gradients at 8 inactive positions (and nowhere else): the k largest must be the ones regrown
        chosen = rng.choice(inactive, size=8, replace=False)
        grads = {divmod(int(p), N_OUT): float(s) for p, s in zip(chosen, rng.permutation(np.arange(1, 9)))}
        batches.append(_batch_with_gradient(w * mask, grads))
        record = updater.update(model, 10 * update)
        w_new, mask_new = _vars(model)
        grown = set(np.flatnonzero((mask_new.ravel() > 0) & (mask.ravel() == 0)))
        dropped = set(np.flatnonzero((mask_new.ravel() == 0) & (mask.ravel() > 0)))
        by_gradient = sorted(grads, key=grads.__getitem__, reverse=True)[:k]
        assert grown == {i * N_OUT + j for i, j in by_gradient}, update
        smallest = active[np.argsort(np.abs(w.ravel()[active]), kind="stable")[:k]]
        assert dropped == set(smallest.tolist()), update
        assert int((mask_new == 0).sum()) == zeros  # exact at every update
        assert np.all(w_new[mask_new == 0] == 0) and np.all(w_new.ravel()[sorted(grown)] == 0)  # grown start at 0
        assert record.moved == k == len(grown) == len(dropped) and k > 0
    assert [u.survived is None for u in updater.stats.updates] == [True, False, False, False]


def test_set_regrows_at_random_keeps_the_count_and_the_drop_fraction_decays_to_zero() -> None:
    assert dynamic.drop_fraction_at(0, 100, 0.3) == pytest.approx(0.3)
    assert dynamic.drop_fraction_at(50, 100, 0.3) == pytest.approx(0.15)
    assert dynamic.drop_fraction_at(75, 100, 0.3) == pytest.approx(0.3 * (1 + np.cos(0.75 * np.pi)) / 2)
    assert dynamic.drop_fraction_at(100, 100, 0.3) == 0.0 == dynamic.drop_fraction_at(150, 100, 0.3)

    kernel = np.random.default_rng(1).normal(size=(N_IN, N_OUT)).astype(np.float32)
    grown_by_seed = []
    for seed in (0, 0, 1):
        model = _wrapped_dense(kernel)
        dynamic.set_initial_masks(model)
        updater = dynamic.DynamicSparsity("set", frequency=10, end_step=100, drop_fraction=0.5, seed=seed)
        grown: list[int] = []
        for step in (0, 10, 20, 100):
            _, before = _vars(model)
            record = updater.update(model, step)
            w, mask = _vars(model)
            assert int((mask == 0).sum()) == 16 and np.all(w[mask == 0] == 0)
            grown += np.flatnonzero((mask.ravel() > 0) & (before.ravel() == 0)).tolist()
            assert record.moved == round(dynamic.drop_fraction_at(step, 100, 0.5) * 16)
        assert updater.stats.updates[-1].moved == 0  # at update.end the masks stay
        grown_by_seed.append(grown)
    assert grown_by_seed[0] == grown_by_seed[1] != grown_by_seed[2]  # seeded, and random


def test_drop_grow_never_regrows_a_weight_it_just_dropped() -> None:
    weights = np.array([0.1, 0.2, 3.0, 4.0, 0.0, 0.0])
    mask = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    # the dropped weights score highest for growth: they must stay dropped, the two inactive ones grow
    new = dynamic.drop_grow(weights, mask, 2, np.array([9.0, 9.0, 0.0, 0.0, 1.0, 2.0]))
    assert new.tolist() == [0, 0, 1, 1, 1, 1]
    # k capped by the inactive count: the number of zeros never changes
    assert int((dynamic.drop_grow(weights, mask, 5, np.ones(6)) == 0).sum()) == 2


@pytest.mark.parametrize(("sparsity", "needles"), [
    ({"method": "rigl", "initial": 0.2}, ["initial", "update.frequency"]),
    ({"method": "set", "frequency": 10, "end": 3}, ["frequency (use update.frequency", "end (use update.end"]),
    ({"method": "rigl", "pattern": "block:1x4"}, ["unstructured only", "block:1x4"]),
    ({"method": "rigl", "layers": [{"match": "fc", "pattern": {"m_by_n": [2, 4]}}]}, ["m_by_n:2x4"]),
    ({"method": "rigl", "epochs": 4, "update": {"end": 5}}, ["update.end (5)"]),
    ({"update": {"frequency": 10}}, ["applies to method rigl or set"]),
])
def test_rigl_and_set_refuse_what_they_would_ignore(sparsity: dict[str, Any], needles: list[str]) -> None:
    raw = {"name": "x", "data": {"builtin": "digits"}, "model": {"builtin": "small_cnn"}, "sparsity": sparsity}
    with pytest.raises(RecipeError) as err:
        validate_recipe(raw)
    for needle in needles:
        assert needle in str(err.value), str(err.value)


def test_a_resolved_rigl_recipe_validates_again() -> None:
    """override() and the lock file dump every field: the defaults of the magnitude schedule are not "given"."""
    from edgesparse.recipe import override

    raw = {"name": "x", "data": {"builtin": "digits"}, "model": {"builtin": "small_cnn"},
           "sparsity": {"method": "rigl", "update": {"frequency": 7}}}
    again = override(validate_recipe(raw), {"sparsity.final": 0.8})
    assert again.sparsity is not None and again.sparsity.method == "rigl" and again.sparsity.update.frequency == 7


def test_too_few_steps_for_one_update_is_refused() -> None:
    from edgesparse.recipe import SparsityConfig
    from edgesparse.train.sparsity import plan_sparsity

    keras = _tf.keras()
    inp = keras.Input((N_IN,))
    model = keras.Model(inp, keras.layers.Dense(N_OUT, name="fc")(inp))
    cfg = SparsityConfig(method="rigl", epochs=2, update={"frequency": 100, "end": 1})  # type: ignore[arg-type]
    with pytest.raises(RecipeError, match=r"update.end=1 epochs is 20 steps .* Lower update.frequency \(below 20\)"):
        plan_sparsity(model, cfg, steps_per_epoch=20)
    plan = plan_sparsity(model, cfg.model_copy(update={"update": cfg.update.model_copy(update={"frequency": 5})}), 20)
    assert (plan.method, plan.begin_step, plan.end_step, plan.frequency, plan.drop_fraction) == ("rigl", 0, 20, 5, 0.3)


@pytest.mark.parametrize(("steps", "epochs", "end", "freq"), [
    (17, 4, 51, 5),  # a small data set (the case): the old default of 100 steps was refused
    (20, 1, 15, 1),  # one short epoch: an update every step until 3/4 of it
    (2000, 10, 15000, 100),  # a large one: RigL's own every 100 steps, never more often than ten updates need
])
def test_default_update_frequency_and_end_fit_the_phase(steps: int, epochs: int, end: int, freq: int) -> None:
    from edgesparse.recipe import SparsityConfig
    from edgesparse.train.sparsity import plan_sparsity

    keras = _tf.keras()
    inp = keras.Input((N_IN,))
    model = keras.Model(inp, keras.layers.Dense(N_OUT, name="fc")(inp))
    for method in ("rigl", "set"):
        plan = plan_sparsity(model, SparsityConfig(method=method, epochs=epochs), steps_per_epoch=steps)
        assert (plan.end_step, plan.frequency) == (end, freq)
        updates = len(range(plan.frequency, plan.end_step, plan.frequency))  # the callback's update steps
        assert updates >= min(dynamic.DEFAULT_UPDATES, plan.end_step - 1)


@pytest.mark.slow
def test_rigl_from_scratch_with_erk_end_to_end_holds_the_target_to_the_tflite(tmp_path: Path) -> None:
    """``baseline.epochs: 0`` on an untrained model: rigl trains sparse from the first step, the masks move, and
    the stripped model and the exported .tflite hold each layer's erk target."""
    from edgesparse.run import train
    from edgesparse.tflite import inspect_tflite

    raw = tiny_recipe(tmp_path, baseline={"epochs": 0})
    raw["sparsity"] = {"method": "rigl", "final": 0.8, "allocation": "erk", "epochs": 2, "on_drop": "warn",
                       "update": {"frequency": 4, "end": 1.5}}
    result = train(validate_recipe(raw))
    summary = json.loads((result.run_dir / "summary.json").read_text())
    sp = summary["sparsity"]
    assert sp["plan"]["method"] == "rigl" and sp["plan"]["begin_step"] == 0
    dyn = sp["dynamic"]
    assert dyn["count"] >= 3 and dyn["moved"] > 0, dyn
    first = dyn["updates"][0]
    assert first["step"] == 4 and first["drop_fraction"] == pytest.approx(dynamic.drop_fraction_at(4, dyn["end_step"],
                                                                                                     0.3))
    assert [u["step"] for u in dyn["updates"]] == list(range(4, dyn["end_step"], 4))
    assert all(u["survived"] is None or 0.0 <= u["survived"] <= 1.0 for u in dyn["updates"])
    pruned = {lp["name"]: lp for lp in sp["plan"]["layers"] if lp["prune"]}
    assert len({lp["target"] for lp in pruned.values()}) > 1  # erk: not uniform
    for lp in pruned.values():
        assert lp["achieved"] == pytest.approx(lp["target"], abs=0.01), lp
    # the masks moved: the final zeros are not where the initial (magnitude) mask of the untrained model put them
    keras = _tf.keras()
    start = keras.models.load_model(result.run_dir / "baseline.keras")
    end = keras.models.load_model(result.run_dir / "sparse.keras")
    moved = 0
    for name, lp in pruned.items():
        w0 = start.get_layer(name).kernel.numpy()
        zeros0 = dynamic.initial_mask(w0, lp["target"]) == 0
        moved += int(np.count_nonzero(zeros0 != (end.get_layer(name).kernel.numpy() == 0)))
    assert moved > 0
    info = inspect_tflite(result.summary.tflite.path)
    checked = []
    for w in info.weights:
        name = next((n for n in pruned if f"/{n}/" in w.name or w.name.startswith(f"{n}/")), None)
        if name is not None and w.role == "weight":
            assert w.sparsity == pytest.approx(pruned[name]["target"], abs=0.01), (w.name, w.sparsity)
            checked.append(name)
    assert set(checked) == set(pruned), [w.name for w in info.weights]
