"""Channel importance: one score per unit, aggregated over the layers that hold it.

Criteria (a small registry): ``l1`` / ``l2`` norm of each output channel's weights (kernel slice and bias;
depthwise kernels per channel), ``bn`` the absolute BatchNorm gamma (units no BatchNorm touches fall back to
``l2``), ``taylor`` first-order Taylor: ``|sum over a batch of activation x gradient|`` of each channel,
accumulated over a few batches. For a channel written by a linear layer (kernel, bias) or a BatchNorm
(gamma, beta), activation x gradient summed over the batch and positions equals ``sum(w * dL/dw)`` over the
channel's parameters, which is what is computed (no intermediate tensors needed).

Each layer's per-channel scores are divided by their mean before being averaged into units, so layers with
large weights do not dominate a coupled group, and scores of different groups can be ranked together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgesparse import _tf
from edgesparse._registry import Registry
from edgesparse.data.dataset import n_samples, take
from edgesparse.errors import RecipeError
from edgesparse.task import Task
from edgesparse.train.channels.graph import ChannelGraph, LayerNode
from edgesparse.train.compile import outputs_probabilities

#: role -> the weights (by get_weights() index) that write a channel, with the axis of that channel
_WRITERS = {"producer": ((0, -1), (1, 0)), "separable": ((1, -1), (2, 0)), "depthwise": ((0, -2), (1, 0)),
            "transpose": ((0, -2), (1, 0))}
Reduce = Callable[[np.ndarray, int], np.ndarray]

CRITERIA: Registry[Callable[..., np.ndarray]] = Registry("channel importance", RecipeError)


def _per_channel(w: np.ndarray, axis: int, reduce: Reduce) -> np.ndarray:
    moved = np.moveaxis(w, axis, -1)
    return reduce(moved.reshape(-1, moved.shape[-1]), 0)


def _layer_scores(node: LayerNode, weights: list[np.ndarray], reduce: Reduce, bn_only: bool) -> np.ndarray | None:
    """Per output channel of ``node`` (None when the layer writes no prunable channels)."""
    if node.role == "bn":
        return reduce(weights[0].reshape(1, -1), 0) if weights else None  # callers pass [gamma]
    if bn_only or node.role not in _WRITERS:
        return None
    total = np.zeros(len(node.output))
    for index, axis in _WRITERS[node.role]:
        if index < len(weights):
            w, channel_axis = weights[index], axis
            if node.role == "depthwise" and axis == -2:
                w = w.reshape(*w.shape[:-2], -1)  # (.., in, mult) -> (.., in*mult): one column per output
                channel_axis = -1
            total = total + _per_channel(w, channel_axis, reduce)
    return total


def aggregate(graph: ChannelGraph, per_layer: dict[str, np.ndarray]) -> np.ndarray:
    """Mean over the layers holding each unit of their mean-normalized channel scores (NaN: no score)."""
    total, count = np.zeros(graph.num_units), np.zeros(graph.num_units)
    for node in graph.layers:
        scores = per_layer.get(node.name)
        if scores is None or not len(scores):
            continue
        norm = scores / (np.mean(scores) + 1e-12)
        np.add.at(total, node.output, norm)
        np.add.at(count, node.output, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _norm_scores(model: Any, graph: ChannelGraph, reduce: Reduce, bn_only: bool = False) -> np.ndarray:
    per_layer = {}
    for node in graph.layers:
        layer = model.get_layer(node.name)
        weights = layer.get_weights()
        if node.role == "bn":
            weights = [layer.gamma.numpy()] if getattr(layer, "scale", False) else []
        s = _layer_scores(node, weights, reduce, bn_only)
        if s is not None:
            per_layer[node.name] = s
    return aggregate(graph, per_layer)


def _l1(a: np.ndarray, axis: int) -> np.ndarray:
    return np.asarray(np.sum(np.abs(a), axis=axis))


def _l2(a: np.ndarray, axis: int) -> np.ndarray:
    return np.asarray(np.sqrt(np.sum(np.square(a), axis=axis)))


@CRITERIA.register("l1")
def l1(model: Any, graph: ChannelGraph, **_: Any) -> np.ndarray:
    """L1 norm of each channel's weights."""
    return _norm_scores(model, graph, _l1)


