"""Which weights tfmot really prunes, and how much of the model that covers.

tfmot decides per layer class which weights its wrapper prunes (its prune registry): Conv and Dense
kernels, only the ``pointwise_kernel`` of SeparableConv, and **no** weight of DepthwiseConv2D in
tfmot 0.8.1. edgesparse asks the registry instead of assuming, so the plan never lists a layer as
pruned whose weights stay dense, and the headline figures are computed from the weights:

* sparsity over the pruned kernels (what the schedule targets),
* sparsity over all parameters (zeros among every weight of the model),
* coverage: pruned-kernel parameters / all parameters.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from edgesparse import _tf

#: Coverage below which the run warns that the headline sparsity concerns a small part of the model.
LOW_COVERAGE = 0.5


def _registry() -> Any:
    return _tf.tfmot_module("python.core.sparsity.keras.prune_registry").PruneRegistry


def pruned_weight_names(layer: Any) -> tuple[list[str], str]:
    """The attribute names of the weights tfmot's wrapper would prune in ``layer``.

    Returns:
        ``(names, reason)``: names is empty when nothing is pruned, and reason then says why.
    """
    prunable_layer = _tf.tfmot_module("python.core.sparsity.keras.prunable_layer")
    keras = _tf.keras()
    kind = type(layer).__name__
    if isinstance(layer, prunable_layer.PrunableLayer):
        return [w.name.split("/")[-1].split(":")[0] for w in layer.get_prunable_weights()], ""
    if isinstance(layer, keras.Model):
        from edgesparse.models.flatten import kept_nested_reason

        return [], kept_nested_reason(layer)
    reg = _registry()
    if layer.__class__ in reg._LAYERS_WEIGHTS_MAP:  # noqa: SLF001 - tfmot has no public accessor
        names = list(reg._LAYERS_WEIGHTS_MAP[layer.__class__])  # noqa: SLF001
        if names:
            return names, ""
        if kind == "DepthwiseConv2D":
            return [], ("tfmot's prune registry lists no prunable weight for DepthwiseConv2D: its depthwise "
                        "kernel stays dense")
        if not layer.weights:
            return [], "no weights"
        return [], f"tfmot's prune registry prunes no weight of {kind}"
    if layer.__class__ in reg._RNN_LAYERS:  # noqa: SLF001 - LSTM/GRU/SimpleRNN: the cell's kernels
        cells = reg._get_rnn_cells(layer)  # noqa: SLF001
        if len(cells) == 1 and cells[0].__class__ in reg._RNN_CELLS_WEIGHTS_MAP:  # noqa: SLF001
            return list(reg._RNN_CELLS_WEIGHTS_MAP[cells[0].__class__]), ""  # noqa: SLF001
        return [], f"{kind} with stacked or custom cells: edgesparse prunes one LSTM/GRU/SimpleRNN cell per layer"
    if isinstance(layer, keras.layers.Bidirectional):
        return [], ("tfmot's prune registry does not prune Bidirectional wrappers: the recurrent layers inside stay "
                    "dense (prune a forward and a go_backwards layer joined by Concatenate instead)")
    if reg.supports(layer):  # attention layers: not planned by edgesparse yet
        return [], f"{kind}: recurrent/attention layers are not pruned by edgesparse yet"
    return [], f"{kind} is not in tfmot's prune registry (custom or unsupported layer)"


def unwrap(layer: Any) -> Any:
    """The layer inside tfmot's pruning/quantization wrappers; a Keras wrapper (Bidirectional, TimeDistributed) is
    returned as it is: its ``.layer`` is an unbuilt template, not the layer that holds the weights."""
    inner = getattr(layer, "layer", None)
    if inner is None or type(layer).__name__ in ("Bidirectional", "TimeDistributed"):
        return layer
    return inner


def _attr_path(obj: Any, dotted: str) -> Any:
    """``obj.a.b`` for ``"a.b"`` (tfmot names MultiHeadAttention's weights ``_query_dense.kernel``), or None."""
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def is_attention(layer: Any) -> bool:
    """Whether ``layer`` (through wrappers) is a MultiHeadAttention whose projection kernels tfmot prunes.

    tfmot's registry prunes the query, key, value and output projection kernels (``(d, heads, key_dim)`` and
    ``(heads, value_dim, d)``); biases, the softmax and the heads themselves are kept (no head is removed).
    """
    inner = unwrap(layer)
    names = pruned_weight_names(inner)[0] if type(inner).__name__ == "MultiHeadAttention" else []
    return bool(names) and all("." in n for n in names)


def is_recurrent(layer: Any) -> bool:
    """Whether ``layer`` (through pruning/quantization wrappers) is an LSTM/GRU/SimpleRNN whose cell tfmot prunes."""
    inner = unwrap(layer)
    return inner.__class__ in _registry()._RNN_LAYERS and bool(pruned_weight_names(inner)[0])  # noqa: SLF001


def pruned_variables(layer: Any) -> list[Any]:
    """Every variable tfmot prunes in ``layer`` (through wrappers): the kernel, and for an LSTM/GRU/SimpleRNN also
    its recurrent kernel (both ``(inputs or units) x gates*units``)."""
    inner = unwrap(layer)
    if is_recurrent(inner):
        return [getattr(inner.cell, n) for n in pruned_weight_names(inner)[0]]
    if is_attention(inner):
        return [v for v in (_attr_path(inner, n) for n in pruned_weight_names(inner)[0]) if v is not None]
    v = kernel_variable(layer)
    return [] if v is None else [v]


def pruned_matrix(layer: Any) -> np.ndarray:
    """The pruned weights of ``layer`` as one matrix: its kernel, or a recurrent layer's kernel stacked on its
    recurrent kernel (``(inputs + units) x gates*units``: the shape ERK and block checks read), or an attention
    layer's four projections as ``inputs x heads*dim`` matrices stacked (the output projection transposed), or as
    one column when their widths differ."""
    if is_attention(layer):
        kernels = [np.asarray(v) for v in pruned_variables(layer)]
        mats = [k.reshape(k.shape[0], -1) for k in kernels[:-1]]
        out = kernels[-1]
        mats.append(out.reshape(-1, out.shape[-1]).T)
        if len({m.shape[1] for m in mats}) == 1:
            return np.concatenate(mats, axis=0)
        return np.concatenate([m.ravel() for m in mats])[:, None]
    return np.concatenate([np.asarray(v) for v in pruned_variables(layer)], axis=0)


def kernel_variable(layer: Any) -> Any | None:
    """The variable tfmot prunes in ``layer`` (through pruning/quantization wrappers), or None."""
    inner = unwrap(layer)
    names, _ = pruned_weight_names(inner)
    if not names:
        return None
    if "." in names[0]:  # MultiHeadAttention: '_query_dense.kernel' (the first of its four projections)
        return _attr_path(inner, names[0])
    for w in layer.weights:
        if w.name.split("/")[-1].split(":")[0] == names[0]:
            return w
    return getattr(inner, names[0], None)


_BOOKKEEPING = re.compile(r"(_min|_max|optimizer_step|mask|threshold|pruning_step)$")


def _model_weights(model: Any) -> list[Any]:
    """Every weight of the model as it computes, without wrapper bookkeeping.

    Pruning wrappers add masks, thresholds and a step counter; quantization wrappers own the wrapped
    layer's kernel (the inner layer then lists only its bias) and add min/max quantizer ranges. Those
    bookkeeping variables are left out; the model's own weights are all counted once.
    """
    out: list[Any] = []
    seen: set[int] = set()
    for layer in model.layers:
        inner = getattr(layer, "layer", None)
        for w in list(layer.weights) + (list(inner.weights) if inner is not None else []):
            base = w.name.split("/")[-1].split(":")[0]
            if id(w) in seen or _BOOKKEEPING.search(base):
                continue
            seen.add(id(w))
            out.append(w)
    return out


def parameter_stats(model: Any, pruned: dict[str, Any]) -> dict[str, Any]:
    """Sparsity and coverage read back from the weights.

    Args:
        model: The (possibly wrapped) model.
        pruned: ``measure_sparsity`` of the layers the plan prunes (their kernels' zeros and parameters).

    Returns:
        ``all_params``, ``all_zeros``, ``sparsity_all_params``, ``pruned_kernel_params``,
        ``pruned_kernel_zeros``, ``sparsity_pruned_kernels`` and ``coverage``.
    """
    weights = _model_weights(model)
    all_params = int(sum(int(np.prod(w.shape)) for w in weights))
    all_zeros = int(sum(int(np.count_nonzero(np.asarray(w) == 0)) for w in weights))
    k_params, k_zeros = int(pruned["params"]), int(pruned["zeros"])
    return {
        "all_params": all_params,
        "all_zeros": all_zeros,
        "sparsity_all_params": all_zeros / all_params if all_params else 0.0,
        "pruned_kernel_params": k_params,
        "pruned_kernel_zeros": k_zeros,
        "sparsity_pruned_kernels": k_zeros / k_params if k_params else 0.0,
        "coverage": k_params / all_params if all_params else 0.0,
    }


def coverage_warning(stats: dict[str, Any], plan: Any | None, top: int = 3) -> str | None:
    """A warning when pruning covers less than half of the parameters, naming the largest others."""
    if stats["coverage"] >= LOW_COVERAGE:
        return None
    unpruned = []
    if plan is not None:
        unpruned = sorted((lp for lp in plan.layers if not lp.prune), key=lambda lp: -lp.params)[:top]
    names = "; ".join(f"{lp.name} ({lp.kind}, {lp.params:,} params): {lp.note or 'not pruned'}" for lp in unpruned)
    return (
        f"pruning covers only {stats['coverage']:.1%} of the model's {stats['all_params']:,} parameters, so "
        f"{stats['sparsity_pruned_kernels']:.1%} sparsity over the pruned kernels is "
        f"{stats['sparsity_all_params']:.1%} over all parameters. Largest unpruned layers: "
        f"{names or 'none listed (no sparsity plan)'}."
    )
