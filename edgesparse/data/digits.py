"""``{builtin: digits}``: scikit-learn's bundled 8x8 handwritten digits (no download)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from edgesparse.data.registry import BuiltinSource, Loaded, builtin


class DigitsConfig(BuiltinSource):
    """``{builtin: digits}``: 1,797 grey 8x8 images of the digits 0-9, scaled to [0, 1]."""

    builtin: Literal["digits"]


@builtin("digits", DigitsConfig)
def load_digits(cfg: DigitsConfig, seed: int, base_dir: Path | None) -> Loaded:
    """Load the digits as ``(1797, 8, 8, 1)`` float32 in [0, 1] (pixel values are 0..16)."""
    from sklearn.datasets import load_digits as sk_load_digits

    d = sk_load_digits()
    x = (d.images.astype(np.float32) / np.float32(16.0))[..., None]
    return Loaded("digits", x, d.target.astype(np.int64), None, None, [str(i) for i in range(10)])
