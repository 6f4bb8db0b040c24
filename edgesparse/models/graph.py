"""A model's layer graph as plain data, read from a Keras 3 or a tf_keras model and rebuilt in either.

Translation (Keras 3 <-> tf_keras) and flattening of nested sub-models share this: a parser turns a
functional or Sequential model into a :class:`Graph` (entries in topological order, each with its live
layer and the calls made on it), and :func:`build` replays those calls with layers a caller makes.
Subclassed models have no such graph and are refused by :func:`is_graph_model`'s callers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgesparse.errors import ModelError


@dataclass(frozen=True)
class Ref:
    """Output ``tensor`` of call number ``node`` of the layer called ``layer``."""

    layer: str
    node: int = 0
    tensor: int = 0


@dataclass
class Call:
    """One call of a layer: positional and keyword arguments, with :class:`Ref` for tensors."""

    args: list[Any]
    kwargs: dict[str, Any]


@dataclass
class Entry:
    """A layer (or Keras 3 operation) of the graph and the calls made on it."""

    name: str
    live: Any
    calls: list[Call] = field(default_factory=list)
    input_spec: tuple[list[Any], str] | None = None  # (batch shape, dtype) for input layers
    node_offset: int = 0  # tf_keras numbers a nested functional model's calls from 1


@dataclass
class Graph:
    """A model as data: entries in call order, the model's inputs and outputs."""

    name: str
    entries: list[Entry]
    inputs: list[Ref]
    outputs: list[Ref]
    single_output: bool = True


def tensor_refs(value: Any) -> list[Ref]:
    """The tensors (as refs) among a call's arguments, in argument order."""
    if isinstance(value, Ref):
        return [value]
    if isinstance(value, (list, tuple)):
        return [r for v in value for r in tensor_refs(v)]
    if isinstance(value, dict):
        return [r for v in value.values() for r in tensor_refs(v)]
    return []


def _io_refs(value: Any) -> list[Ref]:
    """``[name, node, tensor]`` or a list of them (both configs write both forms)."""
    if value and isinstance(value[0], str):
        return [Ref(value[0], int(value[1]), int(value[2]))]
    return [Ref(v[0], int(v[1]), int(v[2])) for v in value]


def _shape(shape: Any) -> list[Any]:
    return [None if d is None else int(d) for d in shape]


# ---- Keras 3 -----------------------------------------------------------------------------------

