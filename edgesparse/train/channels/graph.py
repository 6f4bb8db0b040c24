"""The channel dependency graph of a functional or Sequential tf_keras model.

It knows nothing of importance, allocation or training. The model's layer graph is read by
:mod:`edgesparse.models.graph` (the helper that flattening and Keras 3 translation use), so functional,
Sequential and flattened models are read alike. Every tensor's last axis gets a *layout*: for each of its
channels, the id of the prunable *unit* it belongs to. Layers that create channels (Conv1D/Conv2D, Dense,
SeparableConv2D, Conv1DTranspose/Conv2DTranspose) open new units; pass-through layers (activations, dropout,
padding, pooling, UpSampling, channel-preserving
Reshape, scalar Rescaling, BatchNormalization, DepthwiseConv2D — whose channels follow their input — and
element-wise TensorFlow operations such as ``x + 3.0`` or ``tf.nn.relu6``) hand the layout on;
Add/Subtract/Multiply/Average/Maximum/Minimum and ``tf.math.multiply(x, y)``-like operations on two tensors
couple their inputs channel by channel (a union-find over channels); Concatenate joins layouts at their offsets;
Flatten repeats a layout once per spatial position. Removing a unit removes that channel from every layer that
holds it, so the model stays consistent.

A *group* is a set of units coupled through their layers (a residual stage is one group). Layers the graph
cannot reason about are *frozen*: their inputs and outputs are never pruned, and the reason is recorded.
The model's inputs and outputs are frozen too (the output layer's units are never pruned).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgesparse.errors import ModelError
from edgesparse.models.graph import Call, Entry, Graph, Ref, graph_tf_keras, tensor_refs
from edgesparse.models.keras3 import is_graph_model

#: Layers that hand their input layout on unchanged (element-wise or spatial-only).
PASS_THROUGH = {
    "Activation", "ReLU", "LeakyReLU", "ELU", "ThresholdedReLU", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
    "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization", "ZeroPadding1D", "ZeroPadding2D",
    "Cropping1D", "Cropping2D", "UpSampling1D", "UpSampling2D", "MaxPooling1D", "MaxPooling2D", "AveragePooling1D",
    "AveragePooling2D", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D",
    "GlobalMaxPooling2D", "InputLayer",
}
MERGE = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"}
#: Layers whose output channels are new units (weights ``kernel[..., in, out]``).
PRODUCERS = {"Conv1D", "Conv2D", "Dense", "SeparableConv1D", "SeparableConv2D"}
#: Transposed convolutions (up-sampling): new units too, but their kernel is ``[..., out, in]``.
TRANSPOSED = {"Conv1DTranspose", "Conv2DTranspose"}
#: ``Activation`` settings whose every output depends on all channels (a removed channel would still count).
CHANNEL_MIXING_ACTIVATIONS = {"softmax", "log_softmax"}
#: Layers that wrap one TensorFlow operation (tf_keras writes ``x + 3.0`` in a functional model as one).
TF_OP_LAYERS = {"TFOpLambda"}
#: Element-wise operations of one tensor: zero stays finite, each channel only reads itself.
TF_UNARY = {"nn.relu", "nn.relu6", "nn.elu", "nn.selu", "nn.leaky_relu", "nn.gelu", "nn.silu", "nn.swish",
            "math.sigmoid", "nn.sigmoid", "math.tanh", "nn.tanh", "math.negative", "math.abs", "math.square",
            "math.sqrt", "math.exp", "math.softplus", "nn.softplus", "math.softsign", "nn.softsign", "identity",
            "math.round", "math.floor", "math.ceil", "cast", "clip_by_value"}
#: Element-wise operations of two operands (a tensor and a constant, or two broadcastable tensors).
TF_BINARY = {"__operators__.add", "math.add", "math.add_v2", "math.subtract", "math.multiply", "math.maximum",
             "math.minimum", "math.truediv", "math.divide", "math.divide_no_nan", "math.multiply_no_nan"}
#: Of those, the ones whose second operand may only be a constant (a removed channel would be divided by).
TF_DIVISIONS = {"math.truediv", "math.divide"}
#: Layers the graph recognises but cannot prune through, with the reason.
KNOWN_FROZEN = {
    "LayerNormalization": "normalizes over the channels (every output reads all of them)",
    "Normalization": "per-channel statistics of its input (kept whole)",
    "Softmax": "mixes the channels",
    "Lambda": "Python code the graph cannot read",
    "SlicingOpLambda": "slices the tensor (channels may be selected by position)",
    "Functional": "nested model (flatten it with edgesparse.models.flatten.flatten_nested to prune inside it)",
    "Sequential": "nested model (flatten it with edgesparse.models.flatten.flatten_nested to prune inside it)",
}


@dataclass
class LayerNode:
    """One layer call: its class, the layouts (unit id per channel) of its inputs and its output."""

    name: str
    cls: str
    inputs: list[np.ndarray]
    output: np.ndarray
    role: str  # producer | depthwise | separable | bn | pass | merge | concat | flatten | reshape | frozen
    in_shapes: list[tuple[int | None, ...]] = field(default_factory=list)
    out_shape: tuple[int | None, ...] = ()


@dataclass
class Group:
    """Units coupled through their layers: pruning one channel of the group removes it from all of them."""

    name: str
    units: np.ndarray  # prunable unit ids
    layers: list[str]  # layers whose output channels (or per-channel weights) belong to the group
    frozen_units: int = 0


@dataclass
class ChannelGraph:
    """The dependency graph: layer layouts, prunable groups and what was frozen (with reasons)."""

    layers: list[LayerNode]
    num_units: int
    frozen: np.ndarray  # bool per unit
    groups: list[Group]
    frozen_layers: dict[str, str]  # layer name -> why its channels are never pruned

    def node(self, name: str) -> LayerNode:
        """The node of layer ``name``."""
        for n in self.layers:
            if n.name == name:
                return n
        raise KeyError(name)

    def describe(self) -> dict[str, Any]:
        """Groups (name, layers, prunable channels) and frozen layers, JSON-ready."""
        return {"groups": [{"name": g.name, "layers": g.layers, "channels": len(g.units)} for g in self.groups],
                "frozen": dict(self.frozen_layers)}


class _Builder:
    """Union-find over channels while the layers are walked in topological order."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.frozen: set[int] = set()
        self.reasons: dict[str, str] = {}

    def new(self, n: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return np.arange(start, start + n, dtype=np.int64)

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, xs: np.ndarray, ys: np.ndarray) -> None:
        for a, b in zip(xs.tolist(), ys.tolist(), strict=True):
            ra, rb = self.find(a), self.find(b)
            if ra != rb:
                self.parent[max(ra, rb)] = min(ra, rb)

    def freeze(self, name: str, reason: str, layouts: list[np.ndarray]) -> None:
        self.reasons.setdefault(name, reason)
        for lay in layouts:
            self.frozen.update(lay.tolist())


