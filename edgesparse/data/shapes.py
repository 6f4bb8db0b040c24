"""``{builtin: shapes}``: procedurally generated images of shapes, a stand-in for camera inputs.

Every sample draws its shape's size, position, small rotation, colour and polarity (light on dark
or dark on light), a background colour with a gentle gradient, and additive Gaussian noise, so
neither colour nor position gives the class away. Generation is vectorised (one batch of masks per
class) and fixed by the seed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from edgesparse.data.registry import BuiltinSource, ImageSize, Loaded, builtin, hw

#: (v, u, r) -> mask; v/u are per-pixel offsets from the centre (down/right, rotated), r the radius
Mask = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
SHAPES: dict[str, Mask] = {}

MIN_SIDE = 8


def _shape(name: str) -> Callable[[Mask], Mask]:
    def deco(fn: Mask) -> Mask:
        SHAPES[name] = fn
        return fn

    return deco


def _bar_half_width(r: np.ndarray) -> np.ndarray:
    return np.maximum(r * 0.3, 1.0)


@_shape("circle")
def _circle(v: np.ndarray, u: np.ndarray, r: np.ndarray) -> np.ndarray:
    return v * v + u * u <= r * r


@_shape("square")
def _square(v: np.ndarray, u: np.ndarray, r: np.ndarray) -> np.ndarray:
    return (np.abs(v) <= r * 0.8) & (np.abs(u) <= r * 0.8)


@_shape("triangle")
def _triangle(v: np.ndarray, u: np.ndarray, r: np.ndarray) -> np.ndarray:
    t = (v + r) / (2 * r)  # 0 at the apex (top), 1 at the base
    return (t >= 0) & (t <= 1) & (np.abs(u) <= t * r)


@_shape("cross")
def _cross(v: np.ndarray, u: np.ndarray, r: np.ndarray) -> np.ndarray:
    w = _bar_half_width(r)
    av, au = np.abs(v), np.abs(u)
    return ((av <= w) & (au <= r)) | ((au <= w) & (av <= r))


@_shape("ring")
def _ring(v: np.ndarray, u: np.ndarray, r: np.ndarray) -> np.ndarray:
    d2 = v * v + u * u
    return (d2 <= r * r) & (d2 >= (r * 0.55) ** 2)


@_shape("diamond")
def _diamond(v: np.ndarray, u: np.ndarray, r: np.ndarray) -> np.ndarray:
    return np.abs(v) + np.abs(u) <= r


@_shape("horizontal_bar")
def _horizontal_bar(v: np.ndarray, u: np.ndarray, r: np.ndarray) -> np.ndarray:
    return (np.abs(v) <= _bar_half_width(r)) & (np.abs(u) <= r)


@_shape("vertical_bar")
def _vertical_bar(v: np.ndarray, u: np.ndarray, r: np.ndarray) -> np.ndarray:
    return (np.abs(u) <= _bar_half_width(r)) & (np.abs(v) <= r)


SHAPE_NAMES: tuple[str, ...] = tuple(SHAPES)


class ShapesConfig(BuiltinSource):
    """``{builtin: shapes, image_size: 96, num_classes: 4, samples_per_class: 300, channels: 3, noise: 0.05}``.

    Classes, in order: circle, square, triangle, cross, ring, diamond, horizontal_bar,
    vertical_bar (the first ``num_classes`` of them).
    """

    builtin: Literal["shapes"]
    image_size: ImageSize = Field(32, description=f"side in pixels, or [height, width]; at least {MIN_SIDE}")
    num_classes: int = Field(4, ge=2, le=len(SHAPE_NAMES))
    samples_per_class: int = Field(300, ge=2)
    channels: Literal[1, 3] = 3
    noise: float = Field(0.05, ge=0.0, le=1.0, description="standard deviation of the additive Gaussian noise")

    @field_validator("image_size")
    @classmethod
    def _large_enough(cls, v: ImageSize) -> ImageSize:
        if min(hw(v)) < MIN_SIDE:
            raise ValueError(f"image_size must be at least {MIN_SIDE} pixels on each side, got {v}")
        return v


# Rotations stay well below 45 degrees, where a square would become a diamond.
_MAX_ROTATION = np.pi / 12


def generate_shapes(cfg: ShapesConfig, seed: int) -> Loaded:
    """Generate ``num_classes * samples_per_class`` images, float32 in [0, 1], grouped by class.

    Args:
        cfg: Size, classes, channels and noise.
        seed: Fixes every random draw.

    Returns:
        The images ``(N, H, W, channels)``, labels and class names.
    """
    h, w = hw(cfg.image_size)
    n, c = cfg.samples_per_class, cfg.channels
    names = SHAPE_NAMES[: cfg.num_classes]
    rng = np.random.default_rng(seed)
    # Offsets are built from (n, h, 1) and (n, 1, w) pieces: full (n, h, w) arrays only where needed.
    rows = np.arange(h, dtype=np.float32)[None, :, None]
    cols = np.arange(w, dtype=np.float32)[None, None, :]
    x = np.empty((n * len(names), h, w, c), dtype=np.float32)
    short = min(h, w)
    # One bank of noise images, drawn in a fresh order for every class: drawing noise is the
    # slowest step, and noise shared across classes carries no information about the class.
    noise = None
    if cfg.noise > 0:
        noise = rng.standard_normal((n, h, w, c), dtype=np.float32)
        noise *= np.float32(cfg.noise)
    for k, name in enumerate(names):
        r = (rng.uniform(0.2, 0.4, n) * short).astype(np.float32)[:, None, None]
        cy = rng.uniform(r, h - r).astype(np.float32)
        cx = rng.uniform(r, w - r).astype(np.float32)
        theta = rng.uniform(-_MAX_ROTATION, _MAX_ROTATION, (n, 1, 1))
        cos, sin = np.cos(theta).astype(np.float32), np.sin(theta).astype(np.float32)
        dy, dx = rows - cy, cols - cx
        v = cos * dy - sin * dx
        u = sin * dy + cos * dx
        mask = SHAPES[name](v, u, r)

        bg = rng.uniform(0.0, 0.45, (n, 1, 1, c)).astype(np.float32)
        fg = rng.uniform(0.55, 1.0, (n, 1, 1, c)).astype(np.float32)
        flip = rng.random(n) < 0.5  # dark shapes on light backgrounds: brightness is not the class
        bg[flip], fg[flip] = 1.0 - bg[flip], 1.0 - fg[flip]
        gy, gx = rng.uniform(-0.15, 0.15, (2, n, 1, 1)).astype(np.float32)
        gradient = gy * (rows / h - 0.5) + gx * (cols / w - 0.5)

        out = x[k * n:(k + 1) * n]
        np.add(bg, gradient[..., None], out=out)
        np.copyto(out, fg, where=mask[..., None])
        if noise is not None:
            out += noise[rng.permutation(n)]
        np.clip(out, 0.0, 1.0, out=out)
    y = np.repeat(np.arange(len(names), dtype=np.int64), n)
    return Loaded("shapes", x, y, None, None, list(names))


@builtin("shapes", ShapesConfig)
def load_shapes(cfg: ShapesConfig, seed: int, base_dir: Path | None) -> Loaded:
    """Generate the shapes data set (nothing is read from disk)."""
    return generate_shapes(cfg, seed)
