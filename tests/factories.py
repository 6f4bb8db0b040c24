"""Model factories referenced by test recipes as ``factory: "tests.factories:NAME"``."""

from __future__ import annotations

from typing import Any

from edgesparse import _tf


def wrong_input(num_classes: int = 10) -> Any:
    keras = _tf.keras()
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))


def five_outputs() -> Any:
    keras = _tf.keras()
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(x))


def no_prunable_layer() -> Any:
    keras = _tf.keras()
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Softmax()(x)
    return keras.Model(inputs, x)


def keras3_model() -> Any:
    import keras  # Keras 3 (installed alongside TensorFlow): what users often hand us by mistake

    inputs = keras.Input((8, 8, 1))
    return keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)))


def with_lambda(path: str) -> None:
    """Save a model containing a Lambda layer (used to test trust_code)."""
    keras = _tf.keras()
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    x = keras.layers.Flatten()(x)
    keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x)).save(path)