def _shape(tensor: Any) -> tuple[int | None, ...]:
    return tuple(None if d is None else int(d) for d in tensor.shape)


def _last_axis(axis: Any, rank: int) -> bool:
    """Whether a layer's ``axis`` setting means the last (channel) axis."""
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            return False
        axis = axis[0]
    return int(axis) in (-1, rank - 1)


def _source_graph(model: Any) -> Graph:
    """The model's layer graph, read by the helper that flattening and translation use too.

    Raises:
        ModelError: a subclassed model, or a Sequential model without an input shape.
    """
    if not is_graph_model(model):
        raise ModelError(f"channel pruning needs a functional or Sequential tf_keras model; '{model.name}' is "
                         f"{type(model).__name__}. Build it with keras.Input(...) and keras.Model(inputs, outputs) "
                         "or keras.Sequential.")
    if not getattr(model, "inputs", None):
        raise ModelError(f"the Sequential model '{model.name}' has no input shape yet: start it with "
                         "keras.Input(shape) or call model.build((None, ...)) before channel pruning.")
    return graph_tf_keras(model)


def _call_outputs(entry: Entry, call: int) -> list[tuple[int | None, ...]]:
    """Shapes of the output tensors of call ``call`` of ``entry``'s layer."""
    out = entry.live.get_output_at(call + entry.node_offset)
    return [_shape(t) for t in (out if isinstance(out, (list, tuple)) else [out])]


