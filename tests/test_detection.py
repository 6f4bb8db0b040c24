"""Anchor-based detection: box coding, generated scenes, the tiny SSD, TFLite's post-processing op."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import edgesparse  # noqa: F401  (before tensorflow: edgesparse picks tf_keras)
from edgesparse import boxes as B
from tests.pi import pi_device  # noqa: F401  (fixture: the emulated Raspberry Pi, for the pi-marked test)


@pytest.fixture(scope="module")
def scenes() -> Any:
    from edgesparse.data import load_dataset

    return load_dataset({"builtin": "shape_boxes", "samples": 240}, seed=0)


@pytest.fixture(scope="module")
def detector(scenes: Any) -> Any:
    """A tiny SSD trained two epochs on plain losses (enough for non-trivial scores), and its float TFLite."""
    from edgesparse import _tf
    from edgesparse.models.ssd import SSDTinyConfig, ssd_tiny

    tf = _tf.tf()
    _tf.keras().utils.set_random_seed(0)
    model = ssd_tiny(SSDTinyConfig(builtin="ssd_tiny"), (32, 32, 3), 2)
    model.compile("adam", ["sparse_categorical_crossentropy", "mse"])
    model.fit(scenes.x_train, [scenes.y_train["cls"], scenes.y_train["box"]], epochs=2, verbose=0)
    flat = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    return model, flat


def test_encode_decode_round_trip_and_match_claims_every_object() -> None:
    anchors = B.ssd_anchors([(4, 4), (2, 2)], [0.3, 0.6], (0.7, 1.4))
    assert anchors.shape == (40, 4)
    gt = np.array([[0.1, 0.1, 0.45, 0.4], [0.5, 0.55, 0.95, 0.9]])
    cls, enc = B.match(gt, np.array([1, 2]), anchors, 0.5)
    assert set(np.unique(cls)) == {0, 1, 2}
    assert np.allclose(B.decode(enc[cls > 0], anchors[cls > 0]), gt[cls[cls > 0] - 1], atol=1e-5)
    boxes, classes = B.ground_truth(cls, enc, anchors)
    assert np.allclose(boxes, gt, atol=1e-5) and list(classes) == [1, 2]


def test_map_is_one_for_the_truth_and_lower_for_a_miss_or_a_wrong_box() -> None:
    gt = [np.array([[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9]])]
    cl = [np.array([1, 2])]
    exact = B.Detections(gt[0], np.array([0, 1]), np.array([0.9, 0.8]))
    assert B.mean_average_precision([exact], gt, cl, 2) == pytest.approx(1.0)
    missed = B.Detections(gt[0][:1], np.array([0]), np.array([0.9]))
    assert B.mean_average_precision([missed], gt, cl, 2) == pytest.approx(0.5)
    shifted = B.Detections(gt[0] + 0.2, np.array([0, 1]), np.array([0.9, 0.8]))  # IoU < 0.5 for both
    assert B.mean_average_precision([shifted], gt, cl, 2) == pytest.approx(0.0)


def test_scenes_carry_anchors_and_per_anchor_targets(scenes: Any) -> None:
    y = scenes.y_train
    assert scenes.anchors.shape == (160, 4)
    assert y["cls"].shape == (scenes.train.n, 160) and y["box"].shape == (scenes.train.n, 160, 4)
    positives = (y["cls"] > 0).sum(axis=1)
    assert positives.min() >= 1  # every image has an object with an anchor
    assert (y["cls"] > 0).mean() < 0.1  # background dominates, as in real detectors
    assert np.all(y["box"][y["cls"] == 0] == 0)


def test_postprocess_op_equals_numpy_decode_and_nms(scenes: Any, detector: Any) -> None:
    from ai_edge_litert.interpreter import Interpreter

    from edgesparse.export.postprocess import (
        OUTPUTS,
        PostprocessSettings,
        append_detection_postprocess,
        detections_from_outputs,
    )

    model, flat = detector
    settings = PostprocessSettings(num_classes=2, score_threshold=0.2, max_detections=10)
    runner = Interpreter(model_content=append_detection_postprocess(flat, scenes.anchors, settings))
    assert runner.get_signature_list()["serving_default"]["outputs"] == list(OUTPUTS)
    run = runner.get_signature_runner()
    cls, box = model.predict(scenes.x_test[:12], verbose=0)
    compared = 0
    for i in range(12):
        got = detections_from_outputs(run(input=scenes.x_test[i:i + 1]))[0]
        want = B.detect(cls[i], box[i], scenes.anchors, 2, score_threshold=0.2, iou_threshold=0.5,
                        max_detections=10)
        assert len(got) == len(want)
        assert np.array_equal(got.classes, want.classes)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-5)
        compared += len(got)
    assert compared > 0  # the comparison saw detections


def test_postprocess_refuses_heads_that_do_not_match_the_anchors(scenes: Any, detector: Any) -> None:
    from edgesparse.errors import ExportError
    from edgesparse.export.postprocess import PostprocessSettings, append_detection_postprocess

    with pytest.raises(ExportError, match="one encoded box per anchor"):
        append_detection_postprocess(detector[1], scenes.anchors[:100], PostprocessSettings(num_classes=2))
    with pytest.raises(ExportError, match="score output"):
        append_detection_postprocess(detector[1], scenes.anchors, PostprocessSettings(num_classes=5))


# ---- the detection task kind, end to end ------------------------------------------------------------------------


def _recipe(tmp: Any, **over: Any) -> dict[str, Any]:
    """The shipped SSD recipe made small: 600 scenes, 15 + 6 epochs (about 8 s of CPU each), one int8 candidate."""
    import yaml

    from tests.conftest import ROOT

    raw = yaml.safe_load((ROOT / "recipes" / "ssd_detector.yaml").read_text())
    raw.update(output_dir=str(tmp / "run"), data={**raw["data"], "samples": 600},
               model={**raw["model"], "filters": [16, 32, 32]})
    raw["baseline"]["epochs"] = 15
    raw["sparsity"].update(epochs=6, end=3, frequency=2, on_drop="warn")
    raw["channels"] = {"target": {"macs": 0.6}, "epochs": 3, "on_drop": "warn"}  # Reshape/Concatenate heads kept
    raw["export"] = {**raw["export"], "dir": str(tmp / "bundle"), "sparse_encoding": True, "per_channel": True}
    raw.update(over)
    return raw


@pytest.fixture(scope="module")
def detector_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The shipped recipe, tiny: train -> channels -> prune 80% -> int8 -> export with the post-processing op."""
    from edgesparse.recipe import validate_recipe
    from edgesparse.run import train

    tmp = tmp_path_factory.mktemp("ssd")
    return train(validate_recipe(_recipe(tmp)), force=True), tmp


