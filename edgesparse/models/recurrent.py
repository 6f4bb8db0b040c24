"""Built-in recurrent classifier: ``model: {builtin: rnn_classifier, cell: lstm, units: 64, layers: 1}``.

One or more stacked recurrent layers (LSTM, GRU or SimpleRNN; rolled, Keras's default) over a
``(timesteps, features)`` window, the last step's state into a softmax. The cells' kernels and recurrent
kernels are pruned by tfmot (all gates); the export converts an LSTM to TFLite's fused
UNIDIRECTIONAL_SEQUENCE_LSTM with a batch of 1 (see :mod:`edgesparse.export.convert`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from edgesparse import _tf
from edgesparse.errors import ModelError
from edgesparse.models.zoo import ZooEntry, register

_CELLS = {"lstm": "LSTM", "gru": "GRU", "simple_rnn": "SimpleRNN"}


class RNNClassifierConfig(ZooEntry):
    """``model: {builtin: rnn_classifier, cell: lstm, units: 64, layers: 1, dropout: 0.0}``."""

    builtin: Literal["rnn_classifier"]
    cell: Literal["lstm", "gru", "simple_rnn"] = "lstm"
    units: int = Field(64, gt=0, le=1024)
    layers: int = Field(1, ge=1, le=4)
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout before the softmax")


@register("rnn_classifier", RNNClassifierConfig)
def rnn_classifier(cfg: RNNClassifierConfig, input_shape: tuple[int, ...], num_classes: int) -> Any:
    """Stacked recurrent layers over ``(timesteps, features)`` inputs, then ``Dense(num_classes, softmax)``."""
    if len(input_shape) != 2 or input_shape[0] is None:
        raise ModelError(f"rnn_classifier needs (timesteps, features) inputs of a fixed length; the data has "
                         f"{input_shape}.")
    keras = _tf.keras()
    cls = getattr(keras.layers, _CELLS[cfg.cell])
    inputs = keras.Input(tuple(input_shape), name="window")
    x = inputs
    for i in range(cfg.layers):
        x = cls(cfg.units, return_sequences=i < cfg.layers - 1, name=f"{cfg.cell}{i + 1}")(x)
    if cfg.dropout:
        x = keras.layers.Dropout(cfg.dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name=f"{cfg.cell}_classifier")