def build_graph(model: Any) -> ChannelGraph:
    """Walk ``model`` and build its channel dependency graph.

    Args:
        model: A functional or Sequential tf_keras model (not wrapped for pruning or quantization); nested
            sub-models are one frozen layer (:func:`edgesparse.models.flatten.flatten_nested` inlines them).

    Returns:
        The graph: every layer's layouts, the prunable groups, the frozen layers with reasons.

    Raises:
        ModelError: the model is subclassed, or a Sequential model without an input shape.
    """
    source = _source_graph(model)
    b = _Builder()
    tensors: dict[Ref, tuple[np.ndarray, tuple[int | None, ...]]] = {}
    nodes: list[LayerNode] = []
    for entry in source.entries:
        if entry.input_spec is not None:
            shape = tuple(entry.input_spec[0])
            tensors[Ref(entry.name)] = (b.new(int(shape[-1] or 0) if shape else 0), shape)
            continue
        nodes.append(_entry_node(b, entry, tensors))
    for ref in source.outputs:
        b.freeze(ref.layer, "model output (its units are the model's outputs)", [tensors[ref][0]])
    for ref in source.inputs:
        b.freeze(ref.layer, "model input", [tensors[ref][0]])
    return _finish(b, nodes)


def _entry_node(b: _Builder, entry: Entry, tensors: dict[Ref, tuple[np.ndarray, tuple[int | None, ...]]]
                ) -> LayerNode:
    """The node of one layer; its output layouts are recorded in ``tensors`` for the layers after it."""
    cls, nodes = type(entry.live).__name__, []
    for i, call in enumerate(entry.calls):
        refs = tensor_refs([call.args, call.kwargs])
        ins, in_shapes = [tensors[r][0] for r in refs], [tensors[r][1] for r in refs]
        out_shapes = _call_outputs(entry, i)
        if len(entry.calls) > 1 or len(out_shapes) > 1:
            why = f"shared layer (called {len(entry.calls)} times)" if len(entry.calls) > 1 else \
                f"{len(out_shapes)} outputs"
            outs = [b.new(int(s[-1] or 0) if s else 0) for s in out_shapes]
            b.freeze(entry.name, f"{cls}: {why}", [*ins, *outs])
            node = LayerNode(entry.name, cls, ins, outs[0], "frozen")
        else:
            node = _layer_node(b, entry.live, call, ins, in_shapes, out_shapes[0])
            outs = [node.output]
        node.in_shapes, node.out_shape = in_shapes, out_shapes[0]
        nodes.append(node)
        for j, (lay, shape) in enumerate(zip(outs, out_shapes, strict=True)):
            tensors[Ref(entry.name, i + entry.node_offset, j)] = (lay, shape)
    # one node per layer (a shared layer's first call stands for all: it is frozen, its weights untouched)
    return nodes[0] if nodes else LayerNode(entry.name, cls, [], np.zeros(0, dtype=np.int64), "frozen")


def _frozen(b: _Builder, name: str, cls: str, ins: list[np.ndarray], out_shape: tuple[int | None, ...],
            reason: str) -> LayerNode:
    out = b.new(int(out_shape[-1] or 0) if out_shape else 0)
    b.freeze(name, reason, [*ins, out])
    return LayerNode(name, cls, ins, out, "frozen")


