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
from edgesparse.models.graph import Graph, graph_tf_keras, replay, tensor_refs

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


def _first_layers(graph: Graph) -> dict[str, Any]:
    """Input name -> the Dense/Conv layer that consumes it directly, where the input has no other consumer and the
    layer is called once, on that input alone, with channels last (anything else is left as it is)."""
    consumers: dict[str, list[tuple[Any, list[str]]]] = {ref.layer: [] for ref in graph.inputs}
    for entry in graph.entries:
        for call in entry.calls:
            sources = [r.layer for r in tensor_refs([call.args, call.kwargs])]
            for name in set(sources) & set(consumers):
                consumers[name].append((entry, sources))
    out = {}
    for name, users in consumers.items():
        if len(users) != 1:
            continue
        entry, sources = users[0]
        layer = entry.live
        channels_last = getattr(layer, "data_format", "channels_last") == "channels_last"
        if (type(layer).__name__ in _KERNELS and len(entry.calls) == 1 and sources == [name]
                and getattr(layer, "groups", 1) == 1 and channels_last):
            out[name] = layer
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
    c[live] /= c[live].min()  # the features with the largest rows keep their scale; pruned-away ones keep 1
    return c.astype(np.float32)


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
    specs = {e.name: e.input_spec for e in graph.entries if e.input_spec is not None}
    ranges = _ranges(representative, names)
    plan = {}
    for name, layer in _first_layers(graph).items():
        weights = layer.get_weights()
        if name not in ranges or name not in specs or any(d is None for d in specs[name][0][1:]) or not weights:
            continue  # unknown (variable) input dimensions: the reshape that holds the multiply needs them
        if weights[0].shape[-2] != ranges[name].shape[0]:
            continue
        c = factors(weights[0], ranges[name])
        if c is not None:
            plan[name] = (layer, c, _spread(weights[0]))
    if not plan:
        return None
    return _rebuild(model, graph, names, specs, plan)


def _rebuild(model: Any, graph: Graph, names: list[str], specs: dict[str, Any],
             plan: dict[str, tuple[Any, np.ndarray, float]]) -> Equalized:
    """The model's graph replayed on scaled inputs, on a copy of its layers (a layer whose config does not rebuild
    it, e.g. a custom layer without ``get_config``, is shared instead; the model itself is never changed) with the
    planned first layers' kernel rows rescaled."""
    keras = _tf.keras()

    def clone_or_share(layer: Any) -> Any:
        try:
            return type(layer).from_config(layer.get_config())
        except Exception:  # noqa: BLE001  (any failure to rebuild: share the layer, it is only called again)
            return layer

    twin = keras.models.clone_model(model, clone_function=clone_or_share)
    twin.set_weights(model.get_weights())
    for layer, c, _ in plan.values():
        copy = twin.get_layer(layer.name)
        weights = layer.get_weights()
        weights[0] = weights[0] * c.reshape((1,) * (weights[0].ndim - 2) + (-1, 1))
        copy.set_weights(weights)
    # the model's own input names (a Sequential's graph calls its input "input"): the .tflite signature keeps them
    real = dict(zip(names, model.input_names)) if len(model.input_names) == len(names) else {}
    inputs = [keras.Input(batch_shape=tuple(specs[n][0]), dtype=specs[n][1], name=real.get(n, n)) for n in names]
    bound = [x if n not in plan else _scaled(keras, x, plan[n][1], n) for n, x in zip(names, inputs)]
    outputs, _ = replay(graph, lambda e: twin.get_layer(e.name), lambda e: None, bound=bound)
    new = keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs if not graph.single_output else outputs[0],
                      name=model.name)
    result = Equalized(new)
    for name, (layer, c, spread) in plan.items():
        result.inputs[real.get(name, name)] = {"layer": layer.name, "row_spread": spread, "factor_max": float(c.max())}
    return result


__all__ = ["MAX_RATIO", "MIN_SPREAD", "Equalized", "equalize", "factors"]
