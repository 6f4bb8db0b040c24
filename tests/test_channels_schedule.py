"""Gradual channel pruning (issue 11, item 5): the schedule, the masks held while training, the surgery after it.

Tiny real tf_keras models (a functional CNN with BatchNorm and residual Adds) trained on the bundled digits.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import tiny_recipe
from tests.test_channels import tiny_resnet


def _digits() -> Any:
    from edgesparse.data import load_dataset

    return load_dataset({"builtin": "digits", "batch_size": 64}, 0)


# ------------------------------------------------------------------ the schedule


def test_schedule_ramps_cubically_from_none_to_every_planned_removal() -> None:
    from edgesparse.train.channels.schedule import ChannelSchedule

    s = ChannelSchedule(begin_step=10, end_step=30, frequency=5)
    assert s.fraction(0) == s.fraction(10) == 0.0  # nothing before begin, and tfmot's initial value at begin
    assert s.fraction(20) == pytest.approx(1 - 0.5 ** 3)  # halfway: 87.5% of the planned removals
    assert s.fraction(17) == s.fraction(15) == pytest.approx(1 - 0.75 ** 3)  # held between updates
    assert s.fraction(30) == s.fraction(10_000) == 1.0
    shares = [s.fraction(k) for k in range(40)]
    assert shares == sorted(shares)
    assert s.to_dict() == {"begin_step": 10, "end_step": 30, "frequency": 5}
    with pytest.raises(ValueError, match="begin_step < end_step"):
        ChannelSchedule(begin_step=5, end_step=5, frequency=1)


def test_schedule_steps_end_on_the_update_grid_inside_the_phase() -> None:
    from edgesparse.errors import RecipeError
    from edgesparse.recipe import ChannelsConfig
    from edgesparse.train.channels.schedule import schedule_steps

    s = schedule_steps(ChannelsConfig(ratio=0.5, schedule="gradual", epochs=2, begin=0.1, end=1.0, frequency=4), 10)
    assert (s.begin_step, s.frequency) == (2, 4)
    assert s.end_step == 18 and s.end_step <= 2 * 10 - 1  # snapped, and reached on the phase's last steps
    narrow = ChannelsConfig(ratio=0.5, schedule="gradual", epochs=1, begin=0.0, end=0.3)
    with pytest.raises(RecipeError, match=r"give no mask update.*schedule oneshot"):
        schedule_steps(narrow, 1)


def test_removal_order_is_least_important_first_within_each_group() -> None:
    from edgesparse.train.channels.graph import build_graph
    from edgesparse.train.channels.schedule import removal_order

    graph = build_graph(tiny_resnet())
    keep = np.ones(graph.num_units, dtype=bool)
    scores = np.arange(graph.num_units, dtype=float)[::-1]  # later units are less important
    group = graph.groups[-1]
    keep[group.units[:3]] = False
    order = removal_order(graph, keep, scores)
    np.testing.assert_array_equal(order[-1], group.units[:3][::-1])
    assert all(len(units) == 0 for units in order[:-1])


# ------------------------------------------------------------------ masks while training, surgery after


def _masked_entries(masker: Any) -> float:
    """The largest |weight| that the masks in force say must be zero."""
    from edgesparse.train.channels.surgery import weight_masks

    return max(float(np.max(np.abs(v.numpy() * (1 - m)), initial=0.0))
               for v, m in weight_masks(masker.model, masker.graph, masker.keep))


def _probe(masker: Any, seen: list[tuple[int, int, float, float]]) -> Any:
    """Records, per step: removed units, the largest masked weight before the forward pass and after the update."""
    from edgesparse import _tf

    class Probe(_tf.keras().callbacks.Callback):  # type: ignore[misc]
        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            self.before = _masked_entries(masker)

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            step = int(masker.model.optimizer.iterations.numpy()) - 1
            seen.append((step, int(np.count_nonzero(~masker.keep)), self.before, _masked_entries(masker)))

    return Probe()


def test_gradual_holds_removed_channels_at_zero_and_thins_to_the_plan() -> None:
    from edgesparse.recipe import ChannelsConfig, OptimizerConfig
    from edgesparse.train.channels import plan_channels, start_gradual
    from edgesparse.train.compile import compile_model

    data = _digits()
    dense = tiny_resnet()
    before = [w.copy() for w in dense.get_weights()]
    cfg = ChannelsConfig(ratio=0.5, schedule="gradual", epochs=2, begin=0.1, end=0.6, frequency=2)
    plan = plan_channels(dense, cfg, *data.validation().in_memory())
    masker = start_gradual(dense, plan, cfg, data.steps_per_epoch(64))
    compile_model(masker.model, OptimizerConfig(learning_rate=3e-3))
    seen: list[tuple[int, int, float, float]] = []
    masker.model.fit(data.x_train, data.y_train, batch_size=64, epochs=2, verbose=0,
                     callbacks=[masker.callback(), _probe(masker, seen)])
    planned = int(np.count_nonzero(~plan.keep))
    removed = [r for _, r, _, _ in seen]
    assert removed == sorted(removed) and removed[0] == 0 and removed[-1] == planned  # gradual, then all of them
    assert len(set(removed)) > 2
    for step, r, at_forward, after_step in seen:  # as many as the schedule says, masked in every forward pass
        assert r == sum(int(np.round(masker.schedule.fraction(step) * len(u))) for u in masker.order)
        assert at_forward == 0.0 and after_step == 0.0
    bn = masker.model.get_layer("s2b1_bn2")  # a BatchNorm inside the residual group: its removed units are zero
    gone = ~plan.keep[plan.graph.node("s2b1_bn2").output]
    assert not bn.gamma.numpy()[gone].any() and not bn.beta.numpy()[gone].any()
    thinned, diff = masker.finish(data.validation().head(128)[0])
    assert diff <= 1e-4
    widths = {g["name"]: g["kept"] for g in plan.describe()["groups"]}
    assert thinned.get_layer("s2b1_conv2").filters == widths[plan.graph.groups[-1].name]
    assert thinned.count_params() == plan.describe()["params"] < dense.count_params()
    assert all(np.array_equal(a, b) for a, b in zip(before, dense.get_weights()))  # the baseline is untouched


def test_finish_refuses_a_schedule_that_did_not_run_to_its_end() -> None:
    from edgesparse.errors import TrainError
    from edgesparse.recipe import ChannelsConfig
    from edgesparse.train.channels import plan_channels, start_gradual

    x, y = np.zeros((4, 8, 8, 1), dtype=np.float32), np.zeros(4, dtype=int)
    cfg = ChannelsConfig(ratio=0.5, schedule="gradual", epochs=1, frequency=2)
    masker = start_gradual(tiny_resnet(), plan_channels(tiny_resnet(), cfg, x, y), cfg, 20)
    assert masker.update(masker.schedule.begin_step + masker.schedule.frequency)  # the first update, not the last
    with pytest.raises(TrainError, match=r"removed \d+ of the 12 planned channels: training stopped"):
        masker.finish(x)


# ------------------------------------------------------------------ the run phase and the recipe


def test_train_gradual_distils_and_records_the_schedule(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from edgesparse.recipe import validate_recipe
    from edgesparse.report import channels_table
    from edgesparse.run import load_model, train

    recipe = validate_recipe(tiny_recipe(
        tmp_path, model={"builtin": "resnet", "width": 4, "blocks": [1, 1]},
        baseline={"epochs": 1, "on_broken": "warn"},  # one epoch leaves it near chance: the schedule is the point
        channels={"ratio": 0.5, "schedule": "gradual", "epochs": 2, "end": 0.5, "frequency": 4, "on_drop": "warn",
                  "optimizer": {"learning_rate": 0.003}},
        distillation={"phases": ["channels"], "temperature": 2.0}, sparsity=None, export=None))
    with caplog.at_level(logging.INFO, logger="edgesparse"):
        result = train(recipe)
    assert "channels: distilling from" in caplog.text
    ch = result.summary.channels
    assert ch is not None and ch.schedule == "gradual" and ch.max_abs_diff is not None and ch.max_abs_diff <= 1e-4
    assert ch.schedule_steps["frequency"] == 4 and ch.schedule_steps["begin_step"] == 0
    assert [(g.channels, g.kept) for g in ch.groups] == [(4, 2), (4, 2), (8, 4), (8, 4)]
    assert ch.validation_accuracy_pruned is None and ch.validation_accuracy is not None
    # the thinned model was trained, not just rebuilt: measured 24.6% after the 1-epoch baseline's 12.3% (chance 10%)
    assert ch.validation_accuracy > 0.15, ch
    assert load_model(result.run_dir / "channels.keras").count_params() == ch.params
    assert "gradual" in str(channels_table(result.summary).title)


@pytest.mark.parametrize(("channels", "message"), [
    ({"schedule": "gradul"}, "oneshot"),
    ({"schedule": "gradual", "begin": 0.6, "end": 0.5}, r"end \(0.5\) must be after begin \(0.6\)"),
    ({"schedule": "gradual", "end": 1.5}, "channels.end"),
    ({"schedule": "gradual", "begin": -0.1}, "channels.begin"),
    ({"schedule": "gradual", "frequency": 0}, "channels.frequency"),
    ({"schedule": "gradual", "epochs": 0}, "epochs >= 1"),
    ({"schedule": "gradual", "start": 0.2}, "did you mean"),
])
def test_bad_schedule_is_a_recipe_error(tmp_path: Path, channels: dict[str, Any], message: str) -> None:
    from edgesparse.errors import RecipeError
    from edgesparse.recipe import validate_recipe

    with pytest.raises(RecipeError, match=message):
        validate_recipe(tiny_recipe(tmp_path, channels={"ratio": 0.5, **channels}))


def test_schedule_defaults_to_oneshot_and_distillation_names_channels_only_when_it_trains(tmp_path: Path) -> None:
    from edgesparse.errors import RecipeError
    from edgesparse.recipe import validate_recipe

    rec = validate_recipe(tiny_recipe(tmp_path, channels={"ratio": 0.5}))
    assert rec.channels is not None and rec.channels.schedule == "oneshot"
    with pytest.raises(RecipeError, match="names channels but that phase does not train"):
        validate_recipe(tiny_recipe(tmp_path, distillation={"phases": ["channels"]}))


def test_window_without_updates_fails_before_the_baseline_trains(tmp_path: Path) -> None:
    from edgesparse.errors import RecipeError
    from edgesparse.recipe import validate_recipe
    from edgesparse.run import train

    recipe = validate_recipe(tiny_recipe(
        tmp_path, data={"builtin": "digits", "batch_size": 2048}, baseline={"epochs": 50},
        channels={"ratio": 0.5, "schedule": "gradual", "epochs": 1}, sparsity=None, export=None))
    with pytest.raises(RecipeError, match="give no mask update"):
        train(recipe)
    assert not (tmp_path / "run" / "baseline.keras").exists()