def _passes(cls: str, cfg: dict[str, Any], rank: int) -> bool:
    """Whether a layer of ``cls`` hands each channel on by itself (element-wise or spatial-only)."""
    if cls in PASS_THROUGH:
        return not (cls == "Activation" and str(cfg.get("activation")) in CHANNEL_MIXING_ACTIVATIONS)
    if cls == "Rescaling":  # one scale and offset for every channel
        return int(np.size(cfg.get("scale", 1.0))) == 1 and int(np.size(cfg.get("offset", 0.0))) == 1
    if cls == "Permute":
        return list(cfg.get("dims", []))[-1:] == [rank - 1]
    return False


def _layer_node(b: _Builder, layer: Any, call: Call, ins: list[np.ndarray], in_shapes: list[tuple[int | None, ...]],
                out_shape: tuple[int | None, ...]) -> LayerNode:
    """Layout rules per layer class; anything not understood is frozen with the reason."""
    cls, name, cfg = type(layer).__name__, layer.name, layer.get_config()
    rank = len(out_shape)

    def node(role: str, out: np.ndarray) -> LayerNode:
        return LayerNode(name, cls, ins, out, role)

    if cfg.get("data_format") == "channels_first":
        return _frozen(b, name, cls, ins, out_shape, "channels_first data format")
    if cls in TF_OP_LAYERS:
        return _op_node(b, layer, call, ins, out_shape)
    if len(ins) == 1 and _passes(cls, cfg, rank):
        return node("pass", ins[0])
    if cls in PRODUCERS and len(ins) == 1:
        if int(cfg.get("groups", 1)) != 1:
            return _frozen(b, name, cls, ins, out_shape, f"grouped convolution (groups={cfg['groups']})")
        return node("separable" if cls.startswith("Separable") else "producer", b.new(int(out_shape[-1] or 0)))
    if cls in TRANSPOSED and len(ins) == 1:
        return node("transpose", b.new(int(out_shape[-1] or 0)))
    if cls in ("DepthwiseConv1D", "DepthwiseConv2D") and len(ins) == 1:
        return node("depthwise", np.repeat(ins[0], int(cfg.get("depth_multiplier", 1))))
    if cls == "BatchNormalization" and len(ins) == 1:
        if not _last_axis(cfg.get("axis", -1), rank):
            return _frozen(b, name, cls, ins, out_shape, f"normalizes axis {cfg.get('axis')}, not the channel axis")
        return node("bn", ins[0])
    if cls in MERGE:
        return _merge(b, name, cls, ins, out_shape)
    if cls == "Concatenate":
        if _last_axis(cfg.get("axis", -1), rank):
            return node("concat", np.concatenate(ins))
        return _merge(b, name, cls, ins, out_shape)
    if cls == "Flatten" and len(ins) == 1:
        positions = int(np.prod([d or 1 for d in in_shapes[0][1:-1]], dtype=np.int64)) if len(in_shapes[0]) > 2 else 1
        return node("flatten", np.tile(ins[0], positions))
    if cls == "Reshape" and len(ins) == 1 and in_shapes[0][-1] == out_shape[-1]:
        return node("reshape", ins[0])
    return _frozen(b, name, cls, ins, out_shape, f"{cls}: {_frozen_why(cls, cfg, len(ins))}")


def _frozen_why(cls: str, cfg: dict[str, Any], inputs: int) -> str:
    """Why a layer of ``cls`` is frozen, for the frozen-layers list."""
    if cls in KNOWN_FROZEN:
        return KNOWN_FROZEN[cls]
    if cls == "Activation":
        return f"activation {cfg.get('activation')} mixes the channels"
    if cls == "Reshape":
        return "reshape that mixes the channel axis"
    if cls == "Rescaling":
        return "per-channel scale or offset"
    if cls == "Permute":
        return "moves the channel axis"
    if cls in PASS_THROUGH | PRODUCERS | TRANSPOSED | MERGE:
        return f"{inputs} inputs"
    return "not a layer the channel graph knows"


