"""Channel pruning (issue 11): dependency graph, importance, allocation, surgery, the run phase, bad inputs.

Tiny real tf_keras models; surgery is checked by comparing the thinned model's outputs with the masked model's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import tiny_recipe


def _keras() -> Any:
    from edgesparse import _tf

    return _tf.keras()


def _randomize_bn(model: Any, seed: int = 0) -> None:
    """Non-trivial BatchNorm statistics, so that a wrong slice changes the outputs."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.set_weights([np.abs(rng.normal(1.0, 0.3, w.shape)) if "variance" in v.name or "gamma" in v.name
                               else rng.normal(0.0, 0.3, w.shape) for w, v in zip(layer.get_weights(), layer.weights)])


def tiny_resnet() -> Any:
    from edgesparse.models.zoo import ResNetConfig, resnet

    model = resnet(ResNetConfig(builtin="resnet", width=4, blocks=(1, 1)), (8, 8, 1), 10)
    _randomize_bn(model)
    return model


def separable_model() -> Any:
    """SeparableConv2D, DepthwiseConv2D with depth multiplier 2, BatchNorm, Flatten -> Dense."""
    keras = _keras()
    layers = keras.layers
    inputs = keras.Input((8, 8, 2))
    x = layers.SeparableConv2D(6, 3, padding="same", depth_multiplier=2, name="sep")(inputs)
    x = layers.BatchNormalization(name="sep_bn")(x)
    x = layers.ReLU()(x)
    x = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(x)
    x = layers.BatchNormalization(name="dw_bn")(x)
    x = layers.Conv2D(5, 1, activation="relu", name="pw")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten(name="flat")(x)
    x = layers.Dense(7, activation="relu", name="fc")(x)
    model = keras.Model(inputs, layers.Dense(3, name="out")(x))
    _randomize_bn(model)
    return model


def concat_model() -> Any:
    """Two branches concatenated, a squeeze-excite Multiply, a channel-preserving Reshape, GAP -> Dense."""
    keras = _keras()
    layers = keras.layers
    inputs = keras.Input((8, 8, 2))
    a = layers.Conv2D(3, 3, padding="same", activation="relu", name="a")(inputs)
    b = layers.Conv2D(5, 3, padding="same", activation="relu", name="b")(inputs)
    x = layers.Concatenate(name="cat")([a, b])
    s = layers.GlobalAveragePooling2D()(x)
    s = layers.Dense(4, activation="relu", name="se1")(s)
    s = layers.Dense(8, activation="sigmoid", name="se2")(s)
    s = layers.Reshape((1, 1, 8), name="se_reshape")(s)
    x = layers.Multiply(name="se_mul")([x, s])
    x = layers.Conv2D(6, 1, name="c")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(3, activation="softmax", name="out")(x))


def tiny_mobilenet_v2() -> Any:
    """keras.applications' MobileNetV2 (inverted residuals: expand, depthwise, project, Add) at 32x32."""
    from edgesparse.models.zoo import MobileNetV2Config, mobilenet_v2

    model = mobilenet_v2(MobileNetV2Config(builtin="mobilenet_v2"), (32, 32, 3), 4)
    _randomize_bn(model)
    return model


def sequential_model() -> Any:
    """A plain Sequential model (no keras.Input: the first layer's input_shape sets it)."""
    keras = _keras()
    layers = keras.layers
    model = keras.Sequential([
        layers.Conv2D(6, 3, padding="same", input_shape=(8, 8, 2), name="conv1"),
        layers.BatchNormalization(name="bn1"),
        layers.ReLU(name="relu1"),
        layers.Conv2D(8, 3, padding="same", name="conv2"),
        layers.GlobalAveragePooling2D(name="gap"),
        layers.Dense(3, name="out"),
    ], name="plain")
    _randomize_bn(model)
    return model


