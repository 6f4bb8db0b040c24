"""Integer index inputs (token ids, category codes): fed as integers, and checked against the model.

An int32/int64 input array is never scaled nor cast to float (:func:`edgesparse.data.arrays.is_index_array`);
here the data meets the model: an integer model input must get integers, a float input must not get token ids,
and every id an ``Embedding`` reads straight from a model input must lie in ``[0, input_dim)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgesparse.errors import DataError


def _by_input(a: Any, names: list[str]) -> dict[str, Any]:
    if isinstance(a, dict):
        return {n: a[n] for n in names if n in a}
    return {names[0]: a} if names else {}


def embedding_ranges(model: Any, names: list[str]) -> dict[str, tuple[str, int]]:
    """``{input name: (embedding layer name, input_dim)}`` for every Embedding fed straight by a model input."""
    by_ref = {id(t): n for t, n in zip(model.inputs, names)}
    found: dict[str, tuple[str, int]] = {}
    for layer in model.layers:
        if type(layer).__name__ != "Embedding":
            continue
        try:
            src = layer.input
        except (AttributeError, ValueError):  # a shared layer with several inputs: not checked here
            continue
        name = by_ref.get(id(src))
        if name is not None:
            dim = int(layer.input_dim)
            if name not in found or dim < found[name][1]:
                found[name] = (layer.name, dim)
    return found


def check_integer_inputs(model: Any, data: Any, names: list[str]) -> None:
    """Fail when integer and float inputs are mixed up, or a token id lies outside an Embedding's range.

    Args:
        model: A tf_keras model.
        data: A :class:`~edgesparse.data.Dataset`; streamed splits are checked by their element dtypes only.
        names: The model's input names, in order.

    Raises:
        DataError: an integer model input gets float data (or the reverse for ids), or an id is out of range.
    """
    wants_int = {n: bool(getattr(t.dtype, "is_integer", False)) for n, t in zip(names, model.inputs)}
    ranges = embedding_ranges(model, names)
    for split in (data.train, data.val, data.test):
        if not split.n or split.is_stream:
            continue
        for name, a in _by_input(split.x, names).items():
            a = np.asarray(a)
            is_int = a.dtype.kind in "iu"
            if wants_int.get(name) and not is_int:
                raise DataError(
                    f"the model's input '{name}' takes integers (token ids or indices) but the data's {split.name} "
                    f"'{name}' samples are {a.dtype}; store them as int32 (an npz int32/int64 array is fed as it "
                    "is, never scaled).")
            if name in ranges and is_int and a.size:
                layer, dim = ranges[name]
                lo, hi = int(a.min()), int(a.max())
                if lo < 0 or hi >= dim:
                    raise DataError(
                        f"the {split.name} data's '{name}' ids range over [{lo}, {hi}] but the Embedding '{layer}' "
                        f"it feeds has input_dim {dim} (ids 0..{dim - 1}); map the ids into that range (e.g. an "
                        f"out-of-vocabulary id) or build the Embedding with input_dim >= {hi + 1}.")
