"""Input equalization: rescale each input feature and the first layer's matching kernel row, for int16x8.

int16x8 keeps int8 weights with one scale per output channel. When a model's input features span very
different scales (a raw reading 1000x the others'), the first layer learns a kernel row for that feature
about as many times smaller, and the output channel's one int8 scale, set by the large rows, rounds the
small row to a few levels: each level of error is then multiplied by the large input. Measured on the
sensor-fusion MLP of ``benchmarks/quantization.py`` (seed 2): float 92.9%, int8 weights in fc1 alone 83.7%,
the int16 input step alone 93.1%.

The remedy is the input side of cross-layer equalization (Nagel et al., "Data-Free Quantization", 2019):
for each input feature ``i`` with range ``r_x[i]`` (from the calibration samples) and kernel row range
``r_w[i]``, ``c[i] = sqrt(r_x[i] / r_w[i])``; the feature is divided by ``c[i]`` (a per-feature multiply
placed in front of the layer, one MUL op in the .tflite) and the row multiplied by it. The float model
computes the same function; the quantized one sees rows and features of comparable ranges. ``c`` is
limited to a ratio of :data:`MAX_RATIO` between its largest and smallest value so the multiply's own
int16 constants keep at least int8's precision.

Only an input consumed by exactly one Dense or (non-grouped) Conv1D/2D layer, directly, is equalized; a model
with no such input, or whose row ranges differ by less than :data:`MIN_SPREAD`, is left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgesparse import _tf
from edgesparse.models.graph import graph_tf_keras, replay, tensor_refs

#: The first layer's kernel rows must differ in range by more than this for equalization to be worth a try.
MIN_SPREAD = 8.0
#: The largest ratio between two features' factors (the multiply's int16 constants keep >= 128 levels each).
MAX_RATIO = 256.0
_KERNELS = ("Dense", "Conv1D", "Conv2D")


@dataclass
class Equalized:
    """The equalized model and, per input it rescaled, what was done."""

    model: Any
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # input -> {layer, row_spread, factor_max}

    @property
    def layers(self) -> list[str]:
        """The first layers whose kernel rows were rescaled."""
        return [v["layer"] for v in self.inputs.values()]


def _first_layers(model: Any) -> dict[str, Any]:
    """Input name -> the one Dense/Conv layer that consumes it directly (inputs with other consumers left out)."""
    graph = graph_tf_keras(model)
    consumers: dict[str, list[Any]] = {ref.layer: [] for ref in graph.inputs}

    for entry in graph.entries:
        for call in entry.calls:
            for r in tensor_refs([call.args, call.kwargs]):
                if r.layer in consumers:
                    consumers[r.layer].append(entry.live)
    out = {}
    for name, users in consumers.items():
        if len(users) == 1 and type(users[0]).__name__ in _KERNELS and getattr(users[0], "groups", 1) == 1:
            out[name] = users[0]
    return out


def _row_ranges(kernel: np.ndarray) -> np.ndarray:
    """``max |w|`` of each input row of a Dense ``(in, out)`` or Conv ``(..., in, out)`` kernel."""
    return np.moveaxis(np.abs(kernel), -2, 0).reshape(kernel.shape[-2], -1).max(axis=1)


def _spread(kernel: np.ndarray) -> float:
    """The ratio of the largest to the smallest non-zero row range."""
    w = _row_ranges(kernel)
    w = w[w > 0]
    return float(w.max() / w.min()) if w.size else 1.0


def factors(kernel: np.ndarray, x_range: np.ndarray) -> np.ndarray | None:
    """The per-feature factors ``c`` for a kernel (inputs on axis -2) and its inputs' ranges; None: not worth it.

    Args:
        kernel: A Dense ``(in, out)`` or Conv ``(..., in, out)`` kernel.
        x_range: ``max |x|`` of each input feature (channel), shape ``(in,)``.
    """
    w = _row_ranges(kernel)
    live = (w > 0) & (x_range > 0)  # a pruned-away or constant-zero feature keeps factor 1
    if live.sum() < 2 or w[live].max() / w[live].min() <= MIN_SPREAD:
        return None
    c = np.ones_like(w, dtype=np.float64)
    c[live] = np.sqrt(x_range[live] / w[live])
    c[live] = np.clip(c[live], c[live].max() / MAX_RATIO, None)
    return (c / c[live].min()).astype(np.float32)


def _ranges(representative: Any, names: list[str]) -> dict[str, np.ndarray]:
    """``max |x|`` per feature (last axis) of each input's calibration samples."""
    samples = representative if isinstance(representative, dict) else {names[0]: representative}
    out = {}
    for name, x in samples.items():
        a = np.abs(np.asarray(x, dtype=np.float32))
        out[name] = a.reshape(-1, a.shape[-1]).max(axis=0)
    return out


