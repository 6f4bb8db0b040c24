"""Anchor-based detection: box coding, generated scenes, the tiny SSD, TFLite's post-processing op."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import edgesparse  # noqa: F401  (before tensorflow: edgesparse picks tf_keras)
from edgesparse import boxes as B


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
