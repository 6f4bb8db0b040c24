"""Inline nested sub-models so that tfmot sees (and prunes) every layer.

tfmot's ``prune_low_magnitude`` with a ``clone_function`` only visits the top-level layers: a
backbone nested in a Sequential or functional model is one opaque layer to it. :func:`flatten_nested`
replays the model's graph and, for every nested functional or Sequential model called once, replays
the sub-model's graph in place, at any depth. The inlined layers are named by their path,
``backbone/conv1`` (sub-model name, '/', layer name), which is the name per-layer overrides
(``sparsity.layers[].match``) and the run's plan see. Weights are copied and the flat model's outputs
are checked against the nested model's on random inputs.

A nested model that is subclassed, or called more than once (shared weights), is kept as one layer:
the plan reports it as not pruned, with the reason.
"""

from __future__ import annotations

from typing import Any

from edgesparse import _tf
from edgesparse.models import graph as _graph
from edgesparse.models.keras3 import KERAS3_TAG, check_same, is_graph_model


def nested_models(model: Any) -> list[Any]:
    """The direct sub-models of a tf_keras model."""
    keras = _tf.keras()
    return [layer for layer in model.layers if isinstance(layer, keras.Model)]


def _inlinable(layer: Any) -> bool:
    return is_graph_model(layer)


def flatten_nested(model: Any) -> Any:
    """A copy of ``model`` with its nested functional/Sequential sub-models inlined (at any depth).

    Args:
        model: A functional or Sequential tf_keras model.

    Returns:
        ``model`` itself when it has no inlinable sub-model, else a new functional model with the same
        weights whose outputs were checked equal (see :func:`~edgesparse.models.keras3.check_same`).

    Raises:
        ModelError: the flat model computes something else than the nested one.
    """
    keras = _tf.keras()
    if not any(_inlinable(m) and _called_once(model, m) for m in nested_models(model)):
        return model
    pairs: list[tuple[Any, Any]] = []

    def make_layer(entry: _graph.Entry, prefix: str) -> Any:
        layer = entry.live
        if isinstance(layer, keras.Model) and _inlinable(layer) and len(entry.calls) == 1:
            sub = _graph.graph_tf_keras(layer)
            sub_prefix = f"{prefix}{layer.name}/"

            def inline(*args: Any, **kwargs: Any) -> Any:
                inputs = args[0] if len(args) == 1 else list(args)
                bound = inputs if isinstance(inputs, list) and len(sub.inputs) > 1 else [inputs]
                outs, sub_pairs = _graph.replay(sub, lambda e: make_layer(e, sub_prefix),
                                                lambda e: None, bound=bound)
                pairs.extend(sub_pairs)
                return outs[0] if sub.single_output and len(outs) == 1 else outs

            return inline
        if isinstance(layer, keras.Model):
            return layer  # kept whole (subclassed or shared): reported as not prunable
        config = layer.get_config()
        config["name"] = prefix + layer.name
        return type(layer).from_config(config)

    made: dict[str, Any] = {}

    def make_input(e: _graph.Entry) -> Any:
        shape, dtype = e.input_spec  # type: ignore[misc]
        made[e.name] = keras.Input(batch_shape=tuple(shape), dtype=dtype, name=e.name)
        return made[e.name]

    graph = _graph.graph_tf_keras(model)
    outs, top_pairs = _graph.replay(graph, lambda e: make_layer(e, ""), make_input)
    inputs = [made[r.layer] for r in graph.inputs]
    flat = keras.Model(inputs[0] if len(inputs) == 1 else inputs,
                       outs[0] if graph.single_output and len(outs) == 1 else outs, name=model.name)
    _graph.copy_weights(pairs + top_pairs, f"flattening '{model.name}'")
    check_same(model, flat, f"flattening the nested sub-models of '{model.name}'")
    if getattr(model, KERAS3_TAG, False):
        setattr(flat, KERAS3_TAG, True)
        flat._edgesparse_translation_diff = getattr(model, "_edgesparse_translation_diff", None)  # noqa: SLF001
    return flat


def _called_once(model: Any, sub: Any) -> bool:
    graph = _graph.graph_tf_keras(model)
    return any(e.live is sub and len(e.calls) == 1 for e in graph.entries)


def kept_nested_reason(layer: Any) -> str:
    """Why a nested model was left as one layer (for the plan's notes)."""
    if not is_graph_model(layer):
        return ("subclassed sub-model: its layers are created in Python code, so tfmot cannot wrap them "
                "(build it functionally to have it pruned)")
    return "sub-model called more than once (shared weights): kept whole, not pruned"
