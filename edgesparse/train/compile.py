"""Compiling a model for a training phase: optimizer, the task's loss(es) and metrics."""

from __future__ import annotations

from typing import Any

from edgesparse import _tf
from edgesparse.recipe import OptimizerConfig
from edgesparse.task import OutputInfo, Task


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


def _activation_name(layer: Any) -> str:
    layer = getattr(layer, "layer", layer)  # pruning / quantization wrappers
    kind = type(layer).__name__
    if kind == "Softmax":
        return "softmax"
    act = getattr(layer, "activation", None)
    while act is not None and not hasattr(act, "__name__") and hasattr(act, "activation"):
        act = act.activation  # tfmot's QuantizeAwareActivation wraps the real one
    name = getattr(act, "__name__", "") if act is not None else ""
    if name in ("softmax", "sigmoid", "linear"):
        return name
    if act is None and kind in ("Dense", "Conv1D", "Conv2D", "Reshape", "Add", "Concatenate", "Flatten"):
        return "linear"
    return name or "linear"


def output_layers(model: Any) -> list[Any]:
    """The layer producing each model output, in output order."""
    layers = []
    for t in model.outputs:
        hist = getattr(t, "_keras_history", None)
        layers.append(hist.layer if hist is not None else model.layers[-1])
    return layers


def output_info(model: Any) -> list[OutputInfo]:
    """Name, shape (no batch axis) and final activation of every model output."""
    names = list(getattr(model, "output_names", None) or [])
    infos = []
    for i, (t, layer) in enumerate(zip(model.outputs, output_layers(model))):
        name = names[i] if i < len(names) else getattr(layer, "name", f"output_{i}")
        shape = tuple(None if d is None else int(d) for d in t.shape[1:])
        infos.append(OutputInfo(name=str(name), shape=shape, activation=_activation_name(layer)))
    return infos


def input_names(model: Any) -> tuple[str, ...]:
    return tuple(str(n) for n in (getattr(model, "input_names", None) or []))


def outputs_probabilities(model: Any) -> bool:
    """Whether the (first) output ends in a softmax (else its outputs are treated as logits)."""
    return output_info(model)[0].activation == "softmax"


def compile_model(model: Any, optimizer: OptimizerConfig, task: Task | None = None,
                  loss_weight: float | None = None) -> None:
    """Compile with the task's loss(es), loss weights and metrics (sparse-label classification without a task).

    Args:
        model: The model.
        optimizer: Optimizer settings.
        task: The data's task; None compiles for sparse-label classification with ``from_logits`` read
            from the model.
        loss_weight: Scales the loss (every output's, for several outputs).
    """
    keras = _tf.keras()
    if task is None:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=not outputs_probabilities(model))
        weights = None if loss_weight is None else [loss_weight]
        model.compile(optimizer=make_optimizer(optimizer), loss=loss, loss_weights=weights, metrics=["accuracy"])
        return
    model.compile(optimizer=make_optimizer(optimizer), loss=task.keras_loss(),
                  loss_weights=task.loss_weights(loss_weight), metrics=task.keras_metrics())