def tf_ops_model() -> Any:
    """TensorFlow operations written as layers (TFOpLambda): hard-swish, a squeeze-excite gate, ``0.5 - x``."""
    from edgesparse import _tf

    keras, tf = _keras(), _tf.tf()
    layers = keras.layers
    inputs = keras.Input((8, 8, 2))
    x = layers.Conv2D(6, 3, padding="same", name="c1")(inputs)
    x = x * tf.nn.relu6(x + 3.0) * (1.0 / 6.0)
    gate = layers.Conv2D(6, 1, name="se")(layers.GlobalAveragePooling2D(keepdims=True)(x))
    x = 0.5 - tf.math.multiply(x, tf.math.sigmoid(gate))
    y = layers.Conv2D(4, 1, name="num")(x)
    z = layers.Conv2D(4, 1, name="den")(x)
    x = layers.Conv2D(5, 1, name="c2")(y / (tf.math.abs(z) + 1.0))
    return keras.Model(inputs, layers.Dense(3, name="out")(layers.Flatten()(x)))


def nested_model() -> Any:
    """A Sequential backbone nested in a functional model, flattened as every run flattens it."""
    from edgesparse.models.flatten import flatten_nested

    keras = _keras()
    layers = keras.layers
    backbone = keras.Sequential([keras.Input((8, 8, 2)), layers.Conv2D(6, 3, name="conv"),
                                 layers.BatchNormalization(name="bn"), layers.ReLU()], name="backbone")
    inputs = keras.Input((8, 8, 2))
    x = layers.Conv2D(4, 1, name="head")(backbone(inputs))
    model = keras.Model(inputs, layers.Dense(3, name="out")(layers.GlobalAveragePooling2D()(x)))
    _randomize_bn(backbone)
    return flatten_nested(model)


def _group_of(graph: Any, layer: str) -> Any:
    return next(g for g in graph.groups if layer in g.layers)


# ------------------------------------------------------------------ graph


def test_graph_couples_residual_adds_into_one_group() -> None:
    from edgesparse.train.channels.graph import build_graph

    graph = build_graph(tiny_resnet())
    stage2 = _group_of(graph, "s2b1_conv2")
    assert {"s2b1_conv2", "s2b1_bn2", "s2b1_proj", "s2b1_proj_bn"} <= set(stage2.layers)
    stage1 = _group_of(graph, "stem")
    assert "s1b1_conv2" in stage1.layers  # the identity shortcut couples the stem with the block's output
    assert _group_of(graph, "s1b1_conv1") is not stage1  # inside a block, channels are free
    assert {g.name for g in graph.groups} == {"stem", "s1b1_conv1", "s2b1_conv1", "s2b1_conv2"}
    assert set(graph.frozen_layers) == {"input", "logits"}  # the output layer's units are never pruned
    assert not any("logits" in g.layers for g in graph.groups)


def test_graph_concat_keeps_channel_offsets() -> None:
    from edgesparse.train.channels.graph import build_graph

    graph = build_graph(concat_model())
    a, b, c = graph.node("a"), graph.node("b"), graph.node("c")
    np.testing.assert_array_equal(c.inputs[0], np.concatenate([a.output, b.output]))
    # the squeeze-excite gate multiplies the concatenation: its output units are the same units
    np.testing.assert_array_equal(graph.node("se2").output, c.inputs[0])
    assert _group_of(graph, "se2") is _group_of(graph, "a") is _group_of(graph, "b")


def test_graph_depthwise_follows_its_input_and_flatten_repeats_per_position() -> None:
    from edgesparse.train.channels.graph import build_graph

    graph = build_graph(separable_model())
    sep, dw, flat = graph.node("sep"), graph.node("dw"), graph.node("flat")
    np.testing.assert_array_equal(dw.output, np.repeat(sep.output, 2))  # depth_multiplier 2
    assert "dw" in _group_of(graph, "sep").layers and "dw_bn" in _group_of(graph, "sep").layers
    pw = graph.node("pw").output
    assert len(flat.output) == 4 * 4 * 5
    np.testing.assert_array_equal(flat.output, np.tile(pw, 16))  # Flatten: channel fastest, 16 positions


