"""Sparsity phase: tfmot wiring for schedules, patterns, policies, regularisers and per-layer overrides.

Two tfmot pitfalls are handled here rather than left to the user:

* tfmot's wrappers share layer objects with the model they wrap, so the dense model is cloned (with
  its weights) before anything is wrapped: the dense baseline stays dense.
* A schedule only prunes if its steps fall inside training, so ``start``/``end`` (epochs of the
  phase) are translated to steps from the real steps per epoch, and ``end`` is snapped onto the
  mask-update grid so the last update lands exactly on the final sparsity.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgesparse import _tf, progress
from edgesparse._registry import Registry
from edgesparse.errors import ModelError, RecipeError, TrainError
from edgesparse.recipe import LayerOverride, Pattern, SparsityConfig
from edgesparse.task import Task
from edgesparse.train import allocation
from edgesparse.train.coverage import (
    is_attention,
    is_recurrent,
    kernel_variable,
    pruned_matrix,
    pruned_variables,
    pruned_weight_names,
    unwrap,
)
from edgesparse.train.fit import evaluate, scores


@dataclass
class LayerPlan:
    """What the sparsity phase does to one layer."""

    name: str
    kind: str
    params: int
    prune: bool
    target: float = 0.0
    pattern: str = "unstructured"
    note: str = ""
    weights: int = 0  # of the pruned kernel (the allocation's unit of account)
    achieved: float | None = None  # read back from the weights after the phase


@dataclass
class SparsityPlan:
    """The resolved schedule and per-layer decisions, recorded in summary.json."""

    steps_per_epoch: int
    begin_step: int
    end_step: int
    frequency: int
    layers: list[LayerPlan] = field(default_factory=list)
    allocation: str = "uniform"
    final: float | None = None  # the recipe's final: per layer (uniform) or over the pruned kernels (the others)
    planned: float | None = None  # the planned overall sparsity over the pruned kernels
    method: str = "magnitude"  # rigl / set: begin/end/frequency are the drop/grow updates' steps
    drop_fraction: float | None = None  # rigl / set: at the first update, cosine-decayed to 0 at end_step

    def record_achieved(self, layers: dict[str, float]) -> None:
        """Set each pruned layer's achieved sparsity (from :func:`measure_sparsity`'s ``layers``)."""
        for lp in self.layers:
            if lp.name in layers:
                lp.achieved = float(layers[lp.name])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def pruned(self) -> list[LayerPlan]:
        return [lp for lp in self.layers if lp.prune]


def prunable_layers(model: Any) -> list[Any]:
    """Layers of ``model`` of which tfmot's prune registry prunes a weight (see ``train.coverage``)."""
    return [layer for layer in model.layers if pruned_weight_names(layer)[0]]


def kernel_of(layer: Any) -> Any:
    """The weight variable a layer's pruning applies to (its kernel).

    Works through pruning and quantization wrappers, whose ``kernel`` attribute may be a symbolic
    (masked or fake-quantized) tensor rather than the stored variable.
    """
    registered = kernel_variable(layer)
    if registered is None:
        raise ModelError(f"layer '{layer.name}' has no weight that tfmot prunes")
    return registered


# --- patterns: name -> (layer, pattern) -> prune_low_magnitude kwargs, or a reason it can't ------

PatternFn = Callable[[Any, Pattern], tuple[dict[str, Any], str]]
PATTERNS: Registry[PatternFn] = Registry("sparsity pattern", RecipeError)


@PATTERNS.register("unstructured")
def _unstructured(layer: Any, pattern: Pattern) -> tuple[dict[str, Any], str]:
    return {}, ""


