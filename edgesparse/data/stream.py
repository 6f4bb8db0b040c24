"""One split of a data set: arrays in memory, or a stream of samples read batch by batch.

Every stage reads splits through :class:`Split`, so a data set far larger than memory trains, evaluates,
calibrates and verifies with memory bounded by the batch size and the buffers:

- :meth:`Split.dataset` is the batched ``tf.data`` pipeline training reads (shuffled through a bounded buffer);
- :meth:`Split.batches` yields numpy batches in a fixed order (evaluation, verification);
- :meth:`Split.head` and :meth:`Split.sample` materialise a bounded number of samples (the analyses, the
  health diagnosis and int8 calibration, which need a few thousand samples, never the whole split).

A streamed split must yield the same samples in the same order on every pass (validation and test are read
several times and compared across models); put random augmentation in the model or in the training split only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from edgesparse import _tf
from edgesparse.errors import DataError

log = logging.getLogger(__name__)

#: default bound of a stream's shuffle buffer, in bytes of samples (the buffer holds at least one batch)
SHUFFLE_BYTES = 64 * 2**20
#: samples of a streamed split the analyses read (channel sensitivity and importance, the health diagnosis, the
#: unstructured sensitivity): enough for stable figures, bounded memory. In-memory splits are read whole.
ANALYSIS_SAMPLES = 2048
#: batches of this many samples are read when a stream's length has to be counted
_COUNT_BATCH = 1024


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
    if a is None:
        return None
    if isinstance(a, Mapping):
        return {k: v[idx] for k, v in a.items()}
    if isinstance(a, (tuple, list)):
        return tuple(v[idx] for v in a)
    return a[idx]


def shapes(a: Arrays) -> Any:
    """One sample's shape, or ``{name: shape}``."""
    if isinstance(a, Mapping):
        return {k: [int(d) for d in v.shape[1:]] for k, v in a.items()}
    return [int(d) for d in np.shape(a)[1:]]


def concat(parts: list[Arrays]) -> Arrays:
    """Batches (arrays, dicts or tuples of arrays) joined along the sample axis."""
    first = parts[0]
    if isinstance(first, Mapping):
        return {k: np.concatenate([p[k] for p in parts]) for k in first}
    if isinstance(first, (tuple, list)):
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(len(first)))
    return np.concatenate(parts)


def _to_numpy(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _to_numpy(x) for k, x in v.items()}
    if isinstance(v, (tuple, list)):
        return tuple(_to_numpy(x) for x in v)
    return v.numpy() if hasattr(v, "numpy") else np.asarray(v)


def _spec_shapes(spec: Any) -> Any:
    """One sample's shape (or ``{name: shape}``) from an element spec; unknown dimensions are None."""
    if isinstance(spec, Mapping):
        return {k: _spec_shapes(v) for k, v in spec.items()}
    return [None if d is None else int(d) for d in spec.shape]


def _spec_dtypes(spec: Any) -> Any:
    if isinstance(spec, Mapping):
        return {k: _spec_dtypes(v) for k, v in spec.items()}
    return spec.dtype.name


def _sample_bytes(spec: Any) -> int:
    if isinstance(spec, Mapping):
        return sum(_sample_bytes(v) for v in spec.values())
    size = int(np.prod([d or 1 for d in spec.shape]))
    return size * max(1, spec.dtype.size)


