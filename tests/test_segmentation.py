"""The segmentation task kind (edgesparse/task/segmentation.py): mIoU and friends, inference from class maps,
bad input, the generated shape_masks scenes, and the shipped U-Net recipe end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgesparse  # noqa: F401  (before tensorflow)
from edgesparse.errors import DataError, RecipeError
from edgesparse.task import OutputInfo, TaskConfig, resolve_task
from edgesparse.task import segmentation as seg


def _one_hot(t: np.ndarray, k: int) -> np.ndarray:
    return np.eye(k, dtype=np.float32)[t]


def _maps(n: int = 6, s: int = 8, k: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, k, (n, s, s))


# ---- metrics ------------------------------------------------------------------------------------------------


def test_perfect_prediction_scores_one_and_a_collapsed_class_drops_the_mean_by_its_share() -> None:
    y = _maps()
    task = resolve_task(TaskConfig(kind="segmentation"), [OutputInfo("mask", (8, 8, 3), "softmax")], {"mask": y})
    perfect = task.evaluate(_one_hot(y, 3), y)
    assert perfect["miou"] == 1.0 and perfect["pixel_accuracy"] == 1.0
    assert [perfect[f"iou_{c}"] for c in range(3)] == [1.0, 1.0, 1.0]
    broken = np.where(y == 2, 0, y)  # class 2 never predicted: its IoU is 0
    m = task.evaluate(_one_hot(broken, 3), y)
    assert m["iou_2"] == 0.0 and m["miou"] == pytest.approx((m["iou_0"] + m["iou_1"]) / 3)
    assert m["pixel_accuracy"] == pytest.approx(np.mean(broken == y))
    # the guard's unit: points of a fraction, higher is better (also for the per-class IoU keys)
    assert task.metric_key == "miou" and task.unit("miou") == "points" and task.unit("iou_2") == "points"
    assert task.degradation(perfect["miou"], m["miou"]) == pytest.approx(100 * (1 - m["miou"]))
    assert task.degradation(1.0, m["miou"]) > task.max_drop(None)
    # compare: pixel agreement of the predicted maps
    cmp = task.compare(_one_hot(y, 3), _one_hot(broken, 3))
    assert cmp["agreement"] == pytest.approx(np.mean(broken == y))


def test_iou_matches_a_hand_count_and_ignore_index_pixels_count_nowhere() -> None:
    y = np.array([[[0, 0], [1, 255]]])
    pred = np.array([[[0, 1], [1, 0]]])
    conf = seg.confusion(pred, y, 2, 255)
    assert conf.tolist() == [[1, 1], [0, 1]]
    s = seg.scores(conf)
    assert s["iou_0"] == pytest.approx(1 / 2) and s["iou_1"] == pytest.approx(1 / 2)
    assert s["pixel_accuracy"] == pytest.approx(2 / 3)
    cfg = TaskConfig(kind="segmentation", ignore_index=255)
    task = resolve_task(cfg, [OutputInfo("mask", (2, 2, 2), "softmax")], {"mask": y})
    assert task.head.ignore_index == 255
    assert task.evaluate(_one_hot(pred, 2), y)["miou"] == pytest.approx(0.5)
    # the loss skips them too (numpy companion of Keras' ignore_class)
    assert np.isfinite(task.loss_value(_one_hot(pred, 2) * 0.8 + 0.1, y))


def test_binary_mask_from_one_sigmoid_channel() -> None:
    y = _maps(k=2)
    task = resolve_task(None, [OutputInfo("mask", (8, 8, 1), "sigmoid")], {"mask": y})
    assert task.kind == "segmentation" and task.head.units == 1 and "binary mask" in task.reason
    probs = y[..., None].astype(np.float32) * 0.8 + 0.1
    assert task.evaluate(probs, seg.convert(y, 1))["miou"] == 1.0


def test_streamed_samples_convert_like_arrays() -> None:
    from edgesparse import _tf

    tf = _tf.tf()
    y = _maps(n=2, k=3)
    for sample in (y, _one_hot(y, 3), y[..., None]):
        got = np.stack([seg.convert_tf(tf.constant(s), 3).numpy() for s in sample])
        assert np.array_equal(got, seg.convert(sample, 3))
    mask = _maps(n=2, k=2)
    got = np.stack([seg.convert_tf(tf.constant(s), 1).numpy() for s in mask])
    assert got.dtype == np.float32 and np.array_equal(got, seg.convert(mask, 1))


def test_distillation_term_is_a_per_pixel_kl() -> None:
    from edgesparse.train.distill import head_term

    y = _maps(n=2, k=3)
    task = resolve_task(TaskConfig(kind="segmentation"), [OutputInfo("mask", (8, 8, 3), "softmax")], {"mask": y})
    teacher = _one_hot(y, 3) * 0.8 + 0.2 / 3
    assert float(head_term(task.head, teacher, teacher, 1.0)) == pytest.approx(0.0, abs=1e-6)
    student = np.full_like(teacher, 1 / 3)
    p = teacher
    expected = float(np.mean(np.sum(p * (np.log(p) - np.log(student)), axis=-1)))
    assert float(head_term(task.head, student, teacher, 1.0)) == pytest.approx(expected, rel=1e-4)


# ---- inference and bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("targets", ["maps", "one_hot", "maps_1"])
def test_auto_infers_segmentation_from_class_maps_and_says_why(targets: str) -> None:
    y = _maps()
    y = {"maps": y, "one_hot": _one_hot(y, 3), "maps_1": y[..., None]}[targets]
    task = resolve_task(None, [OutputInfo("mask", (8, 8, 3), "softmax")], {"mask": y})
    assert task.kind == "segmentation" and task.metric_key == "miou"
    assert "segmentation" in task.reason and "(8, 8, 3)" in task.reason
    assert seg.convert(y, 3).shape == (6, 8, 8)


def test_class_maps_of_another_size_than_the_output_are_a_clear_error() -> None:
    y = _maps(s=16)
    with pytest.raises(DataError, match=r"16x16 but the output is 8x8.*resize the masks"):
        resolve_task(None, [OutputInfo("mask", (8, 8, 3), "softmax")], {"mask": y})
    with pytest.raises(DataError, match="16x16 but the output is 8x8"):
        resolve_task(TaskConfig(kind="segmentation"), [OutputInfo("mask", (8, 8, 3), "softmax")], {"mask": y})
    with pytest.raises(DataError, match=r"one-hot targets .* have 4 classes but the output has 3"):
        resolve_task(TaskConfig(kind="segmentation"), [OutputInfo("mask", (8, 8, 3), "softmax")],
                     {"mask": _one_hot(_maps(k=4), 4)})


def test_class_ids_beyond_the_output_and_misplaced_settings_are_clear_errors() -> None:
    with pytest.raises(DataError, match=r"ids in \[0, 4\].*predicts 3 classes.*ignore_index"):
        seg.check_labels("mask", _maps(k=5), 3, None, "train")
    seg.check_labels("mask", np.where(_maps() == 2, 255, _maps()), 3, 255, "train")  # ignored ids pass
    with pytest.raises(RecipeError, match="per-pixel output"):
        resolve_task(TaskConfig(kind="segmentation"), [OutputInfo("p", (3,), "softmax")], {"p": np.arange(4) % 3})
    with pytest.raises(RecipeError, match="ignore_index belongs to task segmentation"):
        resolve_task(TaskConfig(kind="classification", ignore_index=255), [OutputInfo("p", (3,), "softmax")],
                     {"p": np.arange(4) % 3})
    with pytest.raises(RecipeError, match="use task segmentation"):  # was a raw "cannot reshape array" ValueError
        resolve_task(TaskConfig(kind="classification"), [OutputInfo("mask", (8, 8, 3), "softmax")], {"mask": _maps()})
    with pytest.raises(RecipeError, match="cannot skip pixels"):
        seg.keras_loss(1, False, 255)


def test_generated_scenes_have_class_maps_matching_their_shapes() -> None:
    from edgesparse.data.shape_masks import ShapeMasksConfig, generate_shape_masks

    loaded = generate_shape_masks(ShapeMasksConfig(builtin="shape_masks", image_size=16, samples=40), seed=3)
    assert loaded.x.shape == (40, 16, 16, 3) and loaded.y.shape == (40, 16, 16) and loaded.y.dtype == np.int64
    assert loaded.class_names == ["background", "circle", "square"]
    assert set(np.unique(loaded.y)) == {0, 1, 2}
    fg = loaded.y > 0  # shapes are brighter than the background
    assert loaded.x[fg].mean() > loaded.x[~fg].mean() + 0.2
    again = generate_shape_masks(ShapeMasksConfig(builtin="shape_masks", image_size=16, samples=40), seed=3)
    assert np.array_equal(again.y, loaded.y)


# ---- the shipped recipe end to end --------------------------------------------------------------------------------


def _recipe(tmp: Path) -> Any:
    from edgesparse.recipe import load_recipe
    from tests.conftest import ROOT

    return load_recipe(ROOT / "recipes" / "segmentation_unet.yaml", [
        f"output_dir={tmp / 'run'}", f"export.dir={tmp / 'bundle'}", "data.samples=400",
        "data.num_classes=1", "model.filters=[8,16,16]", "baseline.epochs=8",
        "channels.epochs=3", "channels.target={macs: 0.5}", "sparsity.epochs=3", "sparsity.end=2",
        "sparsity.on_drop=warn", "channels.on_drop=warn"])


@pytest.fixture(scope="module")
def unet_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from edgesparse.run import train

    tmp = tmp_path_factory.mktemp("unet")
    return train(_recipe(tmp), force=True, progress=False), tmp


@pytest.mark.slow
def test_unet_recipe_trains_thins_prunes_quantizes_exports_and_deploys(unet_run: Any) -> None:
    from edgesparse.device.deploy import deploy

    result, tmp = unet_run
    s = result.summary
    assert s.task is not None and s.task["kind"] == "segmentation" and s.task["metric"] == "miou"
    base = s.baseline.metrics
    assert base["miou"] > 0.8 and {"pixel_accuracy", "iou_0", "iou_1"} <= set(base), base
    assert s.channels is not None and 0 < s.channels.macs <= 0.55 * s.channels.dense_macs, s.channels
    assert s.tflite is not None and s.tflite.quantization == "int8" and s.tflite.metric is not None
    assert s.tflite.agreement is not None and s.tflite.agreement > 0.9  # pixel agreement with the Keras model
    assert abs(s.tflite.metric - s.model.metric) <= 0.05
    written = json.loads((Path(result.run_dir) / "summary.json").read_text())
    assert "iou_1" in json.dumps(written)
    res = deploy(result.run_dir, "local", dest=str(tmp / "device"))
    head = res.outputs["mask"]
    assert head["max_abs_diff"] <= 1e-5 and head["agreement"] == 1.0
    assert res.metric_key == "miou" and res.device_metric == pytest.approx(res.host_metric)


# ---- the channel graph on a U-Net --------------------------------------------------------------------------------


def _unet_with_upsampling() -> Any:
    from edgesparse import _tf

    keras = _tf.keras()
    layers = keras.layers
    x = keras.Input((16, 16, 3))
    e0 = layers.Conv2D(6, 3, padding="same", activation="relu", name="e0")(x)
    e1 = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="e1")(e0)
    b = layers.Conv2D(10, 3, strides=2, padding="same", activation="relu", name="b")(e1)
    u1 = layers.Conv2DTranspose(8, 3, strides=2, padding="same", name="up1")(b)
    d1 = layers.Conv2D(8, 3, padding="same", activation="relu", name="d1")(layers.Concatenate(name="cat1")([u1, e1]))
    u0 = layers.UpSampling2D(name="up0")(d1)
    d0 = layers.Conv2D(6, 3, padding="same", activation="relu", name="d0")(layers.Concatenate(name="cat0")([u0, e0]))
    return keras.Model(x, layers.Conv2D(3, 1, activation="softmax", name="mask")(d0))


def test_unet_channels_conv_transpose_upsampling_and_skips_are_thinned_to_the_same_outputs() -> None:
    from edgesparse.export.convert import convert
    from edgesparse.tflite.footprint import footprint
    from edgesparse.train.channels.cost import build_cost_model
    from edgesparse.train.channels.graph import build_graph
    from edgesparse.train.channels.surgery import check_equal, mask_model, thin_model

    model = _unet_with_upsampling()
    graph = build_graph(model)
    owners = {layer for g in graph.groups for layer in g.layers}
    assert {"e0", "e1", "b", "up1", "d1", "d0"} <= owners  # the transposed convolution is a producer like the rest
    assert "up1" not in graph.frozen_layers and "up0" not in graph.frozen_layers and "cat1" not in graph.frozen_layers
    assert "mask" in graph.frozen_layers and graph.frozen[graph.node("mask").output].all()  # classes never pruned
    cost = build_cost_model(model, graph)
    full = np.ones(graph.num_units, dtype=bool)
    assert cost.params(full) == model.count_params()
    assert cost.macs(full) == footprint(convert(model, "none")).macs_dense
    rng = np.random.default_rng(0)
    keep = full.copy()
    for g in graph.groups:
        keep[g.units[rng.permutation(len(g.units))[: len(g.units) // 2]]] = False
    thinned = thin_model(model, graph, keep)
    assert thinned.count_params() == cost.params(keep) < model.count_params()
    assert thinned.get_layer("up1").kernel.shape == (3, 3, 4, 5)  # [kh, kw, out, in], both halved
    x = rng.random((8, 16, 16, 3), dtype=np.float32)
    assert check_equal(mask_model(model, graph, keep), thinned, x, 1e-4) <= 1e-4
    assert thinned.output_shape == model.output_shape
