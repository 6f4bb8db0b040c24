"""``{builtin: shape_masks}``: generated images with a few shapes each and their per-pixel class maps, for
semantic segmentation.

Each image has a background with a gentle gradient and noise and one to ``max_objects`` shapes (circle,
square, triangle ... the first ``num_classes`` of :data:`~edgesparse.data.shapes.SHAPE_NAMES`) of random
size, position and colour; a later shape covers an earlier one. The target of an image is its class map
``(S, S)`` int64: 0 for background, ``k + 1`` for the pixels of shape ``k`` (so a segmentation model has
``num_classes + 1`` output channels). Class names: ``background`` then the shapes. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from edgesparse.data.dataset import Dataset
from edgesparse.data.registry import BuiltinSource, Loaded, builtin
from edgesparse.data.shapes import SHAPE_NAMES, SHAPES
from edgesparse.data.split import split_dataset


class ShapeMasksConfig(BuiltinSource):
    """``{builtin: shape_masks, image_size: 32, num_classes: 2, samples: 600, max_objects: 2}``."""

    builtin: Literal["shape_masks"]
    image_size: int = Field(32, ge=8, le=256, description="square side in pixels")
    num_classes: int = Field(2, ge=1, le=len(SHAPE_NAMES), description="foreground classes (shapes); the maps "
                             "have num_classes + 1 classes with 0 the background")
    samples: int = Field(600, ge=10)
    max_objects: int = Field(2, ge=1, le=6)
    noise: float = Field(0.04, ge=0.0, le=1.0, description="standard deviation of the additive Gaussian noise")


def generate_shape_masks(cfg: ShapeMasksConfig, seed: int) -> Loaded:
    """The images and their class maps.

    Returns:
        ``Loaded``: x ``(N, S, S, 3)`` float32 in [0, 1], y ``(N, S, S)`` int64 class maps, class names
        (``background`` and the shapes).
    """
    s, n = cfg.image_size, cfg.samples
    rng = np.random.default_rng(seed)
    names = list(SHAPE_NAMES[: cfg.num_classes])
    coords = np.arange(s, dtype=np.float32)
    x = np.empty((n, s, s, 3), dtype=np.float32)
    y = np.zeros((n, s, s), dtype=np.int64)
    for i in range(n):
        bg = rng.uniform(0.0, 0.5, 3).astype(np.float32)
        gy, gx = rng.uniform(-0.15, 0.15, 2)
        img = bg + (gy * (coords[:, None] / s - 0.5) + gx * (coords[None, :] / s - 0.5))[..., None]
        for _ in range(int(rng.integers(1, cfg.max_objects + 1))):
            k = int(rng.integers(len(names)))
            r = rng.uniform(0.15, 0.35) * s
            cy, cx = rng.uniform(r * 0.6, s - r * 0.6, 2)
            mask = SHAPES[names[k]](coords[:, None] - cy, coords[None, :] - cx, np.float32(r))
            img[mask] = rng.uniform(0.6, 1.0, 3).astype(np.float32)
            y[i][mask] = k + 1
        if cfg.noise:
            img += rng.normal(0.0, cfg.noise, img.shape).astype(np.float32)
        x[i] = np.clip(img, 0.0, 1.0)
    return Loaded("shape_masks", x, y, None, None, ["background", *names])


@builtin("shape_masks", ShapeMasksConfig)
def load_shape_masks(cfg: ShapeMasksConfig, seed: int, base_dir: Path | None) -> Dataset:
    """Generate the segmentation data set (nothing is read from disk) and split it."""
    return split_dataset(generate_shape_masks(cfg, seed), cfg, seed)


__all__ = ["ShapeMasksConfig", "generate_shape_masks"]