@PATTERNS.register("block")
def _block(layer: Any, pattern: Pattern) -> tuple[dict[str, Any], str]:
    assert pattern.shape is not None
    if kernel_of(layer).shape.rank != 2:
        return {}, f"{pattern} applies to 2-D (dense) weights only; pruned unstructured"
    rows, cols = pattern.shape
    if is_recurrent(layer):  # tfmot blocks the kernel and the recurrent kernel alike: both must divide
        ins = [int(v.shape[0]) for v in pruned_variables(layer)]
        n_out = int(kernel_of(layer).shape[1])
        if n_out % rows or any(n % cols for n in ins):
            return {}, (f"{pattern} does not divide {type(layer).__name__} '{layer.name}' (kernel {ins[0]} inputs, "
                        f"recurrent kernel {ins[-1]} units, {n_out} gate outputs); pruned unstructured")
        return {"block_size": (cols, rows)}, ""
    # Recipe blocks are in TFLite's layout (out x in); a Keras Dense kernel is (in x out).
    n_in, n_out = (int(d) for d in kernel_of(layer).shape)
    if n_out == 1 and rows == 1:
        # tfmot's block pooling squeezes a one-output kernel to rank 1 and fails mid-training ("factorized_pool()
        # accepts tensors of rank 2 only"), measured on a Dense(1, sigmoid) detector head
        return {}, (f"{pattern} cannot prune a layer with one output (tfmot's block pooling fails on it); "
                    "pruned unstructured")
    if n_out % rows or n_in % cols:
        # tfmot would silently pad the edge blocks; the converter's block encoding needs whole blocks.
        raise RecipeError(
            f"sparsity: pattern {pattern} does not divide layer '{layer.name}' ({type(layer).__name__}, "
            f"{n_out} outputs x {n_in} inputs; Keras kernel shape ({n_in}, {n_out})): blocks are rows x cols = "
            f"outputs x inputs, so {n_out} must be a multiple of {rows} and {n_in} of {cols}. Choose a block "
            f"that divides it, or give the layer its own pattern: layers: [{{match: \"^{re.escape(layer.name)}$\", "
            "pattern: unstructured}]."
        )
    return {"block_size": (cols, rows)}, ""


@PATTERNS.register("m_by_n")
def _m_by_n(layer: Any, pattern: Pattern) -> tuple[dict[str, Any], str]:
    assert pattern.shape is not None
    layers = _tf.keras().layers
    if not isinstance(layer, (layers.Conv2D, layers.Dense)) or isinstance(layer, layers.DepthwiseConv2D):
        return {}, f"{pattern} applies to Conv2D and Dense layers only; pruned unstructured"
    # tfmot groups N consecutive inputs (TFLite's last axis); with fewer, or a remainder, it prunes nothing at all
    n_in = int(kernel_of(layer).shape[-2])
    if n_in % pattern.shape[1]:
        return {}, f"{pattern} needs inputs in whole groups of {pattern.shape[1]} ({n_in} here); pruned unstructured"
    return {"sparsity_m_by_n": tuple(pattern.shape)}, ""


def _override_for(name: str, overrides: list[LayerOverride]) -> LayerOverride | None:
    """The last override whose regex matches ``name`` (later entries win)."""
    found = None
    for ov in overrides:
        if re.search(ov.match, name):
            found = ov
    return found


def check_overrides_match(model: Any, overrides: list[LayerOverride]) -> None:
    """Refuse per-layer overrides whose regex matches none of the model's prunable layers.

    An override that matches nothing would silently change nothing (a typo in a layer name).

    Raises:
        RecipeError: naming every unmatched override and listing the prunable layers.
    """
    names = [layer.name for layer in prunable_layers(model)]
    unmatched = [ov.match for ov in overrides if not any(re.search(ov.match, n) for n in names)]
    if unmatched:
        others = [layer.name for layer in model.layers if layer.name not in names and layer.weights]
        hint = f" Other layers with weights, which are not pruned: {', '.join(others)}." if others else ""
        raise RecipeError(
            "sparsity.layers: " + ", ".join(f"match '{m}'" for m in unmatched)
            + f" {'matches' if len(unmatched) == 1 else 'match'} no prunable layer of model '{model.name}' "
            f"(the regex is searched in layer names). Prunable layers: {', '.join(names)}.{hint} "
            "Fix the regex or remove the override."
        )