def test_graph_freezes_layers_it_cannot_reason_about_and_lists_them() -> None:
    from edgesparse.train.channels.graph import build_graph

    keras = _keras()
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.LayerNormalization(name="ln")(x)
    x = keras.layers.Conv2D(4, 3, name="conv2")(x)
    x = keras.layers.Flatten()(x)
    graph = build_graph(keras.Model(inputs, keras.layers.Dense(2, name="out")(x)))
    assert "ln" in graph.frozen_layers and "LayerNormalization" in graph.frozen_layers["ln"]
    assert [g.name for g in graph.groups] == ["conv2"]  # conv feeds the frozen layer: never pruned


def test_graph_reads_a_plain_sequential_model() -> None:
    from edgesparse.train.channels.graph import build_graph

    graph = build_graph(sequential_model())
    assert [g.layers for g in graph.groups] == [["conv1", "bn1"], ["conv2"]]
    assert set(graph.frozen_layers) == {"input", "out"}


def test_graph_reads_a_flattened_nested_backbone() -> None:
    from edgesparse.train.channels.graph import build_graph

    graph = build_graph(nested_model())
    assert ["backbone/conv", "backbone/bn"] in [g.layers for g in graph.groups]


def test_graph_tf_operations_pass_channels_couple_tensors_and_freeze_division_by_a_tensor() -> None:
    from edgesparse.train.channels.graph import build_graph

    graph = build_graph(tf_ops_model())
    # x * relu6(x + 3) / 6, the gate and 0.5 - x keep c1's channels; tf.math.multiply couples c1 with se
    assert {"c1", "se"} <= set(_group_of(graph, "c1").layers)
    np.testing.assert_array_equal(graph.node("num").inputs[0], graph.node("c1").output)
    # y / (|z| + 1): a removed channel of z would be divided by, so both operands are frozen
    assert not any("num" in g.layers or "den" in g.layers for g in graph.groups)
    assert any("divides by a tensor" in why for why in graph.frozen_layers.values())


def test_graph_refuses_a_sequential_model_without_input_shape() -> None:
    from edgesparse.errors import ModelError
    from edgesparse.train.channels.graph import build_graph

    keras = _keras()
    with pytest.raises(ModelError, match="no input shape yet"):
        build_graph(keras.Sequential([keras.layers.Dense(3)]))


# ------------------------------------------------------------------ surgery


@pytest.mark.parametrize("builder", [tiny_resnet, separable_model, concat_model, tiny_mobilenet_v2, sequential_model,
                                     tf_ops_model, nested_model])
