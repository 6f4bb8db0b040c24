"""Masking and surgery: the same keep decision applied two ways.

``mask_model`` zeroes, in a copy of the model, every weight that reads or writes a removed channel;
``thin_model`` rebuilds a physically smaller tf_keras model (the model's layer graph replayed with thinner
layers) with the kept channels and their weights. Both use the same per-weight axis rules (:func:`weight_axes`),
so the thinned model must compute what the masked model computes; :func:`check_equal` measures it on real inputs.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from edgesparse import _tf
from edgesparse.errors import TrainError
from edgesparse.models.graph import Entry, graph_tf_keras, replay
from edgesparse.train.channels.graph import ChannelGraph, LayerNode

#: Which config key sets a producer's output channels.
_WIDTH_KEY = {"Dense": "units"}


def weight_axes(node: LayerNode, layer: Any) -> list[dict[int, np.ndarray]]:
    """For each of ``layer``'s weights (``get_weights()`` order): axis -> unit layout along that axis."""
    n = len(layer.weights)
    if node.role == "producer":
        return [{-2: node.inputs[0], -1: node.output}, {0: node.output}][:n]
    if node.role == "transpose":  # kernel [..., out, in]
        return [{-2: node.output, -1: node.inputs[0]}, {0: node.output}][:n]
    if node.role == "separable":
        mid = np.repeat(node.inputs[0], int(layer.get_config().get("depth_multiplier", 1)))
        return [{-2: node.inputs[0]}, {-2: mid, -1: node.output}, {0: node.output}][:n]
    if node.role == "depthwise":
        return [{-2: node.inputs[0]}, {0: node.output}][:n]
    if node.role == "bn":
        return [{0: node.output} for _ in range(n)]
    return [{} for _ in range(n)]


def _slice(w: np.ndarray, axes: dict[int, np.ndarray], keep: np.ndarray) -> np.ndarray:
    for axis, lay in axes.items():
        w = np.compress(keep[lay], w, axis=axis)
    return w


def _zero(w: np.ndarray, axes: dict[int, np.ndarray], keep: np.ndarray) -> np.ndarray:
    out = w
    for axis, lay in axes.items():
        shape = [1] * w.ndim
        shape[axis] = len(lay)
        out = out * keep[lay].reshape(shape).astype(w.dtype)
    return out


def mask_model(model: Any, graph: ChannelGraph, keep: np.ndarray) -> Any:
    """A copy of ``model`` whose weights touching removed channels are zero (moving variances kept)."""
    keras = _tf.keras()
    masked = keras.models.clone_model(model)
    masked.set_weights(model.get_weights())
    apply_mask(masked, graph, keep)
    return masked


def weight_masks(model: Any, graph: ChannelGraph, keep: np.ndarray) -> list[tuple[Any, np.ndarray]]:
    """Every weight variable that can touch a prunable channel, with its 0/1 mask for ``keep``.

    The mask has the variable's shape: 0 where an entry reads or writes a removed channel. BatchNorm moving
    variances are left out: with gamma = 0 a channel outputs beta = 0 whatever its variance (kept as trained).
    """
    out: list[tuple[Any, np.ndarray]] = []
    for node in graph.layers:
        if node.role in ("frozen", "pass"):
            continue
        layer = model.get_layer(node.name)
        for var, axes in zip(layer.weights, weight_axes(node, layer), strict=True):
            if axes and "moving_variance" not in var.name:
                out.append((var, _zero(np.ones(var.shape, dtype=np.float32), axes, keep)))
    return out


def apply_mask(model: Any, graph: ChannelGraph, keep: np.ndarray) -> None:
    """Zero, in place, ``model``'s weights that touch removed channels."""
    for var, mask in weight_masks(model, graph, keep):
        if not mask.all():
            var.assign(var.numpy() * mask.astype(var.dtype.as_numpy_dtype))


def _thinned_config(layer: Any, node: LayerNode | None, keep: np.ndarray) -> dict[str, Any]:
    """``layer``'s config with the widths of the kept channels (producers' filters/units, Reshape targets)."""
    cfg = copy.deepcopy(layer.get_config())
    cfg.pop("batch_input_shape", None)  # a Sequential's first layer: the rebuilt model has its own Input
    if node is None:
        return cfg
    kept = int(np.count_nonzero(keep[node.output]))
    if node.role in ("producer", "separable", "transpose"):
        cfg[_WIDTH_KEY.get(node.cls, "filters")] = kept
    elif node.role == "reshape":
        cfg["target_shape"] = [*list(cfg["target_shape"])[:-1], kept]
    return cfg


def thin_model(model: Any, graph: ChannelGraph, keep: np.ndarray) -> Any:
    """Rebuild ``model`` with only the kept channels (a new functional tf_keras model, copied sliced weights).

    The layer graph is replayed with :func:`edgesparse.models.graph.replay` (a Sequential model comes back
    functional, with the same layers in the same order).

    Raises:
        TrainError: the rebuilt model does not accept the sliced weights (a bug in the graph rules).
    """
    keras = _tf.keras()
    source = graph_tf_keras(model)
    nodes = {n.name: n for n in graph.layers}
    made: dict[str, Any] = {}

    def make_layer(entry: Entry) -> Any:
        return type(entry.live).from_config(_thinned_config(entry.live, nodes.get(entry.name), keep))

    def make_input(entry: Entry) -> Any:
        shape, dtype = entry.input_spec  # type: ignore[misc]
        made[entry.name] = keras.Input(batch_shape=tuple(shape), dtype=dtype, name=entry.name)
        return made[entry.name]

    outs, pairs = replay(source, make_layer, make_input)
    inputs = [made[r.layer] for r in source.inputs]
    thinned = keras.Model(inputs[0] if len(inputs) == 1 else inputs,
                          outs[0] if source.single_output and len(outs) == 1 else outs, name=model.name)
    for new, old in pairs:
        node = nodes[old.name]
        weights = [_slice(w, axes, keep) for w, axes in zip(old.get_weights(), weight_axes(node, old), strict=True)]
        try:
            new.set_weights(weights)
        except ValueError as exc:
            raise TrainError(f"channel surgery could not rebuild layer '{node.name}' ({node.cls}): {exc}. "
                             "This is a bug in edgesparse's channel graph; please report it with the model.") from None
    return thinned


def _output_list(out: Any) -> list[np.ndarray]:
    """A model's outputs as a list of arrays (one array, a list in output order, or a dict in key order)."""
    if isinstance(out, dict):
        return [np.asarray(out[k], dtype=np.float64) for k in sorted(out)]
    if isinstance(out, (list, tuple)):
        return [np.asarray(o, dtype=np.float64) for o in out]
    return [np.asarray(out, dtype=np.float64)]


def check_equal(masked: Any, thinned: Any, x: np.ndarray, tolerance: float = 1e-4) -> float:
    """Max absolute difference between the two models' outputs on ``x``.

    Raises:
        TrainError: the difference exceeds ``tolerance``.
    """
    a = _output_list(masked.predict(x, batch_size=256, verbose=0))
    b = _output_list(thinned.predict(x, batch_size=256, verbose=0))
    # several outputs (a list or a dict) may differ in shape: compared output by output
    diff = max((float(np.max(np.abs(u - v))) for u, v in zip(a, b, strict=True) if u.size), default=0.0)
    if not diff <= tolerance:
        raise TrainError(f"the thinned model's outputs differ from the masked model's by {diff:.3g} (allowed "
                         f"{tolerance:g}) on {len(x)} samples: channel surgery changed what the model computes. "
                         "This is a bug in edgesparse; please report it with the model.")
    return diff