def _merge(b: _Builder, name: str, cls: str, ins: list[np.ndarray], out_shape: tuple[int | None, ...]) -> LayerNode:
    """Element-wise merge: the inputs that hold all the output's channels are coupled channel by channel."""
    full = [lay for lay in ins if len(lay) == out_shape[-1]]
    if not full:
        return _frozen(b, name, cls, ins, out_shape, f"{cls}: no input has the output's channels")
    for other in full[1:]:
        b.union(full[0], other)  # broadcast inputs (one channel) couple nothing
    return LayerNode(name, cls, ins, full[0], "merge")


def _op_node(b: _Builder, layer: Any, call: Call, ins: list[np.ndarray], out_shape: tuple[int | None, ...]
             ) -> LayerNode:
    """A TensorFlow operation as a layer (tf_keras writes ``x + 3.0`` or ``tf.nn.relu6(x)`` as TFOpLambda)."""
    cls, name, fn = type(layer).__name__, layer.name, str(layer.get_config().get("function"))
    if fn in TF_UNARY and len(ins) == 1:
        return LayerNode(name, cls, ins, ins[0], "pass")
    if fn in TF_BINARY and ins:
        first = call.args[0] if call.args else None
        if fn in TF_DIVISIONS and not (isinstance(first, Ref) and not isinstance(call.kwargs.get("y"), Ref)):
            # a removed channel is zero in the masked model: dividing by it gives inf, not a removable zero
            return _frozen(b, name, cls, ins, out_shape, f"tf.{fn}: divides by a tensor")
        if len(ins) == 1:
            return LayerNode(name, cls, ins, ins[0], "pass")  # the other operand is a constant
        return _merge(b, name, f"tf.{fn}", ins, out_shape)
    return _frozen(b, name, cls, ins, out_shape, f"tf.{fn}: not an element-wise operation the channel graph knows")


def _finish(b: _Builder, nodes: list[LayerNode]) -> ChannelGraph:
    """Resolve channels to units (union-find roots), and units to groups."""
    roots = np.array([b.find(i) for i in range(len(b.parent))], dtype=np.int64)
    uniq, unit_of = np.unique(roots, return_inverse=True)
    frozen = np.zeros(len(uniq), dtype=bool)
    if b.frozen:
        frozen[unit_of[np.fromiter(b.frozen, dtype=np.int64)]] = True
    for n in nodes:
        n.inputs = [unit_of[lay] for lay in n.inputs]
        n.output = unit_of[n.output]
    groups = _groups(nodes, len(uniq), frozen)
    return ChannelGraph(layers=nodes, num_units=len(uniq), frozen=frozen, groups=groups, frozen_layers=b.reasons)


def _groups(nodes: list[LayerNode], num_units: int, frozen: np.ndarray) -> list[Group]:
    """Units opened by one producer, merged where layers couple them, form a group."""
    parent = list(range(num_units))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    owners: dict[int, list[str]] = {}
    for n in nodes:
        if n.role in ("producer", "separable", "transpose", "frozen"):
            units = np.unique(n.output)
            for u in units[1:].tolist():
                ra, rb = find(int(units[0])), find(u)
                parent[max(ra, rb)] = min(ra, rb)
    for n in nodes:
        if n.role in ("producer", "separable", "transpose", "depthwise", "bn"):
            for u in np.unique(n.output).tolist():
                owners.setdefault(find(u), [])
                if n.name not in owners[find(u)]:
                    owners[find(u)].append(n.name)
    members: dict[int, list[int]] = {}
    for u in range(num_units):
        members.setdefault(find(u), []).append(u)
    groups = []
    for root, member_units in members.items():
        arr = np.array(member_units, dtype=np.int64)
        prunable = arr[~frozen[arr]]
        layers = owners.get(root, [])
        if len(prunable) and layers:
            groups.append(Group(name=layers[0], units=prunable, layers=layers,
                                frozen_units=len(arr) - len(prunable)))
    return groups