def test_thinned_model_computes_what_the_masked_model_computes(builder: Any) -> None:
    from edgesparse.train.channels.cost import build_cost_model
    from edgesparse.train.channels.graph import build_graph
    from edgesparse.train.channels.surgery import check_equal, mask_model, thin_model

    model = builder()
    graph = build_graph(model)
    cost = build_cost_model(model, graph)
    full = np.ones(graph.num_units, dtype=bool)
    assert cost.params(full) == model.count_params()
    rng = np.random.default_rng(1)
    keep = full.copy()
    for g in graph.groups:
        keep[g.units[rng.permutation(len(g.units))[: len(g.units) // 2]]] = False
    thinned = thin_model(model, graph, keep)
    assert thinned.count_params() == cost.params(keep) < model.count_params()
    x = rng.random((16, *model.input_shape[1:]), dtype=np.float32)
    assert check_equal(mask_model(model, graph, keep), thinned, x, 1e-4) <= 1e-4
    assert thinned.output_shape == model.output_shape


def test_plain_sequential_model_is_planned_and_thinned_to_the_same_outputs() -> None:
    from edgesparse.recipe import ChannelsConfig
    from edgesparse.train.channels import plan_channels, thin

    model = sequential_model()
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 2)).astype(np.float32)
    plan = plan_channels(model, ChannelsConfig(ratio=0.5), x, np.zeros(16, dtype=int))
    thinned, diff = thin(model, plan, x)
    assert diff <= 1e-4
    assert [(g["channels"], g["kept"]) for g in plan.describe()["groups"]] == [(6, 3), (8, 4)]
    assert thinned.count_params() == plan.describe()["params"] < model.count_params()
    assert [layer.name for layer in thinned.layers[1:]] == [layer.name for layer in model.layers]
    assert thinned.get_layer("conv2").kernel.shape == (3, 3, 3, 4)


def test_check_equal_fails_loudly_when_outputs_differ() -> None:
    from edgesparse.errors import TrainError
    from edgesparse.train.channels.surgery import check_equal

    model = concat_model()
    other = _keras().models.clone_model(model)
    with pytest.raises(TrainError, match="differ from the masked model"):
        check_equal(model, other, np.ones((4, 8, 8, 2), dtype=np.float32), 1e-4)


def test_cost_model_macs_match_the_tflite_file() -> None:
    from edgesparse.export.convert import convert
    from edgesparse.tflite.footprint import footprint
    from edgesparse.train.channels.cost import build_cost_model
    from edgesparse.train.channels.graph import build_graph

    model = tiny_resnet()
    graph = build_graph(model)
    assert build_cost_model(model, graph).macs(np.ones(graph.num_units, dtype=bool)) == \
        footprint(convert(model, "none")).macs_dense


# ------------------------------------------------------------------ importance and allocation


def test_importance_bn_ranks_by_gamma_and_taylor_is_finite() -> None:
    from edgesparse.train.channels.graph import build_graph
    from edgesparse.train.channels.importance import importance

    model = tiny_resnet()
    graph = build_graph(model)
    gamma = np.abs(model.get_layer("s1b1_bn1").gamma.numpy())
    units = graph.node("s1b1_bn1").output
    scores = importance("bn", model, graph)
    assert list(np.argsort(scores[units])) == list(np.argsort(gamma))
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 8, 8, 1), dtype=np.float32), rng.integers(0, 10, 32)
    for name in ("l1", "l2", "taylor"):
        s = importance(name, model, graph, x=x, y=y, batches=2, batch_size=16)
        assert np.all(np.isfinite(s)) and s[graph.groups[0].units].max() > 0


@pytest.mark.parametrize("allocation", ["uniform", "global", "auto"])
def test_allocation_meets_a_macs_target(allocation: str) -> None:
    from edgesparse.recipe import ChannelsConfig
    from edgesparse.train.channels import plan_channels

    model = tiny_resnet()
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 8, 8, 1), dtype=np.float32), rng.integers(0, 10, 32)
    plan = plan_channels(model, ChannelsConfig(target={"macs": 0.5}, allocation=allocation), x, y)
    info = plan.describe()
    assert 0.3 < info["macs"] / info["dense_macs"] <= 0.5
    assert all(g["kept"] >= 1 for g in info["groups"])
    assert bool(plan.rows) == (allocation == "auto")


def test_channel_multiple_keeps_simd_friendly_widths() -> None:
    from edgesparse.recipe import ChannelsConfig
    from edgesparse.train.channels import plan_channels

    x = np.zeros((4, 8, 8, 1), dtype=np.float32)
    plan = plan_channels(tiny_resnet(), ChannelsConfig(ratio=0.4, channel_multiple=4), x, np.zeros(4, dtype=int))
    assert [(g["channels"], g["kept"]) for g in plan.describe()["groups"]] == [(4, 4), (4, 4), (8, 4), (8, 4)]
    auto = plan_channels(tiny_resnet(), ChannelsConfig(target={"macs": 0.8}, allocation="auto", channel_multiple=4),
                         x, np.zeros(4, dtype=int))
    assert all(g["kept"] % 4 == 0 for g in auto.describe()["groups"])


