"""``{builtin: wake_word}``: generated MFCC-like maps with and without a keyword, for a binary detector.

Each sample is ``frames x coefficients`` (49 x 10 by default: 1 s of audio as MFCC frames, the input of
keyword-spotting models such as DS-CNN) of background noise with speech-like energy blobs; the
positives (label 1, about ``positive_share`` of the samples) also hold the keyword: a fixed
time-frequency pattern (a rising then falling formant track) at a random time and loudness. Labels are
0/1 for a model with one sigmoid output (``task: binary``). Generated from the seed, no download.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from edgesparse.data.registry import BuiltinSource, Loaded, builtin


class WakeWordConfig(BuiltinSource):
    """``{builtin: wake_word, samples: 2000, positive_share: 0.4, frames: 49, coefficients: 10, noise: 0.3}``."""

    builtin: Literal["wake_word"]
    samples: int = Field(2000, ge=20)
    positive_share: float = Field(0.4, gt=0.0, lt=1.0)
    frames: int = Field(49, ge=16)
    coefficients: int = Field(10, ge=6)
    noise: float = Field(0.3, ge=0.0, le=2.0)


def _keyword(frames: int, coefficients: int) -> np.ndarray:
    """The keyword's pattern: a formant track rising over 8 frames, then falling over 8, with a harmonic."""
    track = np.concatenate([np.linspace(1, coefficients - 3, 8), np.linspace(coefficients - 3, 2, 8)])
    pat = np.zeros((16, coefficients), dtype=np.float32)
    c = np.arange(coefficients)[None, :]
    pat += np.exp(-0.5 * ((c - track[:, None]) / 0.7) ** 2)
    pat += 0.5 * np.exp(-0.5 * ((c - np.minimum(track[:, None] + 2, coefficients - 1)) / 0.7) ** 2)
    return pat * np.hanning(18)[1:17, None].astype(np.float32)


@builtin("wake_word", WakeWordConfig)
def load_wake_word(cfg: WakeWordConfig, seed: int, base_dir: Path | None) -> Loaded:
    """Generate ``samples`` maps ``(frames, coefficients, 1)`` and their 0/1 labels, grouped by label."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 91])
    n, f, c = cfg.samples, cfg.frames, cfg.coefficients
    n_pos = max(1, int(round(n * cfg.positive_share)))
    x = rng.normal(0.0, cfg.noise, (n, f, c)).astype(np.float32)
    # speech-like distractors in every sample: blobs at random times and bands
    for _ in range(3):
        at_t = rng.integers(0, f - 6, n)
        at_c = rng.integers(0, c, n)
        amp = rng.uniform(0.3, 1.0, n).astype(np.float32)
        tt = np.arange(f)[None, :, None]
        cc = np.arange(c)[None, None, :]
        x += amp[:, None, None] * np.exp(-0.5 * (((tt - at_t[:, None, None] - 3) / 2.0) ** 2
                                                 + ((cc - at_c[:, None, None]) / 1.0) ** 2))
    pat = _keyword(f, c)
    starts = rng.integers(0, f - len(pat), n_pos)
    loud = rng.uniform(0.8, 1.4, n_pos).astype(np.float32)
    for i, (s, a) in enumerate(zip(starts, loud)):
        x[i, s:s + len(pat)] += a * pat
    y = np.concatenate([np.ones(n_pos, np.int64), np.zeros(n - n_pos, np.int64)])
    return Loaded("wake_word", x[..., None], y, None, None, ["other", "keyword"])
