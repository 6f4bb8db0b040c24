"""The data set every later stage reads: three splits, each in memory or streamed (:mod:`.stream`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from edgesparse.data.stream import Arrays, Split, concat, n_samples, shapes, take


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Train/validation/test splits, each a :class:`~edgesparse.data.stream.Split` (arrays or a stream).

    Inputs are float32 ``(N, H, W, C)`` / ``(N, F)`` / ``(N, T, C)``, or a dict keyed by the model's input
    names (several inputs). Targets are int64 class indices (classification), 0/1 labels (binary, multilabel,
    and anomaly, where only the test split has anomalies), float32 values (regression), or a dict keyed by
    output name (several outputs). ``task`` is bound once the model is known
    (:func:`edgesparse.check.bind_task`). The test split is held out: it is the only split used for reported
    figures. ``source`` describes where the data came from (summary.json), e.g. ``{"python": ...}``.
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    class_names: list[str]
    task: Any = None  # edgesparse.task.Task once bound
    source: dict[str, Any] = field(default_factory=dict)
    #: detection: the anchors ``(A, 4)`` ``[ymin, xmin, ymax, xmax]`` the box targets are encoded against
    anchors: Any = None

    @classmethod
    def from_arrays(cls, name: str, x_train: Arrays, y_train: Arrays, x_val: Arrays, y_val: Arrays,
                    x_test: Arrays, y_test: Arrays, num_classes: int, class_names: list[str], **kw: Any) -> Dataset:
        """A data set held in memory."""
        return cls(name, Split(x_train, y_train, name="train"), Split(x_val, y_val, name="validation"),
                   Split(x_test, y_test, name="test"), num_classes, class_names, **kw)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={self.train.n}, validation={self.val.n}, test={self.test.n}, "
                f"input_shape={self.train.input_shapes()}, num_classes={self.num_classes}"
                f"{', streamed' if self.streamed else ''})")

    # in-memory access (raises DataError for a streamed split)
    x_train = property(lambda self: self.train.x)
    y_train = property(lambda self: self.train.y)
    x_val = property(lambda self: self.val.x)
    y_val = property(lambda self: self.val.y)
    x_test = property(lambda self: self.test.x)
    y_test = property(lambda self: self.test.y)

    @property
    def streamed(self) -> bool:
        """Whether any split is read from a stream."""
        return any(s.is_stream for s in (self.train, self.val, self.test))

    @property
    def multi_input(self) -> bool:
        return isinstance(self.train.input_shapes(), dict)

    @property
    def input_shape(self) -> tuple[Any, ...]:
        """Shape of one sample; for several inputs, the first input's."""
        s = self.train.input_shapes()
        s = next(iter(s.values())) if isinstance(s, dict) else s
        return tuple(s)

    def sizes(self) -> tuple[int, int, int]:
        """Samples in train, validation and test."""
        return self.train.n, self.val.n, self.test.n

    def with_task(self, task: Any, **splits: Any) -> Dataset:
        """A copy bound to ``task`` (and with converted splits, e.g. one-hot rows turned into indices)."""
        return replace(self, task=task, **splits)

    def fit_targets(self, x: Arrays, y: Arrays) -> Arrays:
        """What the model trains towards: ``y``, or ``x`` for an autoencoder (anomaly)."""
        return self.task.fit_targets(x, y) if self.task is not None else y

    def validation(self) -> Split:
        """The validation split, or the test split when the data has none (what the guards compare on)."""
        return self.val if self.val.n else self.test

    def steps_per_epoch(self, batch_size: int) -> int:
        """Training steps in one epoch at ``batch_size`` (the last batch may be partial); at least 1."""
        return max(1, -(-self.train.n // batch_size))

    def representative(self, n: int, seed: int = 0) -> Arrays:
        """Inputs of the training split only, e.g. calibration data for int8 quantization.

        Args:
            n: How many samples; all training samples if the split is smaller.
            seed: Fixes which samples are drawn (without replacement; a stream draws from its front).

        Returns:
            ``min(n, len(train))`` training inputs (a dict of arrays for several inputs).

        Raises:
            DataError: ``n`` is not positive.
        """
        return self.train.sample(n, seed)

    def describe(self) -> dict[str, Any]:
        """JSON-able summary: split sizes, input shape(s), target shape(s), classes, where the data came from."""
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
            d["input_shapes"] = self.train.input_shapes()
        d["target_shapes"] = self.train.target_shapes()
        if self.streamed or self.source:
            d["source"] = {**self.source, "splits": {"train": self.train.describe(),
                                                     "validation": self.val.describe(),
                                                     "test": self.test.describe()}}
        return d


__all__ = ["Arrays", "Dataset", "Split", "concat", "n_samples", "shapes", "take"]
