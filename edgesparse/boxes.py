"""Anchor boxes, box coding, non-maximum suppression and mAP, in numpy only.

The detection task (:mod:`edgesparse.task.detection`), the generated detection data and the export of
``TFLite_Detection_PostProcess`` share these, and nothing here imports TensorFlow, so consumers of a
bundle (deploy, profile) stay light.

Conventions (those of the TF Object Detection API and of TFLite's detection post-processing op):

* boxes and anchors are ``[ymin, xmin, ymax, xmax]``, normalised to the image (0..1);
* encoded boxes are ``[ty, tx, th, tw]`` as in the API's ``faster_rcnn_box_coder`` with SSD's variances
  ``[0.1, 0.1, 0.2, 0.2]``: ``ty = (yc - ya) / ha / 0.1``, ``th = log(h / ha) / 0.2`` (the op's ``y_scale`` and
  ``h_scale`` are the reciprocals, 10 and 5);
* class scores are ``(A, C + 1)`` with column 0 the background (softmax), or ``(A, C)`` sigmoid scores; a
  detection's class is 0-based over the foreground classes, as the op reports it;
* per-anchor training targets: class ids ``(A,)`` with 0 = background and encoded boxes ``(A, 4)`` (zeros on
  background anchors).

mAP@0.5 is computed by ``pycocotools``' ``COCOeval`` (101-point interpolated precision at IoU 0.5, the
reference implementation), not by code of ours.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: the outputs of a model ending in TFLite's ``TFLite_Detection_PostProcess`` op, in its order
POSTPROCESS_OUTPUTS = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")
#: SSD's encoding variances (``ty, tx, th, tw``); the TFLite op's scales are their reciprocals
VARIANCES: tuple[float, float, float, float] = (0.1, 0.1, 0.2, 0.2)


def ssd_anchors(feature_maps: Sequence[tuple[int, int]], scales: Sequence[float],
                aspect_ratios: Sequence[float] = (1.0, 2.0)) -> np.ndarray:
    """SSD-style anchors for several feature maps, in the order a head's ``Reshape((-1, 4))`` reads them.

    Args:
        feature_maps: ``(rows, cols)`` of each feature map, finest first.
        scales: Each map's anchor size as a fraction of the image side.
        aspect_ratios: Width / height of the anchors at every location (the same for every map).

    Returns:
        ``(A, 4)`` float32 corner boxes, ``A = sum(rows * cols) * len(aspect_ratios)``; per map, row by row,
        column by column, then aspect ratio (the order of a conv head's ``(H, W, K * 4)`` output reshaped).

    Raises:
        ValueError: ``feature_maps`` and ``scales`` differ in length, or a size is not positive.
    """
    if len(feature_maps) != len(scales):
        raise ValueError(f"{len(feature_maps)} feature maps but {len(scales)} scales; give one scale per map")
    out = []
    for (rows, cols), scale in zip(feature_maps, scales):
        if rows <= 0 or cols <= 0 or scale <= 0:
            raise ValueError(f"feature map {rows}x{cols} with scale {scale}: sizes must be positive")
        yc, xc = np.meshgrid((np.arange(rows) + 0.5) / rows, (np.arange(cols) + 0.5) / cols, indexing="ij")
        for_map = []
        for ar in aspect_ratios:
            h, w = scale / np.sqrt(ar), scale * np.sqrt(ar)
            for_map.append(np.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], axis=-1))
        out.append(np.stack(for_map, axis=2).reshape(-1, 4))  # (rows, cols, K, 4) -> row, col, ratio
    return np.concatenate(out).astype(np.float32)


def to_center(boxes: np.ndarray) -> np.ndarray:
    """Corner boxes ``[ymin, xmin, ymax, xmax]`` as ``[yc, xc, h, w]``."""
    b = np.asarray(boxes, dtype=np.float64)
    return np.stack([(b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2,
                     b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]], axis=-1)


def to_corners(center: np.ndarray) -> np.ndarray:
    """``[yc, xc, h, w]`` as corner boxes ``[ymin, xmin, ymax, xmax]``."""
    c = np.asarray(center, dtype=np.float64)
    return np.stack([c[..., 0] - c[..., 2] / 2, c[..., 1] - c[..., 3] / 2,
                     c[..., 0] + c[..., 2] / 2, c[..., 1] + c[..., 3] / 2], axis=-1)


def encode(boxes: np.ndarray, anchors: np.ndarray, variances: Sequence[float] = VARIANCES) -> np.ndarray:
    """Encode corner boxes against anchors (same leading shape): ``[ty, tx, th, tw]`` float32."""
    b, a = to_center(boxes), to_center(anchors)
    v = np.asarray(variances, dtype=np.float64)
    eps = 1e-8
    ty = (b[..., 0] - a[..., 0]) / a[..., 2] / v[0]
    tx = (b[..., 1] - a[..., 1]) / a[..., 3] / v[1]
    th = np.log(np.maximum(b[..., 2], eps) / a[..., 2]) / v[2]
    tw = np.log(np.maximum(b[..., 3], eps) / a[..., 3]) / v[3]
    return np.stack([ty, tx, th, tw], axis=-1).astype(np.float32)


def decode(encoded: np.ndarray, anchors: np.ndarray, variances: Sequence[float] = VARIANCES) -> np.ndarray:
    """Decode ``[ty, tx, th, tw]`` (any leading shape ending in ``(A, 4)``) into corner boxes, float32."""
    e = np.asarray(encoded, dtype=np.float64)
    a = to_center(anchors)
    v = np.asarray(variances, dtype=np.float64)
    yc = e[..., 0] * v[0] * a[..., 2] + a[..., 0]
    xc = e[..., 1] * v[1] * a[..., 3] + a[..., 1]
    h = np.exp(np.clip(e[..., 2] * v[2], -20, 20)) * a[..., 2]
    w = np.exp(np.clip(e[..., 3] * v[3], -20, 20)) * a[..., 3]
    return to_corners(np.stack([yc, xc, h, w], axis=-1)).astype(np.float32)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of corner boxes ``a (N, 4)`` and ``b (M, 4)``: ``(N, M)``; 0 where a box has no area."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    ih = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iw = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ih * iw
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where((area_a[:, None] > 0) & (area_b[None, :] > 0), inter / np.maximum(union, 1e-12), 0.0)


def match(gt_boxes: np.ndarray, gt_classes: np.ndarray, anchors: np.ndarray, threshold: float = 0.5,
          variances: Sequence[float] = VARIANCES) -> tuple[np.ndarray, np.ndarray]:
    """Per-anchor training targets for one image (SSD matching).

    An anchor is positive for the object it overlaps most when that IoU is at least ``threshold``; every
    object also claims its best anchor, so no object goes without one.

    Args:
        gt_boxes: ``(G, 4)`` corner boxes.
        gt_classes: ``(G,)`` class ids, 1-based (0 is the background).
        anchors: ``(A, 4)``.
        threshold: IoU from which an anchor is positive.
        variances: Encoding variances.

    Returns:
        ``(A,)`` int64 class ids (0 background) and ``(A, 4)`` float32 encoded boxes (0 on the background).
    """
    n = len(anchors)
    cls = np.zeros(n, dtype=np.int64)
    enc = np.zeros((n, 4), dtype=np.float32)
    if not len(gt_boxes):
        return cls, enc
    overlaps = iou(gt_boxes, anchors)  # (G, A)
    best_gt = overlaps.argmax(axis=0)
    best_iou = overlaps.max(axis=0)
    for g, a in enumerate(overlaps.argmax(axis=1)):
        best_gt[a], best_iou[a] = g, 1.0
    pos = best_iou >= threshold
    cls[pos] = np.asarray(gt_classes, dtype=np.int64)[best_gt[pos]]
    enc[pos] = encode(np.asarray(gt_boxes)[best_gt[pos]], anchors[pos], variances)
    return cls, enc


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_out: int) -> np.ndarray:
    """Greedy NMS as TFLite's kernel does it: highest score first, a box is suppressed when its IoU with a kept
    box is above ``iou_threshold``; at most ``max_out`` indices, in decreasing score (ties keep index order)."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep: list[int] = []
    active = np.ones(len(order), dtype=bool)
    overlaps = iou(boxes[order], boxes[order]) if len(order) else np.zeros((0, 0))
    for i in range(len(order)):
        if len(keep) >= max_out:
            break
        if not active[i]:
            continue
        keep.append(int(order[i]))
        active[i + 1:] &= overlaps[i, i + 1:] <= iou_threshold
    return np.asarray(keep, dtype=np.int64)


@dataclass(frozen=True)
class Detections:
    """One image's detections: corner boxes ``(N, 4)``, 0-based foreground classes ``(N,)``, scores ``(N,)``."""

    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def foreground_scores(scores: np.ndarray, num_classes: int) -> np.ndarray:
    """The foreground columns of ``(..., A, K)`` class scores: the last ``num_classes`` (a background column,
    when there is one, comes first: what the TFLite op calls the label offset)."""
    return np.asarray(scores)[..., -num_classes:]


def detect(scores: np.ndarray, encoded: np.ndarray, anchors: np.ndarray, num_classes: int,
           score_threshold: float = 0.05, iou_threshold: float = 0.5, max_detections: int = 20,
           per_class: int | None = None, variances: Sequence[float] = VARIANCES) -> Detections:
    """Decode one image's raw head outputs and run per-class NMS (TFLite's ``use_regular_nms``).

    Args:
        scores: ``(A, C + 1)`` (background first) or ``(A, C)`` class scores.
        encoded: ``(A, 4)`` encoded boxes.
        anchors: ``(A, 4)``.
        num_classes: ``C``, the foreground classes.
        score_threshold: Scores below it are no candidates.
        iou_threshold: NMS IoU threshold.
        max_detections: Detections kept over all classes (highest scores).
        per_class: Detections kept per class (default ``max_detections``).
        variances: Encoding variances.

    Returns:
        The detections, highest score first.
    """
    boxes = decode(encoded, anchors, variances)
    fg = foreground_scores(scores, num_classes).astype(np.float64)
    per = max_detections if per_class is None else per_class
    all_b, all_c, all_s = [], [], []
    for c in range(num_classes):
        s = fg[:, c]
        cand = np.flatnonzero(s >= score_threshold)
        keep = cand[nms(boxes[cand], s[cand], iou_threshold, per)]
        all_b.append(boxes[keep])
        all_c.append(np.full(len(keep), c, dtype=np.int64))
        all_s.append(s[keep])
    b, c_, s_ = np.concatenate(all_b), np.concatenate(all_c), np.concatenate(all_s)
    top = np.argsort(-s_, kind="stable")[:max_detections]
    return Detections(b[top].reshape(-1, 4).astype(np.float32), c_[top], s_[top].astype(np.float32))


def ground_truth(classes: np.ndarray, encoded: np.ndarray, anchors: np.ndarray,
                 variances: Sequence[float] = VARIANCES) -> tuple[np.ndarray, np.ndarray]:
    """The objects of one image recovered from its per-anchor targets.

    The positive anchors of one object decode to the same box (up to float error): boxes of one class that
    overlap with IoU above 0.95 are one object. Every object is recovered when each claimed at least one anchor
    (what :func:`match` ensures).

    Returns:
        ``(G, 4)`` corner boxes and ``(G,)`` 1-based class ids.
    """
    cls = np.asarray(classes).reshape(-1).astype(np.int64)
    pos = np.flatnonzero(cls > 0)
    if not len(pos):
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    boxes = decode(np.asarray(encoded)[pos, :4], np.asarray(anchors)[pos], variances)
    classes = cls[pos]
    same = (iou(boxes, boxes) > 0.95) & (classes[:, None] == classes[None, :])
    first = [i for i in range(len(pos)) if not same[i, :i].any()]
    return boxes[first], classes[first]


def mean_average_precision(detections: Sequence[Detections], gt_boxes: Sequence[np.ndarray],
                           gt_classes: Sequence[np.ndarray], num_classes: int, iou_threshold: float = 0.5
                           ) -> float | None:
    """mAP at one IoU threshold by ``pycocotools``' COCOeval (101-point interpolated AP, mean over classes
    with at least one object); None when no image has an object.

    Args:
        detections: Per image, its detections (0-based classes).
        gt_boxes: Per image, ``(G, 4)`` corner boxes.
        gt_classes: Per image, ``(G,)`` 1-based class ids.
        num_classes: Foreground classes.
        iou_threshold: A detection is a true positive from this IoU with an unclaimed object of its class.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(b: np.ndarray) -> list[float]:
        # COCO boxes are [x, y, w, h]; scaled to a 1000-pixel image so COCOeval's area ranges stay meaningful
        y0, x0, y1, x1 = (float(v) * 1000.0 for v in b)
        return [x0, y0, max(x1 - x0, 0.0), max(y1 - y0, 0.0)]

    anns: list[dict[str, object]] = []
    dets: list[dict[str, object]] = []
    for i, (boxes, classes) in enumerate(zip(gt_boxes, gt_classes)):
        for b, c in zip(boxes, classes):
            bb = xywh(b)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c), "bbox": bb,
                         "area": bb[2] * bb[3], "iscrowd": 0})
    if not anns:
        return None
    for i, d in enumerate(detections):
        for b, c, s in zip(d.boxes, d.classes, d.scores):
            dets.append({"image_id": i, "category_id": int(c) + 1, "bbox": xywh(b), "score": float(s)})
    if not dets:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):  # COCO prints its progress
        gt = COCO()
        gt.dataset = {"images": [{"id": i} for i in range(len(gt_boxes))], "annotations": anns,
                      "categories": [{"id": c} for c in range(1, num_classes + 1)]}
        gt.createIndex()
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.iouThrs = np.array([iou_threshold])
        ev.params.maxDets = [max(100, *(len(d) for d in detections))]
        ev.params.areaRng = [[0.0, 1e10]]
        ev.params.areaRngLbl = ["all"]
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][0, :, :, 0, -1]  # (recall points, classes)
    per_class = [float(np.mean(p)) for p in precision.T if (p > -1).all()]
    return float(np.mean(per_class)) if per_class else None


def detections_from_outputs(outputs: dict[str, np.ndarray]) -> list[Detections]:
    """TFLite_Detection_PostProcess's four outputs (keyed by :data:`POSTPROCESS_OUTPUTS`, batch axis first) as one
    :class:`Detections` per image."""
    names = POSTPROCESS_OUTPUTS
    boxes, classes = np.asarray(outputs[names[0]]), np.asarray(outputs[names[1]])
    scores, count = np.asarray(outputs[names[2]]), np.asarray(outputs[names[3]]).reshape(-1)
    return [Detections(boxes[i, :int(count[i])].astype(np.float32), classes[i, :int(count[i])].astype(np.int64),
                       scores[i, :int(count[i])].astype(np.float32)) for i in range(len(count))]


__all__ = [
    "POSTPROCESS_OUTPUTS",
    "VARIANCES",
    "Detections",
    "decode",
    "detect",
    "detections_from_outputs",
    "encode",
    "foreground_scores",
    "ground_truth",
    "iou",
    "match",
    "mean_average_precision",
    "nms",
    "ssd_anchors",
    "to_center",
    "to_corners",
]
