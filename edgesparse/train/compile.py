"""Compiling a model for a training phase: optimizer, loss (probabilities or logits) and metrics."""

from __future__ import annotations

from typing import Any

from edgesparse import _tf
from edgesparse.recipe import OptimizerConfig


def make_optimizer(cfg: OptimizerConfig) -> Any:
    """A tf_keras optimizer from its recipe section."""
    opt = _tf.keras().optimizers
    if cfg.name == "sgd":
        return opt.SGD(cfg.learning_rate, momentum=cfg.momentum)
    if cfg.name == "rmsprop":
        return opt.RMSprop(cfg.learning_rate, momentum=cfg.momentum)
    if cfg.name == "adamw":
        return opt.AdamW(cfg.learning_rate, weight_decay=cfg.weight_decay or 0.004)
    return opt.Adam(cfg.learning_rate)


def outputs_probabilities(model: Any) -> bool:
    """Whether the model ends in a softmax (else its outputs are treated as logits)."""
    layer = model.layers[-1]
    layer = getattr(layer, "layer", layer)  # pruning / quantization wrappers
    act = getattr(layer, "activation", None)
    while act is not None and not hasattr(act, "__name__") and hasattr(act, "activation"):
        act = act.activation  # tfmot's QuantizeAwareActivation wraps the real one
    name = getattr(act, "__name__", "") if act is not None else ""
    return name == "softmax" or type(layer).__name__ == "Softmax"


def compile_model(model: Any, optimizer: OptimizerConfig, loss_weight: float | None = None) -> None:
    """Compile for sparse-label classification with the right ``from_logits`` (its loss scaled by ``loss_weight``)."""
    keras = _tf.keras()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=not outputs_probabilities(model))
    weights = None if loss_weight is None else [loss_weight]
    model.compile(optimizer=make_optimizer(optimizer), loss=loss, loss_weights=weights, metrics=["accuracy"])
