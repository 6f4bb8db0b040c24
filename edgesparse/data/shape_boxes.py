"""``{builtin: shape_boxes}``: generated images with a few shapes each and their boxes, for SSD-style detection.

Each image has a background with a gentle gradient and noise and one to ``max_objects`` shapes (circle,
square, triangle ... the first ``num_classes`` of :data:`~edgesparse.data.shapes.SHAPE_NAMES`) of random
size, position and colour. The targets are per anchor, as an SSD head is trained (see
:mod:`edgesparse.boxes`): ``y_<scores>`` ``(A,)`` class ids with 0 = background (class ``k`` is shape
``k - 1``) and ``y_<boxes>`` ``(A, 4)`` encoded against the anchors, which the data set carries
(:attr:`~edgesparse.data.Dataset.anchors`). The anchors are those of a two-map SSD on this image size:
maps at strides 4 and 8, two aspect ratios (0.7, 1.4) per location, scales 0.3 and 0.6 of the image side,
which is what ``model: {builtin: ssd_tiny}`` predicts for.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from edgesparse.boxes import VARIANCES, match, ssd_anchors
from edgesparse.data.dataset import Dataset
from edgesparse.data.registry import BuiltinSource, Loaded, builtin
from edgesparse.data.shapes import SHAPE_NAMES, SHAPES
from edgesparse.data.split import split_dataset

#: anchors per location of each feature map (width / height)
ASPECT_RATIOS = (0.7, 1.4)
#: anchor size (fraction of the side) of the stride-4 and stride-8 maps
SCALES = (0.3, 0.6)


class ShapeBoxesConfig(BuiltinSource):
    """``{builtin: shape_boxes, image_size: 32, num_classes: 2, samples: 1200, max_objects: 2}``.

    ``scores`` and ``boxes`` name the model outputs the targets are for (``y_cls``, ``y_box``).
    """

    builtin: Literal["shape_boxes"]
    image_size: int = Field(32, ge=16, le=256, description="square side in pixels, a multiple of 8")
    num_classes: int = Field(2, ge=1, le=len(SHAPE_NAMES), description="foreground classes (shapes)")
    samples: int = Field(1200, ge=10)
    max_objects: int = Field(2, ge=1, le=6)
    noise: float = Field(0.04, ge=0.0, le=1.0)
    match_iou: float = Field(0.45, gt=0.0, le=1.0, description="IoU from which an anchor is positive")
    scores: str = Field("cls", description="name of the model's class-score output")
    boxes: str = Field("box", description="name of the model's box output")

    @field_validator("image_size")
    @classmethod
    def _multiple_of_8(cls, v: int) -> int:
        if v % 8:
            raise ValueError(f"image_size must be a multiple of 8 (the anchors' strides are 4 and 8), got {v}")
        return v


def anchors_for(image_size: int) -> np.ndarray:
    """The anchors of :class:`ShapeBoxesConfig` images of side ``image_size``: ``(A, 4)``."""
    return ssd_anchors([(image_size // 4, image_size // 4), (image_size // 8, image_size // 8)], SCALES,
                       ASPECT_RATIOS)


def generate_shape_boxes(cfg: ShapeBoxesConfig, seed: int) -> tuple[Loaded, np.ndarray]:
    """The images, their per-anchor targets and the anchors.

    Returns:
        ``Loaded`` (x ``(N, S, S, 3)`` float32 in [0, 1]; y ``{scores: (N, A) int64, boxes: (N, A, 4) float32}``;
        foreground class names) and the anchors ``(A, 4)``.
    """
    s, n = cfg.image_size, cfg.samples
    rng = np.random.default_rng(seed)
    anchors = anchors_for(s)
    names = list(SHAPE_NAMES[: cfg.num_classes])
    coords = np.arange(s, dtype=np.float32)
    x = np.empty((n, s, s, 3), dtype=np.float32)
    y_cls = np.zeros((n, len(anchors)), dtype=np.int64)
    y_box = np.zeros((n, len(anchors), 4), dtype=np.float32)
    for i in range(n):
        bg = rng.uniform(0.0, 0.5, 3).astype(np.float32)
        gy, gx = rng.uniform(-0.15, 0.15, 2)
        img = bg + (gy * (coords[:, None] / s - 0.5) + gx * (coords[None, :] / s - 0.5))[..., None]
        gt_boxes: list[np.ndarray] = []
        gt_classes: list[int] = []
        for _ in range(int(rng.integers(1, cfg.max_objects + 1))):
            k = int(rng.integers(len(names)))
            r = rng.uniform(0.12, 0.3) * s
            cy, cx = rng.uniform(r, s - r, 2)
            mask = SHAPES[names[k]](coords[:, None] - cy, coords[None, :] - cx, np.float32(r))
            ys, xs = np.nonzero(mask)
            if not len(ys):
                continue
            box = np.array([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1], dtype=np.float64) / s
            if gt_boxes and np.max(_overlap(box, np.asarray(gt_boxes))) > 0.3:
                continue  # keep objects mostly apart: one shape must not hide another
            img[mask] = rng.uniform(0.6, 1.0, 3).astype(np.float32)
            gt_boxes.append(box)
            gt_classes.append(k + 1)
        if cfg.noise:
            img += rng.normal(0.0, cfg.noise, img.shape).astype(np.float32)
        x[i] = np.clip(img, 0.0, 1.0)
        y_cls[i], y_box[i] = match(np.asarray(gt_boxes).reshape(-1, 4), np.asarray(gt_classes, dtype=np.int64),
                                   anchors, cfg.match_iou, VARIANCES)
    return Loaded("shape_boxes", x, {cfg.scores: y_cls, cfg.boxes: y_box}, None, None, names), anchors


def _overlap(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    from edgesparse.boxes import iou

    return iou(box[None], others)[0]


@builtin("shape_boxes", ShapeBoxesConfig)
def load_shape_boxes(cfg: ShapeBoxesConfig, seed: int, base_dir: Path | None) -> Dataset:
    """Generate the detection data set (nothing is read from disk), split, with its anchors."""
    loaded, anchors = generate_shape_boxes(cfg, seed)
    return dataclasses.replace(split_dataset(loaded, cfg, seed), anchors=anchors)


__all__ = ["ASPECT_RATIOS", "SCALES", "ShapeBoxesConfig", "anchors_for", "generate_shape_boxes"]
