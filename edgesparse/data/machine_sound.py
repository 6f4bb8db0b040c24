"""``{builtin: machine_sound}``: generated log-mel frames of a running machine, for anomaly detection.

Shaped like MLPerf Tiny's anomaly-detection input (ToyADMOS / DCASE 2020 task 2): each sample is
``frames`` consecutive log-mel frames of ``mels`` bands, flattened (5 x 128 = 640 features). A normal
machine is a harmonic spectrum (a fundamental and its overtones at machine-specific, slowly
drifting frequencies) over a pink-ish noise floor. Anomalies, only in the test split, are the faults
the DCASE machines show: a bearing whine (an extra narrow band), a rattle (broadband bursts in some
frames), a shifted fundamental (a worn belt runs slower) or a missing overtone. Features are
standardised with the normal training samples' mean and standard deviation.

The task is ``anomaly``: ``x`` holds normal samples only; ``x_test`` / ``y_test`` hold normal (0) and
anomalous (1) samples. Nothing is downloaded: everything is generated from the seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from edgesparse.data.registry import BuiltinSource, Loaded, builtin

FAULTS = ("whine", "rattle", "slow", "missing_overtone")


class MachineSoundConfig(BuiltinSource):
    """``{builtin: machine_sound, normal: 2000, test_normal: 300, test_anomalous: 300, mels: 128, frames: 5}``."""

    builtin: Literal["machine_sound"]
    normal: int = Field(2000, ge=10, description="normal samples for training and validation")
    test_normal: int = Field(300, ge=2)
    test_anomalous: int = Field(300, ge=2)
    mels: int = Field(128, ge=16, le=256)
    frames: int = Field(5, ge=1, le=32)
    severity: float = Field(1.0, gt=0.0, le=5.0, description="scale of the faults (smaller: harder to detect)")


def _spectra(rng: np.random.Generator, n: int, cfg: MachineSoundConfig, fault: np.ndarray | None) -> np.ndarray:
    """``n`` samples ``(frames, mels)`` of log-mel energy; ``fault`` gives each sample's fault index (-1 none)."""
    m, f = cfg.mels, cfg.frames
    bands = np.arange(m, dtype=np.float32)[None, None, :]
    floor = (-0.02 * bands + rng.normal(0.0, 0.35, (n, f, m))).astype(np.float32)
    base = rng.uniform(10.0, 14.0, (n, 1, 1)).astype(np.float32)  # the fundamental's band
    drift = rng.normal(0.0, 0.15, (n, f, 1)).astype(np.float32)
    out = floor
    gains = np.array([3.0, 2.2, 1.6, 1.1, 0.8], dtype=np.float32)
    s = np.float32(cfg.severity)
    if fault is not None:
        base = np.where((fault == 2)[:, None, None], base * (1.0 - 0.12 * s), base)
    for k, g in enumerate(gains, start=1):
        centre = base * k + drift
        gain = np.full((n, 1, 1), g, dtype=np.float32)
        if fault is not None:
            gain = np.where((fault == 3)[:, None, None] & (k == 2), g * max(0.0, 1.0 - 0.8 * s), gain)
        out = out + gain * np.exp(-0.5 * ((bands - centre) / 1.2) ** 2)
    if fault is not None:
        whine_at = rng.uniform(0.55 * m, 0.85 * m, (n, 1, 1)).astype(np.float32)
        whine = 1.5 * s * np.exp(-0.5 * ((bands - whine_at) / 0.8) ** 2)
        out = out + np.where((fault == 0)[:, None, None], whine, 0.0)
        bursts = (rng.random((n, f, 1)) < 0.6).astype(np.float32) * rng.uniform(0.6, 1.2, (n, f, 1)) * s
        out = out + np.where((fault == 1)[:, None, None], bursts * np.ones_like(out), 0.0)
    return out.astype(np.float32)


@builtin("machine_sound", MachineSoundConfig)
def load_machine_sound(cfg: MachineSoundConfig, seed: int, base_dir: Path | None) -> Loaded:
    """Generate normal training frames and a labelled test split (0 normal, 1 anomalous)."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 77])
    normal = _spectra(rng, cfg.normal, cfg, None)
    test_norm = _spectra(rng, cfg.test_normal, cfg, None)
    faults = rng.integers(0, len(FAULTS), cfg.test_anomalous)
    test_anom = _spectra(rng, cfg.test_anomalous, cfg, faults)
    mean, std = normal.mean(axis=0, keepdims=True), normal.std(axis=0, keepdims=True) + 1e-6
    flat = (lambda a: ((a - mean) / std).reshape(len(a), -1).astype(np.float32))  # noqa: E731
    x_test = np.concatenate([flat(test_norm), flat(test_anom)])
    y_test = np.concatenate([np.zeros(cfg.test_normal, np.int64), np.ones(cfg.test_anomalous, np.int64)])
    return Loaded("machine_sound", flat(normal), None, x_test, y_test, ["normal", "anomalous"])
