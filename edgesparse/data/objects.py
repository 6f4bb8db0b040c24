"""Data given as Python objects: what a data factory returns, or ``train(..., data=...)`` in a notebook.

The form (one mapping)::

    {"train": split, "validation": split, "test": split}

where each split is a ``tf.data.Dataset`` of **unbatched** ``(x, y)`` elements (x and y may be dicts keyed by
the model's input and output names), or an ``(x, y)`` tuple of numpy arrays (or dicts of arrays). A detector's
data adds ``"anchors": (A, 4)`` (``[ymin, xmin, ymax, xmax]``, what its per-anchor box targets are encoded
against). Datasets become streams read batch by batch (never materialised); arrays stay in memory.
``validation`` is required: the guards compare every compressed model with the dense one on it, and the test
split is only used for the reported figures. Float and boolean inputs are cast to float32 (integer inputs, e.g.
token ids, are kept); the samples are not rescaled.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import numpy as np

from edgesparse import _tf
from edgesparse.data.dataset import Dataset
from edgesparse.data.split import class_key
from edgesparse.data.stream import Split, n_samples
from edgesparse.errors import DataError

SPLITS = ("train", "validation", "test")
#: samples read from the front of a training stream to find the classes (built-in models need their number)
_CLASS_PROBE = 4096


def _describe(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _as_arrays(value: Any, split: str, where: str) -> tuple[Any, Any]:
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise DataError(f"{where}: the '{split}' split is a {_describe(value)}; give a tf.data.Dataset of unbatched "
                        "(x, y) elements or an (x, y) tuple of numpy arrays.")
    x, y = value

    def arr(v: Any, what: str) -> Any:
        if isinstance(v, Mapping):
            return {str(k): arr(a, f"{what}['{k}']") for k, a in v.items()}
        a = np.asarray(v)
        if a.dtype.kind not in "biuf":
            raise DataError(f"{where}: the '{split}' split's {what} has dtype {a.dtype}; give numbers.")
        return a.astype(np.float32) if what.startswith("x") and a.dtype.kind in "bf" and a.dtype != np.float32 else a

    xa, ya = arr(x, "x"), arr(y, "y")
    lengths = {len(v) for v in (xa.values() if isinstance(xa, dict) else [xa])}
    lengths |= {len(v) for v in (ya.values() if isinstance(ya, dict) else [ya])}
    if len(lengths) > 1:
        raise DataError(f"{where}: the '{split}' split's arrays disagree in length ({sorted(lengths)}); every x and "
                        "y array needs one row per sample.")
    return xa, ya


def _float32(x: Any) -> Any:
    tf = _tf.tf()
    if isinstance(x, Mapping):
        return {k: _float32(v) for k, v in x.items()}
    return tf.cast(x, tf.float32) if x.dtype != tf.float32 and (x.dtype.is_floating or x.dtype.is_bool) else x


def _as_stream(ds: Any, split: str, where: str) -> Split:
    spec = ds.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise DataError(f"{where}: the '{split}' dataset's elements are {spec}; each element must be a pair (x, y) "
                        "(x and y may be dicts keyed by input and output name), e.g. "
                        "tf.data.Dataset.from_tensor_slices((x, y)) or ds.map(lambda s: (s['image'], s['label'])).")
    if "Batch" in type(ds).__name__ or "Padded" in type(ds).__name__:
        raise DataError(f"{where}: the '{split}' dataset is batched ({type(ds).__name__}); give unbatched elements "
                        "(remove .batch()): edgesparse batches them by data.batch_size.")
    card = int(ds.cardinality())
    if card == 0:
        raise DataError(f"{where}: the '{split}' dataset is empty (0 elements).")
    if card == -1:  # INFINITE
        raise DataError(f"{where}: the '{split}' dataset repeats forever (.repeat() without a count); give one pass "
                        "over the split: epochs are set by the recipe.")
    typed = ds.map(lambda x, y: (_float32(x), y), num_parallel_calls=_tf.tf().data.AUTOTUNE)
    if card >= 0:
        typed = typed.apply(_tf.tf().data.experimental.assert_cardinality(card))
    return Split(stream=typed, count=card if card >= 0 else None, name="validation" if split == "validation" else split)


def _split(value: Any, split: str, where: str) -> Split:
    tf = _tf.tf()
    if isinstance(value, tf.data.Dataset):
        return _as_stream(value, split, where)
    x, y = _as_arrays(value, split, where)
    if not n_samples(x):
        raise DataError(f"{where}: the '{split}' split is empty (0 samples).")
    return Split(x, y, name=split)


def _classes(train: Split) -> tuple[int, list[str]]:
    y = train.targets_in_memory(_CLASS_PROBE)
    key = class_key(y)
    if key is None and not isinstance(y, Mapping):
        arr = np.asarray(y)
        if arr.ndim >= 1 and arr.dtype.kind in "iub" and arr.size and arr.reshape(len(arr), -1).shape[1] == 1:
            key = arr.reshape(-1).astype(np.int64)
    if key is None or not len(key):
        return 0, []
    n = int(key.max()) + 1
    return n, [str(i) for i in range(n)]


def dataset_from_objects(obj: Any, name: str, where: str, source: dict[str, Any]) -> Dataset:
    """Check and wrap the ``{"train", "validation", "test"}`` mapping (see the module docstring).

    Args:
        obj: What the factory returned, or ``train(data=...)``.
        name: The data set's name (summary.json).
        where: Names the origin in messages (``data factory 'pkg.mod:fn'`` or ``train(data=...)``).
        source: Recorded in summary.json (``data.source``): where it came from, never the contents.

    Raises:
        DataError: not such a mapping, a split missing, empty, batched, infinite or not (x, y) pairs.
    """
    if not isinstance(obj, Mapping):
        raise DataError(f"{where} returned a {_describe(obj)}; it must return a mapping "
                        "{'train': ..., 'validation': ..., 'test': ...} whose values are tf.data.Dataset splits of "
                        "unbatched (x, y) elements or (x, y) tuples of numpy arrays.")
    unknown = [k for k in obj if k not in (*SPLITS, "anchors")]
    if unknown:
        hints = [f"'{k}' (did you mean '{m[0]}'?)" if (m := difflib.get_close_matches(str(k), SPLITS, 1)) else f"'{k}'"
                 for k in unknown]
        raise DataError(f"{where}: unknown split(s) {', '.join(hints)}; the keys are train, validation and test.")
    missing = [k for k in SPLITS if k not in obj or obj[k] is None]
    if missing:
        why = {"validation": "the guards compare every compressed model with the dense one on it (hold out ~10% "
                             "of your training data)",
               "test": "the reported figures come only from it",
               "train": "the model is trained on it"}
        raise DataError(f"{where}: no '{missing[0]}' split: {why[missing[0]]}. Give all of train, validation and "
                        "test.")
    splits = {k: _split(obj[k], k, where) for k in SPLITS}
    num_classes, class_names = _classes(splits["train"])
    anchors = None if obj.get("anchors") is None else np.asarray(obj["anchors"], dtype=np.float32)
    return Dataset(name=name, train=splits["train"], val=splits["validation"], test=splits["test"],
                   num_classes=num_classes, class_names=class_names, source=source, anchors=anchors)


__all__ = ["SPLITS", "dataset_from_objects"]