def _scaled(keras: Any, x: Any, c: np.ndarray, name: str) -> Any:
    """``x / c`` per feature, then a reshape there and back: without it the converter folds the multiply into the
    following FULLY_CONNECTED's weights and undoes the equalization (measured: the same 84% as without it)."""
    tf = _tf.tf()
    shape = tuple(int(d) for d in x.shape[1:])

    class Hold(keras.layers.Layer):
        """A reshape to ``(-1, *shape, 1)`` and back: one RESHAPE op in the .tflite (Keras' Reshape adds SHAPE,
        STRIDED_SLICE and PACK ops to keep the batch dimension)."""

        def call(self, t: Any) -> Any:
            return tf.reshape(tf.reshape(t, (-1, *shape, 1)), (-1, *shape))

    y = keras.layers.Rescaling(1.0 / c, name=f"{name}_equalize")(x)
    return Hold(name=f"{name}_equalize_hold")(y)


def equalize(model: Any, representative: Any) -> Equalized | None:
    """A copy of ``model`` with its inputs equalized for int16x8 (see the module doc); None where nothing applies.

    Args:
        model: A stripped tf_keras functional or Sequential model (never changed).
        representative: The calibration samples: an array, or a dict of arrays by input name.
    """
    if representative is None or type(model).__name__ not in ("Functional", "Sequential"):
        return None
    graph = graph_tf_keras(model)
    names = [r.layer for r in graph.inputs]
    ranges = _ranges(representative, names)
    plan = {}
    for name, layer in _first_layers(model).items():
        if name in ranges and layer.get_weights():
            kernel = layer.get_weights()[0]
            c = factors(kernel, ranges[name])
            if c is not None and c.shape[0] == ranges[name].shape[0]:
                plan[name] = (layer.name, c, _spread(kernel))
    if not plan:
        return None
    keras = _tf.keras()
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    specs = {e.name: e.input_spec for e in graph.entries if e.input_spec is not None}
    # the model's own input names (a Sequential's graph calls its input "input"): the .tflite signature keeps them
    real = dict(zip(names, model.input_names)) if len(model.input_names) == len(names) else {}
    inputs = [keras.Input(batch_shape=tuple(specs[n][0]), dtype=specs[n][1], name=real.get(n, n)) for n in names]
    bound = [x if n not in plan else _scaled(keras, x, plan[n][1], n) for n, x in zip(names, inputs)]
    outputs, _ = replay(graph, lambda e: twin.get_layer(e.name), lambda e: None, bound=bound)
    new = keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs if not graph.single_output else outputs[0],
                      name=model.name)
    result = Equalized(new)
    for name, (layer_name, c, spread) in plan.items():
        layer = twin.get_layer(layer_name)
        weights = layer.get_weights()
        weights[0] = weights[0] * c.reshape((1,) * (weights[0].ndim - 2) + (-1, 1))
        layer.set_weights(weights)
        result.inputs[real.get(name, name)] = {"layer": layer_name, "row_spread": spread, "factor_max": float(c.max())}
    return result


__all__ = ["MAX_RATIO", "MIN_SPREAD", "Equalized", "equalize", "factors"]