@pytest.mark.slow
def test_detector_trains_prunes_quantizes_and_exports_with_postprocess(detector_run: Any) -> None:
    import json
    from pathlib import Path

    from ai_edge_litert.interpreter import Interpreter

    res, _ = detector_run
    s = res.summary
    assert s.task is not None and s.task["kind"] == "detection" and s.task["metric"] == "map50"
    health = s.baseline.health or {}
    assert health.get("chance") is not None and health["chance"] < 0.1  # chance is a mAP, not background anchors
    assert s.baseline.metric is not None and s.baseline.metric > 0.3  # learned to find shapes (measured 0.51)
    # thinned, 80% sparse and int8 after a few epochs each (measured 0.17): still a detector, far above chance
    assert s.tflite is not None and s.tflite.metric is not None and s.tflite.metric > max(0.1, 4 * health["chance"])
    assert s.model is not None and s.model.metric is not None and abs(s.model.metric - s.tflite.metric) < 0.03
    assert s.model.sparsity_pruned_kernels is not None and s.model.sparsity_pruned_kernels > 0.79
    ch = s.channels
    assert ch is not None and ch.macs < 0.7 * ch.dense_macs  # thinned, the heads' anchors x classes kept
    assert s.model.params < ch.dense_params
    info = json.loads((Path(s.tflite.bundle or "") / "export.json").read_text())
    assert info["quantization"] == "int8"
    post = info["detection_postprocess"]
    assert post["op"] == "TFLite_Detection_PostProcess" and post["anchors"] == 160
    v = post["verification"]
    assert v["agreement"] >= 0.8 and v["map50"] is not None
    assert abs(v["map50"] - s.tflite.metric) < 0.05  # the op's detections score like the numpy NMS of the heads
    model = (Path(s.tflite.bundle or "") / "model.tflite").read_bytes()
    outs = Interpreter(model_content=model).get_signature_list()["serving_default"]["outputs"]
    assert outs == ["detection_boxes", "detection_classes", "detection_scores", "num_detections"]


@pytest.mark.slow
def test_detector_bundle_deploys_locally_with_four_outputs(detector_run: Any, tmp_path: Any) -> None:
    from pathlib import Path

    from edgesparse.device.deploy import deploy

    res, _ = detector_run
    out = deploy(Path(res.summary.tflite.bundle), "local", dest=str(tmp_path / "device"))
    assert set(out.outputs) == {"detection_boxes", "detection_classes", "detection_scores", "num_detections"}
    assert out.checksum_match and out.agreement == 1.0
    assert out.metric_key == "map50" and out.device_metric is not None
    assert out.device_metric == pytest.approx(out.host_metric)


