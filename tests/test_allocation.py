"""sparsity.allocation (issue 18, item 1): global, erk and auto targets over the pruned kernels, and their refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgesparse.errors import RecipeError
from edgesparse.recipe import SparsityConfig, validate_recipe
from tests.conftest import tiny_recipe

# conv 3x3x1x4 (36 weights), fc 144x8 (1,152), logits 8x2 (16): 1,204 pruned weights
SIZES = {"conv": 36, "fc": 1152, "logits": 16}
TOTAL = sum(SIZES.values())


def _cnn(seed: int = 0) -> Any:
    from edgesparse import _tf

    keras = _tf.keras()
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="conv")(inp)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(8, name="fc")(x)
    return keras.Model(inp, keras.layers.Dense(2, name="logits")(x), name="cnn")


def _mlp(block: str) -> tuple[Any, SparsityConfig]:
    from edgesparse import _tf

    keras = _tf.keras()
    inp = keras.Input((16,))
    x = keras.layers.Dense(8, name="fc1")(inp)
    model = keras.Model(inp, keras.layers.Dense(4, name="logits")(x), name="mlp")
    return model, SparsityConfig(final=0.8, allocation="erk", pattern=block)


def _plan(model: Any, **cfg: Any) -> Any:
    from edgesparse.train.sparsity import plan_sparsity

    sensitivity = cfg.pop("sensitivity", None)
    return plan_sparsity(model, SparsityConfig(**cfg), 10, sensitivity=sensitivity)


def _zeros(plan: Any) -> dict[str, int]:
    """Zeros per layer as tfmot realises a target: kept = max(round(n * (1 - s)), 1)."""
    return {lp.name: lp.weights - max(int(round(lp.weights * (1 - lp.target))), 1) for lp in plan.pruned}


def test_erk_targets_match_hand_computed_densities() -> None:
    plan = _plan(_cnn(), final=0.9, allocation="erk")
    # density_l = eps * sum(dims)/prod(dims), eps so the non-zeros are 10% of 1,204: eps = 120.4 / (11 + 152 + 10)
    eps = 0.1 * TOTAL / 173
    hand = {"conv": 1 - eps * 11 / 36, "fc": 1 - eps * 152 / 1152, "logits": 1 - eps * 10 / 16}
    assert hand == pytest.approx({"conv": 0.78734, "fc": 0.90817, "logits": 0.56503}, abs=1e-5)
    got = {lp.name: lp.target for lp in plan.pruned}
    for name, n in SIZES.items():  # whole weights; the largest layer takes the rounding's remainder (one weight)
        assert abs(got[name] - hand[name]) <= 1.0 / n + 1e-9, name
    assert sum(_zeros(plan).values()) == round(0.9 * TOTAL)
    assert plan.allocation == "erk" and plan.planned == pytest.approx(round(0.9 * TOTAL) / TOTAL)


def test_erk_keeps_dense_the_layers_whose_density_would_exceed_one() -> None:
    from edgesparse.train.sparsity import apply_pruning

    model = _cnn()
    plan = _plan(model, final=0.5, allocation="erk")
    # eps = 602/173 puts logits (10/16 * eps) then conv (11/36 * eps) above 1: both dense, fc holds all 602 zeros
    assert {lp.name: lp.target for lp in plan.pruned} == {"conv": 0.0, "fc": 602 / 1152, "logits": 0.0}
    assert all(lp.prune for lp in plan.layers if lp.name in SIZES)  # still counted in the pruned kernels
    wrapped = apply_pruning(model, SparsityConfig(final=0.5, allocation="erk"), plan)
    assert [layer.name for layer in wrapped.layers if hasattr(layer, "pruning_vars")] == ["prune_low_magnitude_fc"]


def test_erk_holds_a_layer_at_max_layer_and_rescales_the_others() -> None:
    free = _plan(_cnn(), final=0.96, allocation="erk")
    assert {lp.name: lp.target for lp in free.pruned}["fc"] > 0.963  # ERK: 1 - 0.04 * 1204/173 * 152/1152
    plan = _plan(_cnn(), final=0.96, allocation="erk", max_layer=0.962)
    got = {lp.name: lp.target for lp in plan.pruned}
    assert 0.962 - 1 / 1152 <= got["fc"] <= 0.962
    assert got["conv"] > {lp.name: lp.target for lp in free.pruned}["conv"]
    assert sum(_zeros(plan).values()) == round(0.96 * TOTAL)


def test_global_ranking_keeps_every_layer_nonempty_and_meets_the_target_exactly() -> None:
    model = _cnn()
    kernel = model.get_layer("logits").kernel
    kernel.assign(kernel.numpy() * 1e-4)  # the smallest magnitudes: an unbounded ranking would empty it
    plan = _plan(model, final=0.9, allocation="global")
    zeros = _zeros(plan)
    assert zeros["logits"] == 15  # held at max_layer 0.98 of 16 weights: one weight stays
    assert all(zeros[n] < SIZES[n] for n in SIZES)
    assert sum(zeros.values()) == round(0.9 * TOTAL)
    # without a binding ceiling it is one ranking: the 1,084 smallest |w| of the three kernels
    model2 = _cnn(seed=1)
    plan2 = _plan(model2, final=0.9, allocation="global", max_layer=0.999)
    every = np.concatenate([np.abs(model2.get_layer(n).kernel.numpy()).ravel() for n in SIZES])
    owner = np.repeat(list(SIZES), list(SIZES.values()))
    expected = {n: int(np.sum(owner[np.argsort(every, kind="stable")[:round(0.9 * TOTAL)]] == n)) for n in SIZES}
    assert _zeros(plan2) == expected


def test_tfmot_realises_the_allocated_targets() -> None:
    from edgesparse import _tf
    from edgesparse.train.sparsity import apply_pruning, measure_sparsity, plan_sparsity, strip

    model = _cnn()
    cfg = SparsityConfig(final=0.9, allocation="global", start=0, end=1, epochs=2, frequency=1)
    plan = plan_sparsity(model, cfg, 4)
    pruned = apply_pruning(model, cfg, plan)
    pruned.compile("sgd", "mse")
    rng = np.random.default_rng(0)
    pruned.fit(rng.normal(size=(16, 8, 8, 1)), rng.normal(size=(16, 2)), batch_size=4, epochs=2, verbose=0,
               callbacks=[_tf.tfmot().sparsity.keras.UpdatePruningStep()])
    measured = measure_sparsity(strip(pruned), [lp.name for lp in plan.pruned])
    assert measured["layers"] == pytest.approx({lp.name: lp.target for lp in plan.pruned}, abs=1e-9)
    assert measured["zeros"] == round(0.9 * TOTAL)


@pytest.mark.parametrize("allocation", ["erk", "global"])
def test_overrides_win_and_the_others_share_the_rest(allocation: str) -> None:
    plan = _plan(_cnn(), final=0.9, allocation=allocation, layers=[{"match": "^logits$", "final": 0.5}])
    got = {lp.name: lp.target for lp in plan.pruned}
    assert got["logits"] == 0.5
    assert sum(_zeros(plan).values()) == round(0.9 * TOTAL)


def test_overrides_the_others_cannot_make_up_are_refused() -> None:
    with pytest.raises(RecipeError, match=r"allocation global cannot reach final=0.9.*max_layer=0.98.*"
                                          r"Raise max_layer, lower final"):
        _plan(_cnn(), final=0.9, allocation="global", layers=[{"match": "^fc$", "final": 0.1}])


def test_global_works_in_whole_blocks_and_keeps_a_block_per_output() -> None:
    model, _ = _mlp("block:1x4")
    plan = _plan(model, final=0.6, allocation="global", pattern="block:1x4")
    got = {lp.name: lp.target for lp in plan.pruned}
    assert got["fc1"] * 32 == pytest.approx(round(got["fc1"] * 32))  # 32 blocks of 1x4
    assert (1 - got["logits"]) * 8 >= 4  # 8 blocks, one per output row at least
    assert abs(sum(got[n] * w for n, w in {"fc1": 128, "logits": 32}.items()) - 0.6 * 160) < 4  # within a block
    # at 80% the blocks cannot hold it: fc1 keeps 8 of 32 blocks, logits 4 of 8 at the most (70% overall)
    with pytest.raises(RecipeError, match=r"allocation global cannot reach final=0.8.*at least one block per output"):
        _plan(model, final=0.8, allocation="global", pattern="block:1x4")


def test_erk_with_a_block_grid_too_coarse_for_its_density_is_refused() -> None:
    model, cfg = _mlp("block:1x4")
    # at final 0.6, eps = 64/36: fc1's ERK sparsity is 1 - 24/128 * eps = 66.67%; its 32 blocks reach 65.6% at the
    # nearest, logits' 8 blocks 37.5% for 33.3%
    with pytest.raises(RecipeError, match=r"allocation erk gives layer 'fc1' .*block:1x4.* 66.67%.*cannot meet.*"
                                          r"65.62% at the nearest.*pattern: unstructured"):
        _plan(model, **{**cfg.model_dump(), "final": 0.6, "tolerance": 0.005})
    ok = _plan(model, **{**cfg.model_dump(), "final": 0.6, "tolerance": 0.05})  # within tolerance: on the grid
    assert {lp.name: lp.target for lp in ok.pruned} == {"fc1": 21 / 32, "logits": 3 / 8}
    assert ok.planned == pytest.approx(0.6)


def test_erk_with_a_block_that_would_empty_an_output_row_is_refused() -> None:
    model, cfg = _mlp("block:1x8")  # fc1: 2 blocks per output, at most 50% can go; ERK wants 83%
    with pytest.raises(RecipeError, match=r"layer 'fc1'.*output row of blocks without a weight.*"
                                          r"\{match: \"\^fc1\$\", pattern: unstructured\}"):
        _plan(model, **cfg.model_dump())


def test_max_layer_below_final_is_refused_naming_both(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"max_layer \(0.8\) is below final \(0.9\).*raise max_layer"):
        validate_recipe(tiny_recipe(tmp_path, sparsity={"final": 0.9, "allocation": "global", "max_layer": 0.8}))
    with pytest.raises(RecipeError, match=r"allocation.*'uniform', 'global', 'erk' or 'auto'|allocation"):
        validate_recipe(tiny_recipe(tmp_path, sparsity={"allocation": "erdos"}))
    assert validate_recipe(tiny_recipe(tmp_path, sparsity={"final": 0.99})).sparsity.allocation == "uniform"


def test_auto_takes_weights_where_the_predicted_drop_per_weight_is_smallest() -> None:
    from edgesparse.train.sparsity import LayerSensitivity

    drops = {"conv": (5.0, 20.0, 40.0), "fc": (0.1, 0.3, 2.0), "logits": (3.0, 10.0, 30.0)}
    rows = [LayerSensitivity(name, "X", SIZES[name], lv, 0.0, d) for name, ds in drops.items()
            for lv, d in zip((0.5, 0.75, 0.9), ds)]
    plan = _plan(_cnn(), final=0.9, allocation="auto", sensitivity=rows)
    got = {lp.name: lp.target for lp in plan.pruned}
    assert got["fc"] > 0.9 > got["conv"] and got["fc"] <= 0.98
    assert sum(_zeros(plan).values()) == round(0.9 * TOTAL)
    # before the baseline is trained (validate, check) there is nothing measured: uniform, and it says so
    early = _plan(_cnn(), final=0.9, allocation="auto")
    assert all(lp.target == 0.9 and "allocation auto" in lp.note for lp in early.pruned)


@pytest.mark.slow
def test_auto_end_to_end_records_targets_and_achieved_in_the_summary(tmp_path: Path) -> None:
    from edgesparse.run import train

    recipe = validate_recipe(tiny_recipe(tmp_path, baseline={"epochs": 1}, sparsity={
        "final": 0.8, "allocation": "auto", "epochs": 1, "end": 1, "frequency": 2}))
    result = train(recipe, export=False)
    plan = json.loads((result.run_dir / "summary.json").read_text())["sparsity"]["plan"]
    assert plan["allocation"] == "auto" and plan["planned"] == pytest.approx(0.8, abs=1e-3)
    pruned = [lp for lp in plan["layers"] if lp["prune"]]
    assert len({lp["target"] for lp in pruned}) > 1  # not uniform
    for lp in pruned:
        assert lp["achieved"] == pytest.approx(lp["target"], abs=0.01), lp["name"]