def plan_sparsity(model: Any, cfg: SparsityConfig, steps_per_epoch: int,
                  sensitivity: list[LayerSensitivity] | None = None) -> SparsityPlan:
    """Decide, per layer, whether and how it is pruned, and translate epochs to steps.

    With ``cfg.allocation`` other than ``uniform``, ``cfg.final`` is the overall sparsity over the pruned kernels
    and the per-layer targets come from :mod:`edgesparse.train.allocation` (``global`` ranks the model's current
    weights, so plan on the trained dense model).

    Args:
        model: The dense tf_keras model.
        cfg: The sparsity section.
        steps_per_epoch: Training steps per epoch of the phase.
        sensitivity: For ``allocation: auto``, the rows of :func:`layer_sensitivity` on the validation split;
            without them the plan keeps uniform targets and says the allocation is made after the baseline.

    Returns:
        The plan (per-layer targets, the schedule's steps).

    Raises:
        ModelError: the model has no prunable layer, or none is left after overrides/policy.
        RecipeError: the schedule does not fit the phase (too few steps), an override matches no
            prunable layer, a block pattern does not divide a layer's kernel or cannot meet its allocated
            target, or the allocation cannot meet ``final`` (ceiling, overrides).
    """
    begin, end, freq = _schedule_steps(cfg, steps_per_epoch) if cfg.method == "magnitude" else \
        _update_steps(cfg, steps_per_epoch)
    dynamic = cfg.method != "magnitude"
    plan = SparsityPlan(steps_per_epoch=steps_per_epoch, begin_step=begin, end_step=end, frequency=freq,
                        method=cfg.method, drop_fraction=cfg.update.drop_fraction if dynamic else None)
    prunable = prunable_layers(model)
    if not prunable:
        raise ModelError(
            f"model '{model.name}' has no layer tfmot can prune (Conv, SeparableConv, Dense, Embedding; tfmot "
            "prunes no weight of DepthwiseConv2D). "
            "Remove the sparsity section to train and export it dense."
        )
    check_overrides_match(model, cfg.layers)
    policy_ok = _policy(model, cfg)
    prunable_ids = {id(layer) for layer in prunable}
    layers = {layer.name: layer for layer in model.layers if layer.weights}
    plan.layers = [_layer_plan(layer, cfg, id(layer) in prunable_ids, policy_ok) for layer in layers.values()]
    if not plan.pruned:
        raise ModelError(
            "no layer is left to prune after the overrides and the policy; check `sparsity.layers` "
            "(skip/match) and `sparsity.policy`."
        )
    plan.allocation, plan.final = cfg.allocation, cfg.final
    if cfg.allocation != "uniform":
        _allocate(plan, layers, cfg, sensitivity)
    heads = set(getattr(model, "output_names", []))
    for lp in plan.pruned:
        pattern = _pattern_of(layers[lp.name], cfg)
        if pattern.kind == "block" and lp.pattern == str(pattern) and lp.target > 0:
            thin = _check_blocks_reach_every_output(layers[lp.name], pattern, lp.target, cfg)
            if thin and lp.name in heads:  # a hidden unit emptied is a channel removed; an output unit, a lost target
                lp.pattern, lp.note = "unstructured", "; ".join(x for x in (lp.note, thin) if x)
    total = sum(lp.weights for lp in plan.pruned)
    plan.planned = sum(lp.target * lp.weights for lp in plan.pruned) / total if total else 0.0
    return plan


def _pattern_of(layer: Any, cfg: SparsityConfig) -> Pattern:
    """The pattern the recipe asks for on ``layer`` (its override's, else the section's)."""
    ov = _override_for(layer.name, cfg.layers)
    return ov.pattern if ov is not None and ov.pattern is not None else cfg.pattern


