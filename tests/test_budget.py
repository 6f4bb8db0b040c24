"""sparsity.target.bytes (issue 18, item 3): the sparsity that makes model.tflite fit a size budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgesparse.errors import RecipeError
from edgesparse.recipe import Recipe, SparsityConfig, override, validate_recipe
from tests.conftest import tiny_recipe


def _budget_recipe(tmp: Path, n: Any, mode: str = "int8", **export: Any) -> dict[str, Any]:
    r = tiny_recipe(tmp, baseline={"epochs": 1}, quantization={"mode": mode}, export=export or None)
    if export:
        r["export"] = {"dir": str(tmp / "bundle"), **export}
    else:
        r["export"] = {"dir": str(tmp / "bundle")}
    r["sparsity"].pop("final")
    r["sparsity"]["target"] = {"bytes": n}
    return r


def test_sizes_take_units_and_final_with_a_target_is_refused() -> None:
    assert SparsityConfig(target={"bytes": "64 KiB"}).target.bytes == 65536  # type: ignore[union-attr]
    assert SparsityConfig(target={"bytes": "64KB"}).target.bytes == 64000  # type: ignore[union-attr]
    with pytest.raises(RecipeError, match="not a size"):
        validate_recipe({"name": "x", "sparsity": {"target": {"bytes": "64 kbit"}}, "export": {}})
    with pytest.raises(RecipeError, match="either final .* or target"):
        validate_recipe({"name": "x", "sparsity": {"final": 0.8, "target": {"bytes": 9000}}, "export": {}})
    with pytest.raises(RecipeError, match="no export section"):
        validate_recipe({"name": "x", "sparsity": {"target": {"bytes": 9000}}, "export": None})


def test_an_override_of_one_replaces_the_other() -> None:
    """A sweep axis sparsity.target.bytes over a recipe with final (and back) is not "both given"."""
    base = Recipe(name="x", sparsity={"final": 0.8}, export={})
    sized = override(base, {"sparsity.target.bytes": 9000})
    assert sized.sparsity is not None and sized.sparsity.target is not None and sized.sparsity.target.bytes == 9000
    again = override(sized, {"sparsity.allocation": "erk"})  # a dumped recipe holds final too: still one of them
    assert again.sparsity is not None and again.sparsity.target is not None
    back = override(sized, {"sparsity.final": 0.5})
    assert back.sparsity is not None and back.sparsity.target is None and back.sparsity.final == 0.5


def _mlp() -> Any:
    from edgesparse import _tf

    keras = _tf.keras()
    keras.utils.set_random_seed(0)
    inp = keras.Input((32,))
    x = keras.layers.Dense(64, activation="relu", name="fc1")(inp)
    return keras.Model(inp, keras.layers.Dense(8, name="logits")(x), name="mlp")


def test_the_prediction_is_the_converted_file_byte_for_byte_and_lands_under_the_budget() -> None:
    from edgesparse import budget
    from edgesparse.export.convert import convert
    from edgesparse.train.sparsity import plan_sparsity

    model = _mlp()
    recipe = Recipe(name="x", sparsity={"target": {"bytes": 4600}, "epochs": 2}, quantization={"mode": "int8"},
                    export={"sparse_encoding": True})
    assert recipe.sparsity is not None
    rep = np.random.default_rng(0).normal(size=(16, 32)).astype("float32")
    found = budget.solve(model, recipe.sparsity, recipe, 10, rep)
    assert 0.9 * 4600 <= found.predicted <= 4600 and found.unpruned > 4600 > found.smallest
    assert found.trials[0]["final"] == 0.0 and found.trials[1]["final"] == recipe.sparsity.max_layer
    cfg = budget.set_final(recipe.sparsity, found.final)
    pruned = budget.one_step_prune(model, cfg, plan_sparsity(model, cfg, 10))
    data = convert(pruned, "int8", sparse_encoding=True, representative=rep)
    assert len(data) == found.predicted
    # one more weight pruned per trial step would not make a file over the budget fit: the search is tight
    kernels = [w for w in pruned.get_weights() if w.ndim == 2]
    assert sum(int((k == 0).sum()) for k in kernels) / sum(k.size for k in kernels) == pytest.approx(found.final,
                                                                                                     abs=1e-3)


def test_a_budget_below_the_reachable_size_is_refused_before_training_naming_it(tmp_path: Path) -> None:
    from edgesparse.run import train

    recipe = validate_recipe(_budget_recipe(tmp_path, 2000))
    with pytest.raises(RecipeError, match=r"cannot be met: the smallest model.tflite reachable is [\d,]+ B") as err:
        train(recipe)
    assert "Raise the budget to at least" in str(err.value)
    assert not (tmp_path / "run" / "baseline.keras").exists()  # refused before the baseline trained


def test_end_to_end_the_file_lands_in_the_budget_and_the_summary_says_so(tmp_path: Path) -> None:
    from edgesparse.run import train

    recipe = validate_recipe(_budget_recipe(tmp_path, 9000, objective="size", sparse_encoding=True))
    result = train(recipe)
    summary = json.loads((result.run_dir / "summary.json").read_text())
    b = summary["sparsity"]["budget"]
    actual = (tmp_path / "bundle" / "model.tflite").stat().st_size
    assert b["budget"] == 9000 and b["actual"] == actual and b["met"] is True
    assert 0.9 * 9000 <= actual <= 9000
    assert b["predicted"] == actual  # the trial conversion stored what the trained model's does
    assert summary["sparsity"]["plan"]["final"] == pytest.approx(b["final"])
    assert summary["sparsity"]["achieved"]["overall"] == pytest.approx(b["final"], abs=0.01)
    from edgesparse.sweep.trial import row_figures

    row = row_figures(result.summary)  # a sweep over sparsity.target.bytes tabulates these
    assert (row["budget_bytes"], row["budget_predicted_bytes"], row["budget_met"]) == (9000, actual, True)


def test_an_unpruned_model_that_fits_skips_the_sparsity_phase_and_says_so(tmp_path: Path) -> None:
    from edgesparse.run import train

    recipe = validate_recipe(_budget_recipe(tmp_path, 200_000, mode="none", objective="size"))
    result = train(recipe)
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary.get("sparsity") is None
    assert any("already fits" in w for w in summary["warnings"])


def test_sweep_takes_allocation_and_the_budget_as_axes() -> None:
    from edgesparse.sweep.grid import plan

    base = Recipe(name="x", sparsity={"final": 0.8}, export={})
    trials = plan(base, {"sparsity.allocation": ["uniform", "erk"], "sparsity.target.bytes": [9000, "12 KB"]}, 1)
    recipes = [t.recipe(base) for t in trials]
    assert sorted((r.sparsity.allocation, r.sparsity.target.bytes) for r in recipes  # type: ignore[union-attr]
                  ) == [("erk", 9000), ("erk", 12000), ("uniform", 9000), ("uniform", 12000)]
    with pytest.raises(RecipeError, match="either final .* or target"):
        plan(base, {"sparsity.final": [0.5], "sparsity.target.bytes": [9000]}, 1)