class Split:
    """Samples ``(x, y)`` of one split: arrays (``x``, ``y``) or an unbatched ``tf.data.Dataset`` (``stream``).

    ``x`` is one array or a dict by model input name; ``y`` the targets, one array or a dict by output name.

    Args:
        x: Inputs in memory (None for a stream).
        y: Targets in memory.
        stream: A ``tf.data.Dataset`` of unbatched ``(x, y)`` elements.
        count: The stream's number of samples when known (else counted on first use).
        name: ``train``, ``validation`` or ``test`` (for messages).
        shuffled_upstream: The stream already reshuffles every pass (e.g. serialized records, far smaller than
            decoded samples): training then shuffles its samples through a buffer of one batch only.
    """

    def __init__(self, x: Arrays = None, y: Arrays = None, *, stream: Any = None, count: int | None = None,
                 name: str = "split", shuffled_upstream: bool = False) -> None:
        if stream is None and x is None:
            x, y = np.zeros((0,), np.float32), np.zeros((0,), np.int64)
        self._x, self._y, self.stream, self.name = x, y, stream, name
        self._count = count if stream is not None else n_samples(x)
        self.shuffled_upstream = shuffled_upstream and stream is not None

    def __repr__(self) -> str:
        kind = "stream" if self.is_stream else "arrays"
        return f"Split({self.name!r}, {kind}, n={self._count if self._count is not None else '?'})"

    @property
    def is_stream(self) -> bool:
        """Whether the samples are read from a stream (not held in memory)."""
        return self.stream is not None

    @property
    def x(self) -> Arrays:
        """The inputs in memory (in-memory splits only)."""
        self._need_arrays("x")
        return self._x

    @property
    def y(self) -> Arrays:
        """The targets in memory (in-memory splits only)."""
        self._need_arrays("y")
        return self._y

    def _need_arrays(self, what: str) -> None:
        if self.is_stream:
            raise DataError(f"the {self.name} split is streamed, so its {what} is not held in memory; read it with "
                            "Split.batches(), Split.head(n) or Split.dataset() instead.")

    def __len__(self) -> int:
        return self.n

    @property
    def n(self) -> int:
        """Number of samples (a stream of unknown length is counted once, by reading it)."""
        if self._count is None:
            tf = _tf.tf()
            card = int(self.stream.cardinality())
            if card >= 0:
                self._count = card
            else:
                log.info("data: counting the samples of the %s stream (its length is unknown; give the factory's "
                         "datasets tf.data.experimental.assert_cardinality(n) to skip this pass)", self.name)
                self._count = int(self.stream.batch(_COUNT_BATCH).reduce(
                    np.int64(0), lambda c, b: c + tf.cast(tf.shape(tf.nest.flatten(b)[0])[0], tf.int64)))
        return int(self._count)

    @property
    def element_spec(self) -> Any:
        """``(x_spec, y_spec)`` of one sample (tf.TensorSpec or dicts of them)."""
        return self.pipeline().element_spec

    def input_shapes(self) -> Any:
        """One sample's input shape, or ``{name: shape}`` for several inputs."""
        if not self.is_stream:
            return shapes(self._x)
        return _spec_shapes(self.element_spec[0])

    def target_shapes(self) -> Any:
        """One sample's target shape, or ``{name: shape}``."""
        if not self.is_stream:
            return shapes(self._y) if self._y is not None else []
        return _spec_shapes(self.element_spec[1])

    def describe(self) -> dict[str, Any]:
        """JSON-able: length, kind, and for a stream its element spec (shapes and dtypes), never its contents."""
        d: dict[str, Any] = {"samples": self.n, "kind": "stream" if self.is_stream else "arrays"}
        if self.is_stream:
            xs, ys = self.element_spec
            d["element_spec"] = {"x": {"shape": _spec_shapes(xs), "dtype": _spec_dtypes(xs)},
                                 "y": {"shape": _spec_shapes(ys), "dtype": _spec_dtypes(ys)}}
        else:
            def dtypes(a: Arrays) -> Any:
                return {k: str(v.dtype) for k, v in a.items()} if isinstance(a, Mapping) else str(np.asarray(a).dtype)

            d["element_spec"] = {"x": {"shape": shapes(self._x), "dtype": dtypes(self._x)},
                                 "y": {"shape": shapes(self._y), "dtype": dtypes(self._y)}}
        return d

    def pipeline(self) -> Any:
        """The unbatched ``tf.data.Dataset`` of ``(x, y)`` (over the arrays for an in-memory split)."""
        if self.is_stream:
            return self.stream
        return _tf.tf().data.Dataset.from_tensor_slices((self._x, self._y))

    def shuffle_buffer(self, batch_size: int, limit: int | None = None) -> int:
        """Samples a shuffle buffer holds: the whole split in memory; for a stream, ``limit`` or what fits
        :data:`SHUFFLE_BYTES` (at least one batch, at most the split)."""
        if not self.is_stream:
            return max(1, self.n)
        if limit is not None:
            return max(1, limit)
        if self.shuffled_upstream:
            return max(1, batch_size)
        per = _sample_bytes(self.element_spec[0])
        size = max(batch_size, min(SHUFFLE_BYTES // max(1, per), 100_000))
        return max(1, min(size, self._count)) if self._count is not None else size

    def dataset(self, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                targets: Callable[[Any, Any], Any] | None = None, shuffle_buffer: int | None = None) -> Any:
        """The batched, prefetched pipeline training reads.

        Args:
            batch_size: Samples per batch (the last batch may be smaller).
            shuffle: Reshuffle every epoch (in-memory splits over all samples; streams through a bounded buffer).
            seed: Fixes the shuffle order.
            targets: ``(x, y) -> y`` applied per batch with tf ops (an autoencoder trains towards ``x``).
            shuffle_buffer: A stream's shuffle buffer in samples (default: :meth:`shuffle_buffer`).
        """
        tf = _tf.tf()
        ds = self.pipeline()
        if shuffle:
            ds = ds.shuffle(self.shuffle_buffer(batch_size, shuffle_buffer), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size)
        if targets is not None:
            ds = ds.map(lambda x, y: (x, targets(x, y)), num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)

    def batches(self, batch_size: int = 256) -> Iterator[tuple[Arrays, Arrays]]:
        """Numpy ``(x, y)`` batches in the split's fixed order."""
        if not self.is_stream:
            for start in range(0, self.n, batch_size):
                idx = slice(start, start + batch_size)
                yield take(self._x, idx), (take(self._y, idx) if self._y is not None else None)
            return
        seen = 0
        for xb, yb in self.stream.batch(batch_size).prefetch(2):
            x, y = _to_numpy(xb), _to_numpy(yb)
            seen += n_samples(x)
            yield x, y
        if self._count is None:
            self._count = seen

    def apply(self, fn: Callable[[Arrays], Any], batch_size: int = 256, inputs: bool = False
              ) -> tuple[Any, Arrays, Arrays]:
        """``fn`` (e.g. a model's predict) over the split: ``(outputs, targets, inputs or None)``.

        In-memory splits call ``fn`` once on all inputs; a stream calls it per batch and keeps only the outputs
        and targets (and the inputs when ``inputs``: an autoencoder's score compares them with the outputs).
        ``fn`` returns an array, a dict of arrays or a list of arrays.

        Raises:
            DataError: the stream yields no samples.
        """
        if not self.is_stream:
            return fn(self._x), self._y, self._x if inputs else None
        outs, ys, xs = [], [], []
        for xb, yb in self.batches(batch_size):
            out = fn(xb)
            outs.append(tuple(out) if isinstance(out, list) else out)
            ys.append(yb)
            if inputs:
                xs.append(xb)
        if not outs:
            raise DataError(f"the {self.name} split is empty: its stream yielded no samples.")
        joined = concat(outs)
        return list(joined) if isinstance(joined, tuple) else joined, concat(ys), concat(xs) if inputs else None

    def head(self, n: int | None = None) -> tuple[Arrays, Arrays]:
        """The first ``n`` samples (all when None) as numpy arrays."""
        if not self.is_stream:
            idx = slice(0, self.n if n is None else n)
            return take(self._x, idx), (take(self._y, idx) if self._y is not None else None)
        ds = self.stream if n is None else self.stream.take(n)
        xs, ys = [], []
        for xb, yb in ds.batch(min(n or _COUNT_BATCH, _COUNT_BATCH)):
            xs.append(_to_numpy(xb))
            ys.append(_to_numpy(yb))
        if not xs:
            raise DataError(f"the {self.name} split is empty: the stream yielded no samples.")
        return concat(xs), concat(ys)

    def targets(self, n: int | None = None) -> Arrays:
        """The targets of the first ``n`` samples (all when None); a stream is read without keeping its inputs,
        so probing the labels of a large-sample stream costs one batch of inputs, not ``n``."""
        if not self.is_stream:
            return take(self._y, slice(0, self.n if n is None else n)) if self._y is not None else None
        ds = self.stream.map(lambda x, y: y)
        ys = [_to_numpy(yb) for yb in (ds if n is None else ds.take(n)).batch(min(n or _COUNT_BATCH, _COUNT_BATCH))]
        if not ys:
            raise DataError(f"the {self.name} split is empty: the stream yielded no samples.")
        return concat(ys)

    def targets_in_memory(self, limit: int) -> Arrays:
        """The split's targets; for a stream those of its first ``limit`` samples (read without their inputs)."""
        return self.targets(limit) if self.is_stream else self._y

    def in_memory(self, limit: int = ANALYSIS_SAMPLES) -> tuple[Arrays, Arrays]:
        """The split's arrays; for a stream its first ``limit`` samples (what the analyses read)."""
        return self.head(limit) if self.is_stream else (self._x, self._y)

    def sample(self, n: int, seed: int = 0) -> Arrays:
        """``n`` inputs drawn without replacement (all when the split is smaller); for a stream, the first ``n``
        out of a seeded shuffle buffer of ``4 n`` samples (the front of the stream, e.g. int8 calibration data).

        Raises:
            DataError: ``n`` is not positive.
        """
        if n < 1:
            raise DataError(f"the number of representative samples must be at least 1, got {n}; "
                            "set it to a few hundred (e.g. 200) for int8 calibration.")
        if not self.is_stream:
            idx = np.random.default_rng(seed).permutation(self.n)[:n]
            return take(self._x, np.sort(idx))
        shuffled = Split(stream=self.stream.shuffle(4 * n, seed=seed, reshuffle_each_iteration=False),
                         name=self.name)
        return shuffled.head(n)[0]

    def map(self, fn: Callable[[Any, Any], tuple[Any, Any]], tf_fn: Callable[[Any, Any], tuple[Any, Any]]) -> Split:
        """A split with ``(x, y)`` converted: ``fn`` on the arrays, or ``tf_fn`` (tf ops, one sample) on the stream."""
        if not self.is_stream:
            x, y = fn(self._x, self._y)
            return Split(x, y, name=self.name)
        return Split(stream=self.stream.map(tf_fn, num_parallel_calls=_tf.tf().data.AUTOTUNE), count=self._count,
                     name=self.name, shuffled_upstream=self.shuffled_upstream)


def model_outputs(model: Any, data: Any, batch_size: int = 256) -> Any:
    """A Keras model's outputs on arrays or on a :class:`Split` (a stream read batch by batch)."""
    if isinstance(data, Split):
        if not data.is_stream:
            return model.predict(data.x, batch_size=batch_size, verbose=0)
        return data.apply(model.predict_on_batch, batch_size)[0]
    return model.predict(data, batch_size=batch_size, verbose=0)


__all__ = ["ANALYSIS_SAMPLES", "SHUFFLE_BYTES", "Arrays", "Split", "concat", "model_outputs", "n_samples", "shapes",
           "take"]