def _slot(layer: Any, lp: LayerPlan, cfg: SparsityConfig) -> allocation.Slot:
    """The allocation's view of a planned layer: its kernel, its units (blocks) and whether its target is fixed."""
    kernel = pruned_matrix(layer)  # a recurrent layer: (inputs + units) x gates*units, so ERK counts the gates
    pattern = _pattern_of(layer, cfg)
    ov = _override_for(layer.name, cfg.layers)
    fixed = ov.final if ov is not None and ov.final is not None else None
    if lp.pattern.startswith("m_by_n"):
        fixed = lp.target  # M:N implies its sparsity
    slot = allocation.Slot(name=lp.name, shape=tuple(int(d) for d in kernel.shape), fixed=fixed,
                           scores=np.abs(kernel).ravel(), pattern=lp.pattern)
    if pattern.kind == "block" and lp.pattern == str(pattern):
        assert pattern.shape is not None
        rows, cols = pattern.shape
        n_in, n_out = kernel.shape
        # tfmot scores a block by its mean |w| (AVG pooling over block_size=(cols, rows) of the in x out kernel)
        slot.scores = np.abs(kernel).reshape(n_in // cols, cols, n_out // rows, rows).mean(axis=(1, 3)).ravel()
        slot.unit, slot.min_kept = rows * cols, n_out // rows
    return slot


def _allocate(plan: SparsityPlan, layers: dict[str, Any], cfg: SparsityConfig,
              sensitivity: list[LayerSensitivity] | None) -> None:
    """Replace the pruned layers' uniform targets by the allocation's (``final`` over the pruned kernels)."""
    pruned = plan.pruned
    slots = [_slot(layers[lp.name], lp, cfg) for lp in pruned]
    if cfg.allocation == "global":
        targets = allocation.global_targets(slots, cfg.final, cfg.max_layer)
    elif cfg.allocation == "erk":
        targets = allocation.erk_targets(slots, cfg.final, cfg.max_layer, cfg.tolerance)
    elif sensitivity is None:
        for lp in pruned:
            lp.note = "; ".join(x for x in (lp.note, "allocation auto: targets set from the sensitivity after the "
                                            "baseline (uniform until then)") if x)
        return
    else:
        curves: dict[str, allocation.Curve] = {}
        for row in sensitivity:
            curve = curves.setdefault(row.layer, allocation.Curve([], []))
            curve.levels.append(row.sparsity)
            curve.drops.append(row.accuracy_drop)
        targets = allocation.auto_targets(slots, curves, cfg.final, cfg.max_layer)
    for lp, slot in zip(pruned, slots):
        lp.target = targets[lp.name]
        if slot.fixed is None:
            lp.note = "; ".join(x for x in (lp.note, f"target from allocation {cfg.allocation}") if x)
        if lp.target == 0.0:
            lp.note = "; ".join(x for x in (lp.note, "kept dense by the allocation (counted in the pruned "
                                            "kernels, not wrapped)") if x)


def _schedule_steps(cfg: SparsityConfig, steps_per_epoch: int) -> tuple[int, int, int]:
    """The schedule's begin, end and frequency in training steps (the end snapped onto the update grid)."""
    begin = int(round(cfg.start * steps_per_epoch))
    end = int(round(cfg.end_epoch * steps_per_epoch))
    freq = min(cfg.frequency, max(1, end - begin))
    # Snap the end onto the update grid so the last mask update reaches the final sparsity.
    end = begin + ((end - begin) // freq) * freq
    if end <= begin:
        raise RecipeError(
            f"sparsity: start={cfg.start:g} and end={cfg.end_epoch:g} epochs give no pruning steps at "
            f"{steps_per_epoch} steps per epoch; widen the window or lower `frequency`."
        )
    return begin, end, freq


def _update_steps(cfg: SparsityConfig, steps_per_epoch: int) -> tuple[int, int, int]:
    """rigl / set: the drop/grow window (0, end) and its frequency in training steps (by default
    :func:`edgesparse.train.dynamic.default_frequency`: about ten updates in the window).

    Raises:
        RecipeError: the window holds no update (``update.end`` is at or before the first ``update.frequency``).
    """
    from edgesparse.train.dynamic import default_frequency

    end = int(round(cfg.update.end_epoch(cfg.epochs) * steps_per_epoch))
    freq = cfg.update.frequency if cfg.update.frequency is not None else default_frequency(end)
    if end <= freq:
        raise RecipeError(
            f"sparsity: method {cfg.method}: update.end={cfg.update.end_epoch(cfg.epochs):g} epochs is {end} steps at "
            f"{steps_per_epoch} steps per epoch, not after the first update at update.frequency={freq} steps: no "
            f"mask would ever be updated. Lower update.frequency (below {end}) or raise update.end / epochs.")
    return 0, end, freq


def _policy(model: Any, cfg: SparsityConfig) -> Callable[[Any], bool]:
    """Which layers the recipe's policy lets tfmot prune (all, or XNNPACK's sparse-inference rule)."""
    if cfg.policy != "xnnpack":
        return lambda layer: True
    policy = _tf.tfmot().sparsity.keras.PruneForLatencyOnXNNPack()
    try:
        policy.ensure_model_supports_pruning(model)
    except ValueError as exc:
        raise ModelError(
            f"policy xnnpack: {exc}. XNNPACK's sparse path needs a float model whose first layer is a "
            "3x3 stride-2 convolution on 3 channels and which ends in global average pooling; "
            "use `policy: all` for other models."
        ) from exc
    allowed: Callable[[Any], bool] = policy.allow_pruning
    return allowed


def _layer_plan(layer: Any, cfg: SparsityConfig, prunable: bool, policy_ok: Callable[[Any], bool]) -> LayerPlan:
    """One layer's decision: pruned (pattern, target) or not, and why."""
    params = int(sum(int(np.prod(w.shape)) for w in layer.weights))
    lp = LayerPlan(name=layer.name, kind=type(layer).__name__, params=params, prune=False)
    if prunable:
        lp.weights = int(sum(int(np.prod(v.shape)) for v in pruned_variables(layer)))
    if not prunable:
        lp.note = "not prunable: " + pruned_weight_names(layer)[1]
        return lp
    ov = _override_for(layer.name, cfg.layers)
    if ov is not None and ov.skip:
        lp.note = f"skipped by override '{ov.match}'"
        return lp
    if not policy_ok(layer):
        lp.note = "skipped by policy xnnpack"
        return lp
    pattern = ov.pattern if ov is not None and ov.pattern is not None else cfg.pattern
    _, reason = PATTERNS.get(pattern.kind)(layer, pattern)
    lp.prune = True
    lp.pattern = "unstructured" if reason else str(pattern)
    lp.note = reason
    kernels = [w for w in layer.weights if len(w.shape) >= 2]
    if is_recurrent(layer):
        lp.note = "; ".join(x for x in (reason, "kernel and recurrent kernel pruned (all gates)") if x)
    elif is_attention(layer):
        lp.note = "; ".join(x for x in (reason, "query/key/value/output projection kernels pruned; every head kept "
                                        "(no channel pruning of attention heads)") if x)
    elif len(kernels) > 1:  # e.g. SeparableConv2D: tfmot prunes the pointwise kernel only
        only = ", ".join(pruned_weight_names(layer)[0])
        lp.note = "; ".join(x for x in (reason, f"tfmot prunes {only} only, the other kernels stay dense") if x)
    lp.target = pattern.fixed_sparsity if pattern.fixed_sparsity is not None and not reason else (
        ov.final if ov is not None and ov.final is not None else cfg.final
    )
    if lp.target == 0.0:
        lp.prune = False
        lp.note = "target sparsity 0"
    return lp


def _check_blocks_reach_every_output(layer: Any, pattern: Pattern, target: float, cfg: SparsityConfig) -> str:
    """Refuse a block target that keeps fewer blocks than the layer has output rows of blocks.

    Then at least one output (a class, for a classifier) keeps no weight at all, whatever the magnitudes
    (measured: block:1x16 at 80% on a 64 x 6 classifier zeroed 2 of 6 classes and test accuracy fell to 82%).

    Returns:
        Why an output layer is pruned unstructured instead, when fewer than two blocks per output row would be kept:
        the layer's one magnitude ranking then easily takes every block of an output whose weights are smaller
        (measured: block:1x16 at 80% on a 128 x 2 regression head kept 3 of 16 blocks, none of output 0, which
        then predicted a constant); else "".
    """
    assert pattern.shape is not None
    if is_recurrent(layer):  # its rows are gate units fed by two kernels, not model outputs: no row is left bare
        return ""
    rows, cols = pattern.shape
    n_in, n_out = (int(d) for d in kernel_of(layer).shape)
    row_groups, per_row = n_out // rows, n_in // cols
    kept = round(row_groups * per_row * (1.0 - target), 6)  # 480 * (1 - 0.8) is 95.99999999999999 in floats
    if kept < row_groups:
        highest = 1.0 - 1.0 / per_row
        by = "" if cfg.allocation == "uniform" else f" (its target from allocation {cfg.allocation})"
        raise RecipeError(
            f"sparsity: {pattern} at {target:.0%}{by} keeps about {kept:.1f} of the {row_groups * per_row} blocks of "
            f"layer '{layer.name}' ({n_out} outputs x {n_in} inputs, {per_row} blocks per output row), fewer than "
            f"its {row_groups} output rows: at least one output would lose every weight. Give the layer a final of "
            f"at most {highest:.2f} or another pattern, e.g. layers: [{{match: \"^{re.escape(layer.name)}$\", "
            f"final: {highest:.2f}}}] or pattern: unstructured.")
    if kept < 2 * row_groups:
        return (f"{pattern} at {target:.0%} keeps about {kept:.1f} blocks for {row_groups} output rows (fewer than 2 "
                "each): one ranking could take every block of a model output; pruned unstructured")
    return ""


def clone_dense(model: Any, regularization: Any | None = None) -> Any:
    """A weight-for-weight copy of ``model`` that shares no layer with it.

    Args:
        model: A functional or sequential tf_keras model.
        regularization: Optional ``RegularizationConfig``; its L1/L2 penalty is added to the
            kernels of the copy's prunable layers.

    Raises:
        ModelError: the model is subclassed (tfmot cannot wrap its layers).
    """
    keras = _tf.keras()

    def clone_layer(layer: Any) -> Any:
        config = layer.get_config()
        pruned = pruned_weight_names(layer)[0]
        if regularization is not None and pruned and (regularization.l1 or regularization.l2):
            reg = keras.regularizers.L1L2(l1=regularization.l1, l2=regularization.l2)
            key = f"{pruned[0]}_regularizer"  # the weight tfmot prunes (pointwise_kernel of SeparableConv)
            if key in config:
                config[key] = keras.regularizers.serialize(reg)
        return layer.__class__.from_config(config)

    try:
        copy = keras.models.clone_model(model, clone_function=clone_layer)
    except ValueError as exc:
        raise ModelError(
            f"model '{model.name}' cannot be cloned layer by layer ({exc}); subclassed models cannot be "
            "pruned by tfmot. Build it with the functional or Sequential API."
        ) from exc
    copy.set_weights(model.get_weights())
    return copy


def apply_pruning(dense: Any, cfg: SparsityConfig, plan: SparsityPlan) -> Any:
    """Wrap the planned layers of a *private copy* of the dense model for pruning.

    Args:
        dense: The dense model; it is not modified (its layers are cloned first).
        cfg: The sparsity section.
        plan: From :func:`plan_sparsity` on the same model.

    Returns:
        A tf_keras model with ``PruneLowMagnitude`` wrappers.
    """
    keras = _tf.keras()
    sparsity = _tf.tfmot().sparsity.keras
    copy = clone_dense(dense, cfg.regularization)
    by_name = {lp.name: lp for lp in plan.layers}

    def schedule(target: float) -> Any:
        if cfg.method != "magnitude":
            # tfmot's step is at least 1 in training, so a window [0, 0] never fires: the masks are the drop/grow
            # callback's alone (edgesparse.train.dynamic), which sets them to the target before the first step
            return sparsity.ConstantSparsity(target, begin_step=0, end_step=0, frequency=1)
        if cfg.schedule == "constant":
            return sparsity.ConstantSparsity(target, begin_step=plan.begin_step, end_step=plan.end_step,
                                             frequency=plan.frequency)
        return sparsity.PolynomialDecay(min(cfg.initial, target), target, plan.begin_step, plan.end_step,
                                        frequency=plan.frequency)

    def wrap(layer: Any) -> Any:
        lp = by_name.get(layer.name)
        if lp is None or not lp.prune or lp.target == 0.0:  # an allocation may keep a pruned-set layer dense
            return layer
        ov = _override_for(layer.name, cfg.layers)
        pattern = ov.pattern if ov is not None and ov.pattern is not None else cfg.pattern
        kwargs, reason = PATTERNS.get(pattern.kind)(layer, pattern)
        if reason or lp.pattern == "unstructured":  # the plan may have fallen back (see its note)
            kwargs = {}
        return sparsity.prune_low_magnitude(layer, pruning_schedule=schedule(lp.target), **kwargs)

    try:
        return keras.models.clone_model(copy, clone_function=wrap)
    except ValueError as exc:
        raise ModelError(f"tfmot could not wrap the model for pruning: {exc}") from exc


def strip(model: Any) -> Any:
    """Remove the pruning wrappers (the zeros stay in the kernels)."""
    return _tf.tfmot().sparsity.keras.strip_pruning(model)


def measure_sparsity(model: Any, names: list[str] | None = None) -> dict[str, Any]:
    """Zeros over the kernels of prunable layers (all of them, or those named).

    Returns:
        ``{"overall": float, "zeros": int, "params": int, "layers": {name: sparsity}}``.
    """
    zeros = total = 0
    layers: dict[str, float] = {}
    for outer in model.layers:
        layer = unwrap(outer)
        if names is not None and layer.name not in names:
            continue
        if not pruned_weight_names(layer)[0]:
            continue
        w = pruned_matrix(outer)
        z = int(np.count_nonzero(w == 0))
        layers[layer.name] = z / w.size
        zeros += z
        total += w.size
    return {"overall": zeros / total if total else 0.0, "zeros": zeros, "params": total, "layers": layers}


def emptied_outputs(model: Any, plan: SparsityPlan) -> list[str]:
    """Warnings for pruned output layers (those giving a model output) with a unit left without any weight.

    Such a unit outputs only its bias whatever the input: a class that can no longer be predicted, a regression
    target that comes out constant. (A hidden unit emptied the same way is a channel removed, and not reported.)
    """
    found = []
    by_name = {getattr(o, "layer", o).name: o for o in model.layers}
    heads = {n.removeprefix("prune_low_magnitude_") for n in getattr(model, "output_names", [])}
    for lp in plan.pruned:
        outer = by_name.get(lp.name)
        if outer is None or lp.name not in heads:
            continue
        w = kernel_of(outer).numpy()
        if w.ndim < 2:
            continue
        per_unit = np.count_nonzero(w.reshape(-1, w.shape[-1]), axis=0)
        empty = np.flatnonzero(per_unit == 0)
        if empty.size:
            units = ", ".join(map(str, empty[:8].tolist())) + (" ..." if empty.size > 8 else "")
            found.append(f"sparsity: output layer '{lp.name}' has {empty.size} of its {w.shape[-1]} units with no "
                         f"weight left (units {units}): "
                         "they output their bias whatever the input. Give the layer a lower final or pattern "
                         f"unstructured (layers: [{{match: \"^{re.escape(lp.name)}$\", final: ...}}]), or skip it.")
    return found


def check_sparsity(measured: dict[str, Any], plan: SparsityPlan, tolerance: float, on_shortfall: str,
                   stage: str = "after pruning") -> list[str]:
    """Compare achieved per-layer sparsity with the plan's targets.

    Returns:
        Warnings (when ``on_shortfall == "warn"``).

    Raises:
        TrainError: a layer is short of its target by more than ``tolerance`` and
            ``on_shortfall == "fail"``.
    """
    problems = []
    for lp in plan.pruned:
        got = measured["layers"].get(lp.name)
        if got is None:
            continue
        # tfmot keeps round(n * (1 - target)) weights: a layer of n weights can miss by half a weight's share
        grain = 0.5 / lp.weights if lp.weights else 0.0
        if got < lp.target - max(tolerance, grain + 1e-9):
            problems.append(f"{lp.name}: {got:.1%} < target {lp.target:.1%}")
    if problems and on_shortfall == "fail":
        raise TrainError(
            f"achieved sparsity {stage} is short of the target by more than {tolerance:.0%} point(s): "
            + "; ".join(problems)
            + ". Pruning steps may fall outside training (check sparsity.start/end/epochs/frequency), or "
            "the model's weights were replaced after pruning. Set `sparsity.on_shortfall: warn` to accept it."
        )
    return [f"sparsity {stage}: {p}" for p in problems]


@dataclass
class LayerSensitivity:
    """One prunable layer's kernel at one unstructured sparsity level, every other weight unchanged.

    ``accuracy`` holds the measured metric (the task's guard metric on validation: the accuracy for a
    classifier, the mae for a regressor ...) and ``accuracy_drop`` its degradation against the unpruned model
    in the metric's unit (points for fractions, relative % for errors; positive = worse), the names the
    channel sensitivity rows use too.
    """

    layer: str
    kind: str
    weights: int
    sparsity: float
    accuracy: float
    accuracy_drop: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def _guard_value(model: Any, x: Any, y: Any, task: Task | None) -> float:
    """The task's guard metric of ``model`` on ``(x, y)`` (top-1 accuracy without a task)."""
    if task is None:
        return evaluate(model, x, y)[0]
    found = scores(model, x, y, task)[0]
    return float(found.get(task.guard_key, found.get(task.metric_key, float("nan"))))


def layer_sensitivity(model: Any, x: Any, y: Any, levels: tuple[float, ...] = (0.5, 0.75, 0.9),
                      base: float | None = None, task: Task | None = None) -> list[LayerSensitivity]:
    """Zero each prunable layer's smallest-magnitude kernel weights alone (no fine-tuning) and measure the metric.

    The layers are those tfmot prunes (:func:`prunable_layers`); each kernel is restored before the next.

    Args:
        model: A trained dense tf_keras model (its weights are restored on return).
        x: Validation inputs (an array, or a dict by input name).
        y: Validation targets.
        levels: Unstructured sparsity levels, fractions of the layer's kernel zeroed.
        base: The unpruned model's metric on ``(x, y)`` when the caller has it (else measured here).
        task: The data's task: its guard metric (:attr:`~edgesparse.task.Task.guard_key`) is measured and
            degraded in its unit; None measures top-1 accuracy and drops in points.

    Returns:
        One row per layer and level, in layer order.
    """
    if base is None:
        base = _guard_value(model, x, y, task)
    rows = []
    layers = prunable_layers(model)
    for i, layer in enumerate(layers, 1):
        var = kernel_of(layer)
        progress.item("unstructured sensitivity", i, len(layers),
                      f"layer {layer.name} ({int(np.prod(var.shape)):,} weights) at sparsity "
                      + ", ".join(f"{lv:g}" for lv in levels))
        original = np.array(var.numpy())
        order = np.argsort(np.abs(original).ravel(), kind="stable")
        try:
            for level in levels:
                pruned = original.ravel().copy()
                pruned[order[:round(level * original.size)]] = 0
                var.assign(pruned.reshape(original.shape))
                value = _guard_value(model, x, y, task)
                drop = 100 * (base - value) if task is None else task.degradation(base, value, task.guard_key)
                rows.append(LayerSensitivity(layer.name, type(layer).__name__, int(original.size), float(level), value,
                                             drop))
        finally:
            var.assign(original)
    return rows
