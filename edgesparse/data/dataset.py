"""The in-memory data set every later stage reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgesparse.errors import DataError


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Train/validation/test splits in memory.

    ``x_*`` are float32, shaped ``(N, H, W, C)`` for images or ``(N, F)``; ``y_*`` are int64 class
    indices in ``[0, num_classes)``. The test split is held out: it is the only split used for
    reported accuracy. ``eq=False`` because comparing arrays with ``==`` has no single truth value.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    class_names: list[str]

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={len(self.x_train)}, validation={len(self.x_val)}, "
                f"test={len(self.x_test)}, input_shape={self.input_shape}, num_classes={self.num_classes})")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample (``x_train.shape[1:]``)."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    def validation(self) -> tuple[np.ndarray, np.ndarray]:
        """The validation split, or the test split when the data has none (what accuracy guards compare on)."""
        return (self.x_val, self.y_val) if len(self.x_val) else (self.x_test, self.y_test)

    def steps_per_epoch(self, batch_size: int) -> int:
        """Training steps in one epoch at ``batch_size`` (the last batch may be partial); at least 1."""
        return max(1, -(-len(self.x_train) // batch_size))

    def representative(self, n: int, seed: int = 0) -> np.ndarray:
        """Samples of the training split only, e.g. calibration data for int8 quantization.

        Args:
            n: How many samples; all training samples if the split is smaller.
            seed: Fixes which samples are drawn (without replacement).

        Returns:
            ``min(n, len(x_train))`` training samples.

        Raises:
            DataError: ``n`` is not positive.
        """
        if n < 1:
            raise DataError(f"the number of representative samples must be at least 1, got {n}; "
                            "set it to a few hundred (e.g. 200) for int8 calibration.")
        idx = np.random.default_rng(seed).permutation(len(self.x_train))[:n]
        return self.x_train[np.sort(idx)]

    def describe(self) -> dict[str, Any]:
        """JSON-able summary: split sizes, input shape, classes."""
        return {
            "name": self.name,
            "train": len(self.x_train),
            "validation": len(self.x_val),
            "test": len(self.x_test),
            "input_shape": list(self.input_shape),
            "num_classes": int(self.num_classes),
            "class_names": [str(c) for c in self.class_names],
        }