def _k3_refs(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            return Ref(*value["config"]["keras_history"])
        if value.get("class_name") in ("__numpy__", "__tensor__") and isinstance(value.get("config"), dict):
            # a constant in the graph (e.g. a positional table ``x + pos``): replayed as the same array
            c = value["config"]
            return np.asarray(c["value"], dtype=c.get("dtype") or None)
        return {k: _k3_refs(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_k3_refs(v) for v in value]
    return value



def _sequential_graph(model: Any, spec: Any) -> Graph:
    """A Sequential model (either Keras) as a chain: each layer called on the previous one's output."""
    entries = [Entry("input", None, input_spec=spec)]
    prev = Ref("input")
    for layer in model.layers:
        entries.append(Entry(layer.name, layer, [Call([prev], {})]))
        prev = Ref(layer.name)
    return Graph(model.name, entries, [Ref("input")], [prev])

def graph_keras3(model: Any) -> Graph:
    """Read a Keras 3 functional or Sequential model's graph.

    Raises:
        ModelError: the model has never been built (Sequential without an input shape).
    """
    kind = type(model).__name__
    if kind == "Sequential":
        if not getattr(model, "inputs", None):
            raise ModelError(
                f"the Keras 3 Sequential model '{model.name}' has no input shape yet: start it with "
                "keras.Input(shape) or call it once on data before saving it."
            )
        return _sequential_graph(model, (_shape(model.inputs[0].shape), str(model.inputs[0].dtype)))
    cfg = model.get_config()
    ops = {op.name: op for op in model.operations}
    entries = []
    for lc in cfg["layers"]:
        name = lc.get("name") or lc["config"]["name"]
        if lc["class_name"] == "InputLayer":
            c = lc["config"]
            shape = c.get("batch_shape") or c.get("batch_input_shape")
            entries.append(Entry(name, None, input_spec=(_shape(shape), str(c.get("dtype") or "float32"))))
            continue
        calls = [Call(list(_k3_refs(n.get("args", []))), dict(_k3_refs(n.get("kwargs", {}))))
                 for n in lc["inbound_nodes"]]
        entries.append(Entry(name, ops[name], calls))
    outs = cfg["output_layers"]
    single = (bool(outs) and isinstance(outs[0], str)) or len(outs) == 1
    return Graph(model.name, entries, _io_refs(cfg["input_layers"]), _io_refs(outs), single)


# ---- tf_keras ----------------------------------------------------------------------------------

#: The layer name tf_keras writes for a constant (non-tensor) positional argument of an operation layer.
_CONSTANT = "_CONSTANT_VALUE"


def _tfk_call(node: Any) -> Call:
    """A tf_keras inbound node ``[[name, node, tensor, kwargs], ...]`` as a call."""
    if isinstance(node, dict):  # the newer serialization, written by some tf_keras versions
        return Call(list(_k3_refs(node.get("args", []))), dict(_k3_refs(node.get("kwargs", {}))))
    if node and isinstance(node[0], str):  # TFOpLambda writes a single call unwrapped
        node = [node]
    # a constant first argument (``0.5 - x``) is written as ["_CONSTANT_VALUE", -1, 0.5, kwargs]: keep its value
    refs = [item[2] if item[0] == _CONSTANT else Ref(item[0], int(item[1]), int(item[2])) for item in node]
    kwargs = dict(node[-1][3]) if node and len(node[-1]) > 3 else {}
    for key, value in list(kwargs.items()):
        # tensors passed as keyword arguments are written as {"__keras_tensor__": [...]}-like lists
        if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str) and isinstance(value[1], int):
            kwargs[key] = Ref(value[0], value[1], value[2])
    return Call([refs[0] if len(refs) == 1 else refs], kwargs)


def graph_tf_keras(model: Any) -> Graph:
    """Read a tf_keras functional or Sequential model's graph."""
    if type(model).__name__ == "Sequential":
        shape = model.input_shape
        if isinstance(shape, list):
            shape = shape[0]
        return _sequential_graph(model, (_shape(shape), model.inputs[0].dtype.name if model.inputs else "float32"))
    cfg = model.get_config()
    entries = []
    for lc in cfg["layers"]:
        name = lc["name"]
        if lc["class_name"] == "InputLayer":
            c = lc["config"]
            spec = (_shape(c["batch_input_shape"]), str(c.get("dtype") or "float32"))
            entries.append(Entry(name, None, input_spec=spec))
            continue
        live = model.get_layer(name)
        from tf_keras.src.engine.functional import _should_skip_first_node

        entries.append(Entry(name, live, [_tfk_call(n) for n in lc["inbound_nodes"]],
                             node_offset=1 if _should_skip_first_node(live) else 0))
    outs = cfg["output_layers"]
    single = not isinstance(model.outputs, (list, tuple)) or len(model.outputs) == 1
    return Graph(model.name, entries, _io_refs(cfg["input_layers"]), _io_refs(outs), single)


# ---- rebuilding --------------------------------------------------------------------------------

MakeLayer = Callable[[Entry], Any]

#: Keras 3 records ``training=False`` on recurrent layers' calls that the user never wrote (seen after a
#: Bidirectional). Kept, the flag would freeze the layer in inference mode: dropout off while training, and tfmot's
#: pruning wrapper would never update its masks (the GRU stayed at 0% sparsity). Dropped for these layers.
_RECURRENT = frozenset({"LSTM", "GRU", "SimpleRNN", "RNN", "Bidirectional", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D"})


def _resolve(value: Any, tensors: dict[Ref, Any]) -> Any:
    if isinstance(value, Ref):
        return tensors[value]
    if isinstance(value, list):
        return [_resolve(v, tensors) for v in value]
    if isinstance(value, dict):
        return {k: _resolve(v, tensors) for k, v in value.items()}
    return value


def _flatten(out: Any) -> list[Any]:
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flatten(o)]
    if isinstance(out, dict):
        return [t for k in sorted(out) for t in _flatten(out[k])]
    return [out]


def replay(graph: Graph, make_layer: MakeLayer, make_input: Callable[[Entry], Any],
           bound: list[Any] | None = None) -> tuple[list[Any], list[tuple[Any, Any]]]:
    """Call new layers the way ``graph`` calls its layers.

    Args:
        graph: The source graph.
        make_layer: Returns a callable for an entry (a new layer, an operation or a sub-graph).
        make_input: Returns the input tensor for an input entry (unused for bound inputs).
        bound: Tensors to use for the graph's inputs instead of new inputs (inlining).

    Returns:
        The output tensors, and (new layer, source layer) pairs for weight transfer.
    """
    tensors: dict[Ref, Any] = {}
    if bound is not None:
        for ref, t in zip(graph.inputs, bound):
            tensors[ref] = t
    pairs: list[tuple[Any, Any]] = []
    for entry in graph.entries:
        if entry.input_spec is not None:
            if Ref(entry.name) not in tensors:
                tensors[Ref(entry.name)] = make_input(entry)
            continue
        fn = make_layer(entry)
        for i, call in enumerate(entry.calls):
            args = _resolve(call.args, tensors)
            recurrent = type(entry.live).__name__ in _RECURRENT
            kwargs = {k: v for k, v in _resolve(call.kwargs, tensors).items()
                      if not (k in ("mask", "training") and v is None) and not (k == "training" and recurrent)}
            out = fn(*args, **kwargs)
            for j, t in enumerate(_flatten(out)):
                tensors[Ref(entry.name, i + entry.node_offset, j)] = t
        pairs.append((fn, entry.live))
    return [tensors[r] for r in graph.outputs], pairs


def copy_weights(pairs: list[tuple[Any, Any]], where: str) -> None:
    """Copy each source layer's weights into its new layer, checking the shapes match.

    Raises:
        ModelError: a layer's weights differ in number or shape.
    """
    for new, old in pairs:
        if old is None or not hasattr(new, "set_weights") or new is old:
            continue
        src = old.get_weights()
        dst = new.get_weights()
        if not src and not dst:
            continue
        if len(src) != len(dst) or any(tuple(a.shape) != tuple(b.shape) for a, b in zip(src, dst)):
            raise ModelError(
                f"{where}: layer '{old.name}' ({type(old).__name__}) has weights "
                f"{[tuple(w.shape) for w in src]} but its translation has {[tuple(w.shape) for w in dst]}; "
                "this layer configuration is not supported. Rebuild the model with tf_keras "
                "(`import tf_keras as keras`)."
            )
        new.set_weights(src)