@pytest.mark.slow
def test_detector_bundle_profiles_with_the_postprocess_op(detector_run: Any) -> None:
    from pathlib import Path

    from edgesparse.profile.measure import profile

    res, _ = detector_run
    rows = profile([Path(res.summary.tflite.bundle)], runs=3, warmup=1).to_dict()["models"]
    model = next(r for r in rows if r["path"].endswith("model.tflite"))
    assert model["ops"]["builtin"].get("TFLite_Detection_PostProcess") == 1
    assert model["latency_ms"]["median"] > 0 and model["macs_dense"] > 0


def test_detection_metrics_ignore_the_background(scenes: Any) -> None:
    """A model that calls every anchor background is right on ~97% of anchors, yet mAP and recall are 0."""
    from edgesparse.task import TaskConfig, resolve_task
    from edgesparse.task.detection import DetectionTask

    y = scenes.y_val
    n = len(y["cls"])
    task = _task(scenes)
    assert isinstance(task, DetectionTask)
    background = np.zeros((n, 160, 3), np.float32)
    background[..., 0] = 1.0
    scores = task.evaluate({"cls": background, "box": np.zeros((n, 160, 4), np.float32)}, y)
    assert (y["cls"] == 0).mean() > 0.9
    assert scores["map50"] == 0.0 and scores["recall"] == 0.0
    onehot = np.eye(3, dtype=np.float32)[y["cls"]]
    perfect = task.evaluate({"cls": onehot, "box": y["box"]}, y)
    assert perfect["map50"] == pytest.approx(1.0) and perfect["recall"] == 1.0 and perfect["box_error"] < 1e-5
    assert TaskConfig and resolve_task  # the public names the recipe path uses


def _task(scenes: Any, **cfg: Any) -> Any:
    from edgesparse.task import OutputInfo, TaskConfig, resolve_task

    outputs = [OutputInfo("cls", (160, 3), "softmax"), OutputInfo("box", (160, 4), "linear")]
    conf = TaskConfig(**{"kind": "detection", "scores": "cls", "boxes": "box", **cfg})
    return resolve_task(conf, outputs, scenes.y_train, ("input",), anchors=scenes.anchors)


def test_detection_refuses_missing_anchors_wrong_count_and_class_ids(scenes: Any) -> None:
    from edgesparse.errors import DataError, RecipeError
    from edgesparse.task import OutputInfo, TaskConfig, resolve_task

    outputs = [OutputInfo("cls", (160, 3), "softmax"), OutputInfo("box", (160, 4), "linear")]
    conf = TaskConfig(kind="detection", scores="cls", boxes="box")
    with pytest.raises(DataError, match="needs the anchors"):
        resolve_task(conf, outputs, scenes.y_train, ("input",), anchors=None)
    with pytest.raises(DataError, match="has 100 anchors"):
        resolve_task(conf, outputs, scenes.y_train, ("input",), anchors=scenes.anchors[:100])
    bad = {**scenes.y_train, "cls": np.where(scenes.y_train["cls"] > 0, 3, 0)}
    with pytest.raises(DataError, match=r"class ids 0\.\.3"):
        resolve_task(conf, outputs, bad, ("input",), anchors=scenes.anchors)
    with pytest.raises(RecipeError, match="did you mean 'box'"):
        resolve_task(TaskConfig(kind="detection", scores="cls", boxes="boxes"), outputs, scenes.y_train,
                     ("input",), anchors=scenes.anchors)


def test_detection_task_round_trips_through_json(scenes: Any) -> None:
    from edgesparse.task import Task

    task = _task(scenes, score_threshold=0.1)
    back = Task.from_json(task.to_json())
    assert type(back) is type(task) and back.score_threshold == 0.1
    assert np.array_equal(back.anchors, task.anchors)


def test_postprocess_refuses_a_model_that_is_not_a_detector() -> None:
    from edgesparse.errors import ExportError
    from edgesparse.export.postprocess import settings_for
    from edgesparse.task import classification

    with pytest.raises(ExportError, match="not detection"):
        settings_for(classification(10))


def test_recipe_refuses_detection_postprocess_without_a_detection_task(tmp_path: Any) -> None:
    from edgesparse.errors import RecipeError
    from edgesparse.recipe import validate_recipe
    from tests.conftest import tiny_recipe

    with pytest.raises(RecipeError, match="detection_postprocess"):
        validate_recipe(tiny_recipe(tmp_path, export={"detection_postprocess": True}))


