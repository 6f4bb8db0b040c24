"""The in-memory data set every later stage reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edgesparse.errors import DataError

#: inputs or targets: one array, or one array per model input / output name
Arrays = Any  # np.ndarray | dict[str, np.ndarray]


def n_samples(a: Arrays) -> int:
    """Number of samples of an array or of a dict of arrays (all of the same length)."""
    if a is None:
        return 0
    if isinstance(a, Mapping):
        return len(next(iter(a.values()))) if a else 0
    if isinstance(a, (tuple, list)):
        return len(a[0]) if a else 0
    return len(a)


def take(a: Arrays, idx: Any) -> Arrays:
    """``a[idx]`` for an array or every array of a dict or tuple (``idx``: indices or a slice)."""
    if isinstance(a, Mapping):
        return {k: v[idx] for k, v in a.items()}
    if isinstance(a, (tuple, list)):
        return tuple(v[idx] for v in a)
    return a[idx]


def shapes(a: Arrays) -> Any:
    """One sample's shape, or ``{name: shape}``."""
    if isinstance(a, Mapping):
        return {k: [int(d) for d in v.shape[1:]] for k, v in a.items()}
    return [int(d) for d in a.shape[1:]]


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Train/validation/test splits in memory.

    ``x_*`` are float32 arrays shaped ``(N, H, W, C)`` or ``(N, F)``, or a dict of them keyed by the
    model's input names (several inputs). ``y_*`` are the targets: int64 class indices (classification),
    0/1 labels (binary, multilabel, and anomaly, where only the test split has anomalies), float32
    values (regression), or a dict keyed by output name (several outputs). ``task`` is bound once the
    model is known (:func:`edgesparse.check.bind_task`). The test split is held out: it is the only
    split used for reported figures. ``eq=False`` because comparing arrays with ``==`` has no single
    truth value.
    """

    name: str
    x_train: Arrays
    y_train: Arrays
    x_val: Arrays
    y_val: Arrays
    x_test: Arrays
    y_test: Arrays
    num_classes: int
    class_names: list[str]
    task: Any = None  # edgesparse.task.Task once bound

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={n_samples(self.x_train)}, validation={n_samples(self.x_val)}, "
                f"test={n_samples(self.x_test)}, input_shape={shapes(self.x_train)}, num_classes={self.num_classes})")

    @property
    def multi_input(self) -> bool:
        return isinstance(self.x_train, Mapping)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample (``x_train.shape[1:]``); for several inputs, the first input's."""
        x = next(iter(self.x_train.values())) if self.multi_input else self.x_train
        return tuple(int(d) for d in x.shape[1:])

    def sizes(self) -> tuple[int, int, int]:
        """Samples in train, validation and test."""
        return n_samples(self.x_train), n_samples(self.x_val), n_samples(self.x_test)

    def with_task(self, task: Any, **targets: Arrays) -> Dataset:
        """A copy bound to ``task`` (and with its targets converted, e.g. one-hot rows to indices)."""
        return replace(self, task=task, **targets)

    def fit_targets(self, x: Arrays, y: Arrays) -> Arrays:
        """What the model trains towards: ``y``, or ``x`` for an autoencoder (anomaly)."""
        return self.task.fit_targets(x, y) if self.task is not None else y

    def validation(self) -> tuple[Arrays, Arrays]:
        """The validation split, or the test split when the data has none (what the guards compare on)."""
        return (self.x_val, self.y_val) if n_samples(self.x_val) else (self.x_test, self.y_test)

    def steps_per_epoch(self, batch_size: int) -> int:
        """Training steps in one epoch at ``batch_size`` (the last batch may be partial); at least 1."""
        return max(1, -(-n_samples(self.x_train) // batch_size))

    def representative(self, n: int, seed: int = 0) -> Arrays:
        """Samples of the training split only, e.g. calibration data for int8 quantization.

        Args:
            n: How many samples; all training samples if the split is smaller.
            seed: Fixes which samples are drawn (without replacement).

        Returns:
            ``min(n, len(x_train))`` training samples (a dict of arrays for several inputs).

        Raises:
            DataError: ``n`` is not positive.
        """
        if n < 1:
            raise DataError(f"the number of representative samples must be at least 1, got {n}; "
                            "set it to a few hundred (e.g. 200) for int8 calibration.")
        idx = np.random.default_rng(seed).permutation(n_samples(self.x_train))[:n]
        return take(self.x_train, np.sort(idx))

    def describe(self) -> dict[str, Any]:
        """JSON-able summary: split sizes, input shape(s), target shape(s), classes."""
        train, val, test = self.sizes()
        d: dict[str, Any] = {
            "name": self.name,
            "train": train,
            "validation": val,
            "test": test,
            "input_shape": list(self.input_shape),
            "num_classes": int(self.num_classes),
            "class_names": [str(c) for c in self.class_names],
        }
        if self.multi_input:
            d["input_shapes"] = shapes(self.x_train)
        d["target_shapes"] = shapes(self.y_train)
        return d
