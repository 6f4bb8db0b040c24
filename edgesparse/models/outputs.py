"""Dict outputs: ``keras.Model(x, {"cls": ..., "box": ...})`` becomes the same graph with list outputs.

Every stage handles several outputs as a list in output order, named by output (tfmot's wrappers, the
converter's signature, the runner all read names, and Keras fits a list against a tuple of targets).
A dict-output model is rebuilt once, when it is prepared, with its outputs as a list in the dict's order,
each output named by its key: an output whose layer already has the key's name is taken as it is, another
gets a ``linear`` Activation named after the key (an identity, which the converter drops). The data's
targets are then ``y_<key>``, as Keras itself matches a dict of targets to a dict of outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgesparse.errors import ModelError


def _layer_name(tensor: Any) -> str | None:
    """The name of the layer (tf_keras) or operation (Keras 3) that produced a symbolic tensor."""
    history = getattr(tensor, "_keras_history", None)
    owner = getattr(history, "layer", None) or getattr(history, "operation", None)
    return getattr(owner, "name", None)


def has_dict_outputs(model: Any) -> bool:
    """Whether a functional model's outputs are a dict."""
    try:
        return isinstance(model.output, Mapping)
    except (AttributeError, ValueError):  # a Sequential/subclassed model never called has no output yet
        return False


def as_list_outputs(model: Any, keras: Any) -> Any:
    """``model`` itself, or (dict outputs) the same graph with list outputs named by the dict's keys.

    Args:
        model: A tf_keras or Keras 3 functional model.
        keras: The module ``model`` belongs to (``_tf.keras()`` or ``_tf.keras3()``).

    Raises:
        ModelError: a key names another layer of the model, or is not a string.
    """
    if not has_dict_outputs(model):
        return model
    names = {layer.name for layer in model.layers}
    outs = []
    for key, tensor in model.output.items():
        if not isinstance(key, str) or not key:
            raise ModelError(f"the model '{model.name}' has a dict output keyed {key!r}; key its outputs by names "
                             "(strings), the names of the data's targets y_<name>.")
        if _layer_name(tensor) == key:
            outs.append(tensor)
            continue
        if key in names:
            raise ModelError(f"the model '{model.name}' has the output key '{key}', which is also the name of another "
                             "layer; rename that layer or the key (outputs are named by their keys).")
        outs.append(keras.layers.Activation("linear", name=key)(tensor))
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, outs, name=model.name)


__all__ = ["as_list_outputs", "has_dict_outputs"]
