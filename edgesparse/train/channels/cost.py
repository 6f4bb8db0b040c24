"""Parameters and MACs of a model as functions of which channel units it keeps.

Each layer's cost is a sum of terms ``coef * kept(layout_a) * kept(layout_b)``, where ``kept`` counts the
channels of a layout whose unit is kept; so the cost of any pruning decision is computed without building a
model. MACs count what a TFLite conversion executes (convolutions, depthwise, fully-connected; BatchNorm is
folded away); parameters count what ``model.count_params()`` counts (BatchNorm moving statistics included).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgesparse.train.channels.graph import ChannelGraph, LayerNode


@dataclass
class _Term:
    coef: float
    layouts: tuple[np.ndarray, ...]

    def value(self, keep: np.ndarray) -> float:
        out = self.coef
        for lay in self.layouts:
            out *= float(np.count_nonzero(keep[lay]))
        return out


@dataclass
class CostModel:
    """MACs and parameters of the model under a keep mask (bool per unit)."""

    params_terms: list[_Term] = field(default_factory=list)
    macs_terms: list[_Term] = field(default_factory=list)
    fixed_params: int = 0

    def params(self, keep: np.ndarray) -> int:
        """Parameters (trainable and not) of the model that keeps ``keep``."""
        return round(self.fixed_params + sum(t.value(keep) for t in self.params_terms))

    def macs(self, keep: np.ndarray) -> int:
        """Multiply-accumulates of one inference (batch 1) of the model that keeps ``keep``."""
        return round(sum(t.value(keep) for t in self.macs_terms))

    def cost(self, kind: str, keep: np.ndarray) -> int:
        """``macs`` or ``params``."""
        return self.macs(keep) if kind == "macs" else self.params(keep)


def _positions(shape: tuple[int | None, ...]) -> int:
    return int(np.prod([d or 1 for d in shape[1:-1]], dtype=np.int64)) if len(shape) > 2 else 1


def build_cost_model(model: Any, graph: ChannelGraph) -> CostModel:
    """The cost terms of every layer of ``model`` (whose graph is ``graph``)."""
    cm = CostModel()
    for node in graph.layers:
        layer = model.get_layer(node.name)
        _add_terms(cm, node, layer)
    return cm


def _add_terms(cm: CostModel, node: LayerNode, layer: Any) -> None:
    cfg = layer.get_config()
    pos = _positions(node.out_shape)
    bias = 1.0 if cfg.get("use_bias", False) else 0.0
    k = float(np.prod(cfg.get("kernel_size", (1,))))
    if node.role == "producer":
        cin, cout = node.inputs[0], node.output
        cm.params_terms += [_Term(k, (cin, cout)), _Term(bias, (cout,))]
        cm.macs_terms.append(_Term(pos * k, (cin, cout)))
    elif node.role == "transpose":  # every input position scatters a k-tap kernel: MACs by the input's positions
        cin, cout = node.inputs[0], node.output
        cm.params_terms += [_Term(k, (cin, cout)), _Term(bias, (cout,))]
        cm.macs_terms.append(_Term(_positions(node.in_shapes[0]) * k, (cin, cout)))
    elif node.role == "separable":
        mid = np.repeat(node.inputs[0], int(cfg.get("depth_multiplier", 1)))
        cm.params_terms += [_Term(k, (mid,)), _Term(1.0, (mid, node.output)), _Term(bias, (node.output,))]
        cm.macs_terms += [_Term(pos * k, (mid,)), _Term(pos, (mid, node.output))]
    elif node.role == "depthwise":
        cm.params_terms += [_Term(k, (node.output,)), _Term(bias, (node.output,))]
        cm.macs_terms.append(_Term(pos * k, (node.output,)))
    elif node.role == "bn":
        cm.params_terms.append(_Term(float(len(layer.weights)), (node.output,)))
    else:
        cm.fixed_params += int(layer.count_params())
