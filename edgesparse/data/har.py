"""``{builtin: har}``: generated accelerometer/gyroscope windows of six activities, for sequence classifiers.

Each sample is a window of ``timesteps`` x 9 channels, laid out like the UCI HAR data set's raw signals
(body acceleration xyz, gyroscope xyz, total acceleration xyz; 50 Hz, 128 steps = 2.56 s there): walking,
walking upstairs, walking downstairs (periodic gaits that differ in cadence, vertical asymmetry and
amplitude), sitting, standing and lying (still, told apart by the gravity's direction and small
posture sway). Every window has its own phase, cadence, amplitude, sensor tilt and noise, so the classes
overlap a little. Generated from the seed (no download); the default is small enough for tests
(``timesteps: 64``), ``timesteps: 128`` gives the UCI HAR shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from edgesparse.data.registry import BuiltinSource, Loaded, builtin

#: class names, in label order (those of UCI HAR)
ACTIVITIES = ["walking", "walking_upstairs", "walking_downstairs", "sitting", "standing", "lying"]

# per activity: (cadence Hz, body amplitude g, vertical asymmetry, gravity direction xyz)
_GAITS = {
    0: (1.9, 0.30, 0.0, (0.0, 0.0, 1.0)),
    1: (1.5, 0.22, 0.5, (0.0, 0.15, 0.99)),
    2: (2.3, 0.42, -0.5, (0.0, -0.15, 0.99)),
    3: (0.0, 0.02, 0.0, (0.55, 0.0, 0.84)),
    4: (0.0, 0.02, 0.0, (0.1, 0.0, 0.99)),
    5: (0.0, 0.015, 0.0, (0.98, 0.0, 0.2)),
}


class HARConfig(BuiltinSource):
    """``{builtin: har, samples: 1800, timesteps: 64, rate: 50, noise: 0.05}``."""

    builtin: Literal["har"]
    samples: int = Field(1800, ge=60)
    timesteps: int = Field(64, ge=16, le=1024)
    rate: float = Field(50.0, gt=0.0, description="samples per second")
    noise: float = Field(0.05, ge=0.0, le=1.0, description="sensor noise (g, rad/s)")


def _rotation(rng: np.random.Generator, n: int, degrees: float) -> np.ndarray:
    """``n`` random small rotations (sensor tilt) as 3x3 matrices."""
    a = np.deg2rad(rng.normal(0.0, degrees, (n, 3)))
    cx, cy, cz, sx, sy, sz = np.cos(a[:, 0]), np.cos(a[:, 1]), np.cos(a[:, 2]), \
        np.sin(a[:, 0]), np.sin(a[:, 1]), np.sin(a[:, 2])
    one, zero = np.ones(n), np.zeros(n)
    rx = np.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], 1).reshape(n, 3, 3)
    ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], 1).reshape(n, 3, 3)
    rz = np.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], 1).reshape(n, 3, 3)
    return rz @ ry @ rx


@builtin("har", HARConfig)
def load_har(cfg: HARConfig, seed: int, base_dir: Path | None) -> Loaded:
    """Generate ``samples`` windows ``(timesteps, 9)`` float32 and their labels 0..5 (about as many of each)."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 29])
    n, steps = cfg.samples, cfg.timesteps
    y = np.arange(n) % len(ACTIVITIES)
    rng.shuffle(y)
    t = np.arange(steps, dtype=np.float64)[None, :] / cfg.rate
    cadence = np.array([_GAITS[int(c)][0] for c in y]) * rng.uniform(0.85, 1.15, n)
    amp = np.array([_GAITS[int(c)][1] for c in y]) * rng.uniform(0.7, 1.3, n)
    asym = np.array([_GAITS[int(c)][2] for c in y])
    phase = rng.uniform(0, 2 * np.pi, n)
    w = 2 * np.pi * cadence[:, None] * t + phase[:, None]
    moving = cadence > 0
    # body acceleration: a step cycle (fundamental + harmonic) mostly vertical, sway sideways, surge forward
    vert = np.where(moving[:, None], np.sin(w) + 0.4 * np.sin(2 * w) + asym[:, None] * np.abs(np.sin(w)), 0.0)
    side = np.where(moving[:, None], 0.5 * np.sin(0.5 * w + 0.3), 0.0)
    surge = np.where(moving[:, None], 0.6 * np.cos(w), 0.0)
    sway = rng.normal(0, 1, (n, 3, 1)) * np.sin(2 * np.pi * rng.uniform(0.1, 0.4, (n, 3, 1)) * t[:, None, :])
    body = amp[:, None, None] * (np.stack([surge, side, vert], 1) + np.where(moving[:, None, None], 0.0, sway))
    # gyroscope: the body's turning during the gait (derivative-like), small drift when still
    gyro = np.stack([np.gradient(v, axis=1) * cfg.rate / (2 * np.pi * np.maximum(cadence, 0.5))[:, None]
                     for v in (side, surge, 0.3 * vert)], 1) * amp[:, None, None]
    gyro = gyro + np.where(moving[:, None, None], 0.0, 0.5 * sway * amp[:, None, None])
    gravity = np.array([_GAITS[int(c)][3] for c in y])[:, :, None] * np.ones((1, 1, steps))
    rot = _rotation(rng, n, 8.0)
    body, gyro, gravity = (np.einsum("nij,njt->nit", rot, v) for v in (body, gyro, gravity))
    total = body + gravity
    x = np.concatenate([body, gyro, total], 1) + rng.normal(0, cfg.noise, (n, 9, steps))
    x = np.transpose(x, (0, 2, 1)).astype(np.float32)
    return Loaded("har", x, y.astype(np.int64), None, None, list(ACTIVITIES))