@CRITERIA.register("l2")
def l2(model: Any, graph: ChannelGraph, **_: Any) -> np.ndarray:
    """L2 norm of each channel's weights."""
    return _norm_scores(model, graph, _l2)


@CRITERIA.register("bn")
def bn(model: Any, graph: ChannelGraph, **_: Any) -> np.ndarray:
    """|BatchNorm gamma|; units without a BatchNorm take their L2 score."""
    scores = _norm_scores(model, graph, _l1, bn_only=True)
    return np.where(np.isnan(scores), _norm_scores(model, graph, _l2), scores)


@CRITERIA.register("taylor")
def taylor(model: Any, graph: ChannelGraph, *, x: Any, y: Any, batches: int = 4,
           batch_size: int = 64, task: Task | None = None, **_: Any) -> np.ndarray:
    """First-order Taylor (activation x gradient) of the task's loss over ``batches`` batches of ``(x, y)``."""
    tf = _tf.tf()
    keras = _tf.keras()
    if task is None:
        probs = outputs_probabilities(model)  # a final Softmax layer and wrappers included
        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=not probs)
    else:
        loss_fn = _task_loss(task)
        y = task.fit_targets(x, y)
    variables = model.trainable_weights
    totals: dict[str, np.ndarray] = {}
    for start in range(0, min(n_samples(x), batches * batch_size), batch_size):
        xb, yb = take(x, slice(start, start + batch_size)), take(y, slice(start, start + batch_size))
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=False))
        grads = tape.gradient(loss, variables)
        wg = [v.numpy() * (np.zeros(v.shape) if g is None else tf.convert_to_tensor(g).numpy())
              for v, g in zip(variables, grads, strict=True)]
        for name, s in _taylor_layer_scores(model, graph, variables, wg).items():
            totals[name] = totals.get(name, 0.0) + s
    return aggregate(graph, totals)


def _task_loss(task: Task) -> Any:
    """The task's training loss as one callable ``f(y, y_pred)`` (several outputs: weighted sum)."""
    losses = task.keras_loss()
    if not task.multi_output:
        return losses

    def total(y: Any, pred: Any) -> Any:
        preds = list(pred.values()) if isinstance(pred, dict) else list(pred)
        return sum(h.weight * fn(t, p) for h, fn, t, p in zip(task.heads, losses, y, preds))

    return total


def _taylor_layer_scores(model: Any, graph: ChannelGraph, variables: list[Any],
                         wg: list[np.ndarray]) -> dict[str, np.ndarray]:
    """|sum of w * dL/dw| over each channel's parameters (= activation x gradient), per layer."""
    by_id = {id(v): i for i, v in enumerate(variables)}
    per_layer = {}
    for node in graph.layers:
        layer = model.get_layer(node.name)
        products = [wg[by_id[id(v)]] if id(v) in by_id else np.zeros(v.shape) for v in layer.weights]
        if node.role == "bn":  # gamma and beta both scale/shift the channel: y = gamma * x_hat + beta
            shift_scale = [p for p, v in zip(products, layer.weights, strict=True)
                           if "gamma" in v.name or "beta" in v.name]
            products = [sum(shift_scale, np.zeros(len(node.output)))]
        s = _layer_scores(node, products, lambda a, axis: np.abs(np.sum(a, axis=axis)), bn_only=False)
        if s is not None:
            per_layer[node.name] = s
    return per_layer


def importance(name: str, model: Any, graph: ChannelGraph, **data: Any) -> np.ndarray:
    """Scores per unit (higher = more important) by criterion ``name`` (l1, l2, bn, taylor).

    Raises:
        RecipeError: unknown criterion (the known ones are listed).
    """
    scores = CRITERIA.get(name)(model, graph, **data)
    return np.nan_to_num(scores, nan=0.0)