def test_fixed_ratio_removes_that_share_of_every_group() -> None:
    from edgesparse.recipe import ChannelsConfig
    from edgesparse.train.channels import plan_channels

    x = np.zeros((4, 8, 8, 1), dtype=np.float32)
    plan = plan_channels(tiny_resnet(), ChannelsConfig(ratio=0.5), x, np.zeros(4, dtype=int))
    assert [(g["channels"], g["kept"]) for g in plan.describe()["groups"]] == [(4, 2), (4, 2), (8, 4), (8, 4)]


# ------------------------------------------------------------------ bad input


def test_unreachable_target_names_the_smallest_reachable_value() -> None:
    from edgesparse.errors import TrainError
    from edgesparse.recipe import ChannelsConfig
    from edgesparse.train.channels import plan_channels

    x = np.zeros((4, 8, 8, 1), dtype=np.float32)
    with pytest.raises(TrainError, match=r"macs: 0.01\} cannot be reached.*smallest reachable macs is 0\.\d+"):
        plan_channels(tiny_resnet(), ChannelsConfig(target={"macs": 0.01}), x, np.zeros(4, dtype=int))


def test_model_without_prunable_group_is_a_clear_error() -> None:
    from edgesparse.errors import TrainError
    from edgesparse.recipe import ChannelsConfig
    from edgesparse.train.channels import plan_channels

    keras = _keras()
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(keras.layers.Flatten()(inputs)))
    with pytest.raises(TrainError, match="no prunable channel group.*out: model output"):
        plan_channels(model, ChannelsConfig(ratio=0.5), np.zeros((2, 8, 8, 1)), np.zeros(2, dtype=int))


@pytest.mark.parametrize(("channels", "message"), [
    ({"ratio": 0.5, "target": {"macs": 0.5}}, "either target"),
    ({"target": {"macs": 0.5, "params": 0.5}}, "exactly one of macs, params, latency"),
    ({"ratio": 0.5, "allocation": "auto"}, "auto chooses per-group ratios"),
    ({"target": {"macs": 1.5}}, "channels.target.macs"),
    ({"ratio": 0.5, "importance": "l3"}, "l1"),
    ({"ratio": 0.5, "allocation": "global", "channel_multiple": 8}, "not global"),
])
def test_bad_channels_section_is_a_recipe_error(tmp_path: Path, channels: dict[str, Any], message: str) -> None:
    from edgesparse.errors import RecipeError
    from edgesparse.recipe import validate_recipe

    with pytest.raises(RecipeError, match=message):
        validate_recipe(tiny_recipe(tmp_path, channels=channels))


# ------------------------------------------------------------------ end to end


def test_train_with_channels_thins_then_prunes_the_thinned_model(tmp_path: Path) -> None:
    from edgesparse.recipe import validate_recipe
    from edgesparse.run import load_run, train
    from edgesparse.summary import read_summary

    recipe = validate_recipe(tiny_recipe(
        tmp_path, model={"builtin": "resnet", "width": 4, "blocks": [1, 1]},
        channels={"ratio": 0.5, "allocation": "uniform", "epochs": 1, "on_drop": "warn",
                  "optimizer": {"learning_rate": 0.003}},
        export=None))
    result = train(recipe)
    summary = read_summary(result.run_dir)
    ch = summary.channels
    assert ch is not None and ch.max_abs_diff is not None and ch.max_abs_diff <= 1e-4
    assert ch.params < ch.dense_params and ch.macs < ch.dense_macs
    assert [(g.channels, g.kept) for g in ch.groups] == [(4, 2), (4, 2), (8, 4), (8, 4)]
    assert summary.sparsity is not None and summary.sparsity.achieved.overall > 0.5
    assert (result.run_dir / "channels.keras").exists()
    assert load_run(result.run_dir).final_model.count_params() == ch.params  # sparsity ran on the thinned model


# ------------------------------------------------------------------ analyze