@pytest.mark.pi
@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_detector_bundle_deploys_on_the_emulated_pi(pi_device: Any, detector_run: Any,  # noqa: F811
                                                    tmp_path: Any) -> None:
    """tflite-runtime 2.14 on an emulated aarch64 Pi runs TFLite_Detection_PostProcess like the host."""
    import json

    from click.testing import CliRunner

    from edgesparse.cli import main

    res, _ = detector_run
    out = tmp_path / "deploy.json"
    r = CliRunner().invoke(main, ["deploy", str(res.summary.tflite.bundle),
                                  *pi_device.cli_args("/opt/venv/bin/python"), "--json", str(out)])
    assert r.exit_code == 0, r.output
    got = json.loads(out.read_text())
    assert set(got["outputs"]) == set(B.POSTPROCESS_OUTPUTS), got["outputs"]
    assert got["device"]["machine"] == "aarch64" and got["device"]["runtime"]["name"] == "tflite_runtime"
    assert got["agreement"] >= 0.9  # int8 kernels of two runtimes: the same detections
    assert got["metric_key"] == "map50"
    assert abs(got["device_metrics"]["map50"] - got["host_metrics"]["map50"]) <= 0.02


def test_keras_losses_equal_the_numpy_loss_with_hard_negative_mining(scenes: Any) -> None:
    """Mined cross-entropy (3 negatives per positive) + Huber on positives, in TF and in numpy, per image."""
    from edgesparse import _tf

    tf = _tf.tf()
    task = _task(scenes)
    rng = np.random.default_rng(0)
    n = 8
    logits = rng.normal(size=(n, 160, 3)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    box = rng.normal(size=(n, 160, 4)).astype(np.float32)
    y = {k: v[:n] for k, v in scenes.y_train.items()}
    cls_loss, box_loss = task.keras_loss()
    keras = float(tf.reduce_mean(cls_loss(tf.constant(y["cls"]), tf.constant(probs)))) + \
        float(tf.reduce_mean(box_loss(tf.constant(y["box"]), tf.constant(box))))
    assert keras == pytest.approx(task.loss_value({"cls": probs, "box": box}, y), rel=1e-4)
    # mining matters: counting every negative (ratio 1000) gives a larger loss than 3 per positive
    import dataclasses

    every = dataclasses.replace(task, negative_ratio=1000.0)
    assert every.loss_value({"cls": probs, "box": box}, y) > 1.5 * task.loss_value({"cls": probs, "box": box}, y)


def test_sigmoid_scores_without_a_background_column(scenes: Any) -> None:
    from edgesparse.task import OutputInfo, TaskConfig, resolve_task

    outputs = [OutputInfo("cls", (160, 2), "sigmoid"), OutputInfo("box", (160, 4), "linear")]
    task = resolve_task(TaskConfig(kind="detection", scores="cls", boxes="box"), outputs, scenes.y_train,
                        ("input",), anchors=scenes.anchors)
    assert task.num_classes == 2 and not task.background
    y = scenes.y_val
    perfect = np.eye(3, dtype=np.float32)[y["cls"]][..., 1:]  # class k -> column k - 1, background all zero
    scores = task.evaluate({"cls": perfect, "box": y["box"]}, y)
    assert scores["map50"] == pytest.approx(1.0) and scores["recall"] == 1.0


def test_postprocess_dequantizes_int8_heads(scenes: Any, detector: Any) -> None:
    """An int8-output conversion (export.io: int8): DEQUANTIZE ops feed the op, detections as numpy decodes them."""
    from ai_edge_litert.interpreter import Interpreter

    from edgesparse import _tf
    from edgesparse.export.postprocess import PostprocessSettings, append_detection_postprocess, detections_from_outputs

    tf = _tf.tf()
    conv = tf.lite.TFLiteConverter.from_keras_model(detector[0])
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([scenes.x_train[i:i + 1]] for i in range(50))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type, conv.inference_output_type = tf.int8, tf.int8
    raw = conv.convert()
    plain = Interpreter(model_content=raw)
    scale, zero = plain.get_input_details()[0]["quantization"]
    q = {tuple(d["shape"][1:]): d["quantization"] for d in plain.get_output_details()}
    settings = PostprocessSettings(num_classes=2, score_threshold=0.2, max_detections=10)
    post = Interpreter(model_content=append_detection_postprocess(raw, scenes.anchors, settings)).get_signature_runner()
    found = 0
    for i in range(8):
        x = np.round(scenes.x_test[i:i + 1] / scale + zero).astype(np.int8)
        out = plain.get_signature_runner()(input=x)
        cls, box = ((out[k][0].astype(np.float32) - q[out[k].shape[1:]][1]) * q[out[k].shape[1:]][0]
                    for k in ("cls", "box"))
        want = B.detect(cls, box, scenes.anchors, 2, score_threshold=0.2, max_detections=10)
        got = detections_from_outputs(post(input=x))[0]
        assert len(got) == len(want) and np.array_equal(got.classes, want.classes)
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-4)
        found += len(got)
    assert found > 0
