"""The channel dependency graph of a functional tf_keras model.

It knows nothing of importance, allocation or training. Every tensor's last axis gets a *layout*: for each of
its channels, the id of the prunable *unit* it belongs to. Layers that create channels (Conv1D/Conv2D, Dense,
SeparableConv2D) open new units; pass-through layers (activations, dropout, padding, pooling, channel-preserving
Reshape, BatchNormalization, DepthwiseConv2D — whose channels follow their input) hand the layout on;
Add/Subtract/Multiply/Average/Maximum/Minimum couple their inputs channel by channel (a union-find over
channels); Concatenate joins layouts at their offsets; Flatten repeats a layout once per spatial position.
Removing a unit removes that channel from every layer that holds it, so the model stays consistent.

A *group* is a set of units coupled through their layers (a residual stage is one group). Layers the graph
cannot reason about are *frozen*: their inputs and outputs are never pruned, and the reason is recorded.
The model's inputs and outputs are frozen too (the output layer's units are never pruned).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgesparse.errors import ModelError

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


def _model_calls(model: Any) -> tuple[list[tuple[Any, list[tuple[str, int, int]]]], dict[str, int]]:
    """(layer, its input tensors as (layer, node, tensor) refs) in topological order; calls per layer."""
    config = model.get_config()
    if "layers" not in config or "input_layers" not in config:
        raise ModelError(f"channel pruning needs a functional tf_keras model; '{model.name}' is "
                         f"{type(model).__name__}. Build it with keras.Input(...) and keras.Model(inputs, outputs).")
    calls, counts = [], {}
    for lc in config["layers"]:
        nodes = lc.get("inbound_nodes") or []
        counts[lc["name"]] = max(1, len(nodes))
        refs = [(str(r[0]), int(r[1]), int(r[2])) for r in (nodes[0] if nodes else [])]
        calls.append((model.get_layer(lc["name"]), refs))
    return calls, counts


def build_graph(model: Any) -> ChannelGraph:
    """Walk ``model`` and build its channel dependency graph.

    Args:
        model: A functional tf_keras model (not wrapped for pruning or quantization).

    Returns:
        The graph: every layer's layouts, the prunable groups, the frozen layers with reasons.

    Raises:
        ModelError: the model is not functional.
    """
    b = _Builder()
    calls, counts = _model_calls(model)
    layouts: dict[tuple[str, int], np.ndarray] = {}
    nodes: list[LayerNode] = []
    for layer, refs in calls:
        ins = [layouts[(r[0], r[2])] for r in refs]
        in_shapes = [_shape(t) for t in (layer.input if isinstance(layer.input, list) else [layer.input])] \
            if refs else []
        out_shape = _shape(layer.output)
        if counts[layer.name] > 1:
            node = _frozen(b, layer, ins, out_shape, f"shared layer (called {counts[layer.name]} times)")
        else:
            node = _layer_node(b, layer, ins, in_shapes, out_shape)
        node.in_shapes, node.out_shape = in_shapes, out_shape
        nodes.append(node)
        layouts[(layer.name, 0)] = node.output
    for name in model.output_names:
        b.freeze(name, "model output (its units are the model's outputs)", [layouts[(name, 0)]])
    for name in model.input_names:
        b.freeze(name, "model input", [layouts[(name, 0)]])
    return _finish(b, nodes)


def _frozen(b: _Builder, layer: Any, ins: list[np.ndarray], out_shape: tuple[int | None, ...],
            reason: str) -> LayerNode:
    out = b.new(int(out_shape[-1] or 0) if out_shape else 0)
    b.freeze(layer.name, reason, [*ins, out])
    return LayerNode(layer.name, type(layer).__name__, ins, out, "frozen")


def _layer_node(b: _Builder, layer: Any, ins: list[np.ndarray], in_shapes: list[tuple[int | None, ...]],
                out_shape: tuple[int | None, ...]) -> LayerNode:
    """Layout rules per layer class; anything not understood is frozen with the reason."""
    cls, name, cfg = type(layer).__name__, layer.name, layer.get_config()
    rank = len(out_shape)

    def node(role: str, out: np.ndarray) -> LayerNode:
        return LayerNode(name, cls, ins, out, role)

    if cls == "InputLayer":
        return node("pass", b.new(int(out_shape[-1] or 0)))
    if cfg.get("data_format") == "channels_first":
        return _frozen(b, layer, ins, out_shape, "channels_first data format")
    if cls in PASS_THROUGH and len(ins) == 1:
        return node("pass", ins[0])
    if cls in PRODUCERS and len(ins) == 1:
        if int(cfg.get("groups", 1)) != 1:
            return _frozen(b, layer, ins, out_shape, f"grouped convolution (groups={cfg['groups']})")
        return node("separable" if cls.startswith("Separable") else "producer", b.new(int(out_shape[-1] or 0)))
    if cls in ("DepthwiseConv1D", "DepthwiseConv2D") and len(ins) == 1:
        return node("depthwise", np.repeat(ins[0], int(cfg.get("depth_multiplier", 1))))
    if cls == "BatchNormalization" and len(ins) == 1:
        if not _last_axis(cfg.get("axis", -1), rank):
            return _frozen(b, layer, ins, out_shape, f"normalizes axis {cfg.get('axis')}, not the channel axis")
        return node("bn", ins[0])
    if cls in MERGE:
        full = [lay for lay in ins if len(lay) == out_shape[-1]]
        for other in full[1:]:
            b.union(full[0], other)  # broadcast inputs (one channel) couple nothing
        return node("merge", full[0])
    if cls == "Concatenate":
        if _last_axis(cfg.get("axis", -1), rank):
            return node("concat", np.concatenate(ins))
        for other in ins[1:]:
            b.union(ins[0], other)
        return node("merge", ins[0])
    if cls == "Flatten" and len(ins) == 1:
        positions = int(np.prod([d or 1 for d in in_shapes[0][1:-1]], dtype=np.int64)) if len(in_shapes[0]) > 2 else 1
        return node("flatten", np.tile(ins[0], positions))
    if cls == "Reshape" and len(ins) == 1 and in_shapes[0][-1] == out_shape[-1]:
        return node("reshape", ins[0])
    why = "not a layer the channel graph knows" if cls not in PASS_THROUGH | PRODUCERS | MERGE else \
        f"{len(ins)} inputs"
    if cls == "Reshape":
        why = "reshape that mixes the channel axis"
    return _frozen(b, layer, ins, out_shape, f"{cls}: {why}")


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
        if n.role in ("producer", "separable", "frozen") or (n.role == "pass" and n.cls == "InputLayer"):
            units = np.unique(n.output)
            for u in units[1:].tolist():
                ra, rb = find(int(units[0])), find(u)
                parent[max(ra, rb)] = min(ra, rb)
    for n in nodes:
        if n.role in ("producer", "separable", "depthwise", "bn"):
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