def test_analyze_cli_writes_table_json_and_plot(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from edgesparse.cli import main
    from tests.conftest import write_recipe

    recipe = write_recipe(tmp_path, tiny_recipe(tmp_path, model={"builtin": "resnet", "width": 4, "blocks": [1]},
                                                baseline={"epochs": 1}))
    bad = CliRunner().invoke(main, ["analyze", str(recipe), "--ratios", "0.5,2"])
    assert bad.exit_code == 2 and "between 0 and 1" in bad.output
    out = tmp_path / "analysis"
    result = CliRunner().invoke(main, ["analyze", str(recipe), "-o", str(out), "--ratios", "0.25,0.5"])
    assert result.exit_code == 0, result.output
    assert "channel sensitivity" in result.output and "s1b1_conv1" in result.output
    report = json.loads((out / "sensitivity.json").read_text())
    assert len(report["rows"]) == 2 * 2  # groups stem (+ residual) and s1b1_conv1, two ratios each
    assert all(0 < r["macs_saved"] < 1 for r in report["rows"])
    assert (out / "sensitivity.png").stat().st_size > 1000
    # unstructured, per layer tfmot prunes, at 50/75/90% (the recipe's sparsity.final 0.75 is one of them)
    unstructured = report["unstructured"]
    layers = list(dict.fromkeys(r["layer"] for r in unstructured))
    assert layers == ["stem", "s1b1_conv1", "s1b1_conv2", "logits"], layers
    assert sorted({r["sparsity"] for r in unstructured}) == [0.5, 0.75, 0.9] and len(unstructured) == 4 * 3
    assert "unstructured sensitivity" in result.output
    assert (out / "unstructured_sensitivity.png").stat().st_size > 1000


def test_latency_target_corrects_the_macs_fraction_until_measured_latency_meets_it() -> None:
    from edgesparse.recipe import ChannelsConfig
    from edgesparse.train.channels import plan_channels

    model = tiny_resnet()
    dense_params = model.count_params()
    # a deterministic stand-in for the paired timing run.py does (export/latency.py): cost in parameters
    plan = plan_channels(model, ChannelsConfig(target={"latency": 0.6}), np.zeros((4, 8, 8, 1), dtype=np.float32),
                         np.zeros(4, dtype=int), latency_fn=lambda m: m.count_params() / dense_params)
    assert plan.latency_trials and plan.latency_trials[0]["macs_fraction"] == 0.6
    assert plan.describe()["params"] / dense_params <= 0.6


def test_latency_search_extrapolates_at_most_by_half_and_stops_at_the_floor() -> None:
    """Measured on MobileNetV2: 0.45 -> 0.601x, 0.33 -> 0.556x made the secant ask for 2% of the MACs, below what
    any allocation reaches, and the run died on 'cannot be reached'. The search now halves at most, clamps to the
    floor, and an unmet target fails naming the fastest model measured."""
    from edgesparse.errors import TrainError
    from edgesparse.recipe import ChannelsConfig
    from edgesparse.train.channels import _next_fraction, plan_channels

    trials = [{"macs_fraction": 0.45, "latency_ratio": 0.601}, {"macs_fraction": 0.33, "latency_ratio": 0.556}]
    assert _next_fraction(trials, 0.45) == pytest.approx(0.165)  # the secant said 0.023
    model = tiny_resnet()
    seen: list[int] = []

    def slow(m: Any) -> float:  # no allocation is fast enough: a fixed cost dominates
        seen.append(m.count_params())
        return 0.9

    with pytest.raises(TrainError, match=r"fastest thinned model measured 0.900x"):
        plan_channels(model, ChannelsConfig(target={"latency": 0.5}, allocation="uniform"),
                      np.zeros((4, 8, 8, 1), dtype=np.float32), np.zeros(4, dtype=int), latency_fn=slow)
    assert 1 < len(seen) <= 6 and min(seen) < model.count_params()


def test_layer_sensitivity_zeroes_the_smallest_weights_of_one_layer_and_restores_them() -> None:
    from edgesparse.train.sparsity import layer_sensitivity

    model = tiny_resnet()
    before = [w.copy() for w in model.get_weights()]
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 1)).astype(np.float32)
    y = np.argmax(model.predict(x, verbose=0), axis=-1)  # the dense model is right on every sample
    seen: dict[str, float] = {}
    original = model.predict

    def spy(*args: Any, **kwargs: Any) -> Any:  # the zeros each evaluation saw, over all kernels
        seen[f"call{len(seen)}"] = float(np.mean([np.mean(w == 0) for w in model.get_weights() if w.ndim >= 2]))
        return original(*args, **kwargs)

    model.predict = spy
    rows = layer_sensitivity(model, x, y, (0.5, 0.9))
    assert rows and all(r.accuracy_drop == pytest.approx(100 * (1.0 - r.accuracy)) for r in rows)
    assert [r.sparsity for r in rows[:2]] == [0.5, 0.9]
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    assert seen["call0"] == 0.0 and max(seen.values()) > 0  # the base evaluation is dense, later ones are not


def test_latency_target_needs_a_measurement() -> None:
    from edgesparse.errors import TrainError
    from edgesparse.recipe import ChannelsConfig
    from edgesparse.train.channels import plan_channels

    with pytest.raises(TrainError, match="latency target needs a latency measurement"):
        plan_channels(tiny_resnet(), ChannelsConfig(target={"latency": 0.5}), np.zeros((2, 8, 8, 1)),
                      np.zeros(2, dtype=int))


def test_auto_predicted_loss_keeps_rising_past_the_largest_measured_ratio() -> None:
    from edgesparse.train.channels.allocation import predicted_at

    assert predicted_at([0.25, 0.5, 0.75], [0.1, 0.3, 0.9], 0.4) == pytest.approx(0.22)
    assert predicted_at([0.25, 0.5, 0.75], [0.1, 0.3, 0.9], 0.9) == pytest.approx(1.26)  # not clamped at 0.9
    assert predicted_at([0.5], [-0.1], 0.8) == 0.0  # a measured gain counts as no loss


def test_latency_target_times_real_tflite_files_and_the_thinned_model_keeps_its_accuracy(tmp_path: Path) -> None:
    """The real path of run.py: each allocation is converted to float32 .tflite and timed paired against the dense
    file by the device runner; the thinned, fine-tuned model is faster than dense and within a few points of it."""
    from edgesparse.recipe import validate_recipe
    from edgesparse.run import train

    # a CNN whose convolutions dominate its latency (a few us of fixed cost per inference would otherwise hide
    # the MACs removed); sparsity off so that the thinned model is the one exported
    recipe = validate_recipe(tiny_recipe(
        tmp_path, model={"builtin": "small_cnn", "filters": [32, 64], "dense": 32},
        baseline={"epochs": 4},
        channels={"target": {"latency": 0.7}, "allocation": "uniform", "epochs": 2, "on_drop": "warn",
                  "optimizer": {"learning_rate": 0.003}},
        sparsity=None))
    s = train(recipe).summary
    ch = s.channels
    assert ch is not None and ch.latency_trials, "the latency target never timed an allocation"
    assert all(t["latency_ratio"] > 0 for t in ch.latency_trials)
    # the plan kept an allocation measured at or under the target, and the thinned model was timed again
    assert min(t["latency_ratio"] for t in ch.latency_trials) <= 0.7
    assert ch.latency_ratio is not None and ch.latency_ratio < 1.0
    assert ch.tflite_bytes is not None and ch.dense_tflite_bytes is not None and ch.tflite_bytes < ch.dense_tflite_bytes
    assert ch.macs < ch.dense_macs
    dense_acc = s.baseline.validation_accuracy
    assert dense_acc is not None and dense_acc > 0.8, f"the dense baseline did not learn digits: {dense_acc}"
    assert ch.validation_accuracy is not None and ch.validation_accuracy >= dense_acc - 0.05, (ch, dense_acc)
    # export ran on the thinned model and verified it
    assert s.tflite is not None and s.tflite.accuracy is not None and s.tflite.accuracy >= dense_acc - 0.05
