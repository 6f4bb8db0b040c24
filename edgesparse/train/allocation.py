"""Per-layer sparsity targets that meet one overall target over the pruned kernels (``sparsity.allocation``).

The allocation knows nothing of tfmot or Keras: it sees each pruned kernel as a :class:`Slot` (its size, its
shape, the magnitudes of its prunable units) and returns one target per layer, in whole units, so the planned
zeros add up to ``round(final * total)`` weights over all pruned kernels (to within one block where blocks are
involved). tfmot then prunes each layer to its own target (``kept = round(size * (1 - target))`` units).

* ``global``: one ranking of every free layer's units by magnitude (block units by the mean |w| of the block, as
  tfmot's block pooling scores them); the smallest go, subject to a per-layer ceiling (``max_layer``, and for blocks
  at least one block per output row), the ceiling's excess re-ranked over the other layers.
* ``erk``: Erdos-Renyi-Kernel densities (Evci et al. 2020, RigL): the density of a layer is proportional to
  ``sum(kernel dims) / prod(kernel dims)`` (spatial dims included), scaled so the non-zeros meet ``1 - final``;
  layers whose density would exceed 1 are kept dense, layers whose sparsity would exceed ``max_layer`` are held
  at it, and the rest re-scaled (the iterative algorithm of RigL's ``sparse_utils``, with both bounds).
* ``auto``: from the unstructured sensitivity (:func:`edgesparse.train.sparsity.layer_sensitivity`): the measured
  metric drop of each layer, interpolated linearly between the measured levels, and weights removed greedily where
  the predicted drop per weight removed is smallest (on the lower convex hull of each layer's curve).

Fixed slots (an override's ``final``, an M:N pattern) keep their target; the others share what is left.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

import numpy as np

from edgesparse.errors import RecipeError


@dataclass
class Slot:
    """One pruned kernel as the allocation sees it.

    Attributes:
        name: The layer's name.
        shape: The kernel's shape (Keras layout; ERK reads it).
        unit: Weights per prunable unit (1, or the block's R*C).
        fixed: A target the allocation keeps (an override's ``final``, an M:N pattern), else None.
        scores: One magnitude per unit (global reads it), else None.
        min_kept: Units that must stay (1; for blocks, one per output row of blocks).
        pattern: The pattern's name, for messages.
    """

    name: str
    shape: tuple[int, ...]
    unit: int = 1
    fixed: float | None = None
    scores: np.ndarray | None = None
    min_kept: int = 1
    pattern: str = "unstructured"

    @property
    def size(self) -> int:
        """Weights in the kernel."""
        return int(np.prod(self.shape))

    @property
    def units(self) -> int:
        """Prunable units in the kernel."""
        return self.size // self.unit

    def cap(self, max_layer: float) -> int:
        """The most units the ceiling lets go."""
        return max(0, min(int(math.floor(max_layer * self.units + 1e-9)), self.units - self.min_kept))

    def fixed_units(self) -> int:
        """Units a fixed target zeroes, as tfmot rounds it."""
        assert self.fixed is not None
        return self.units - max(int(round(self.units * (1.0 - self.fixed))), 1)


def _budget(slots: list[Slot], final: float) -> tuple[int, int]:
    """Zeros the free slots must hold (weights) and the total weights of every slot.

    Raises:
        RecipeError: the fixed slots alone are sparser than ``final`` overall.
    """
    total = sum(s.size for s in slots)
    fixed = sum(s.fixed_units() * s.unit for s in slots if s.fixed is not None)
    zeros = int(round(final * total)) - fixed
    if zeros < 0:
        names = ", ".join(s.name for s in slots if s.fixed is not None)
        raise RecipeError(
            f"sparsity: the per-layer targets of {names} (overrides, M:N patterns) already zero {fixed:,} of the "
            f"{total:,} pruned weights, more than final={final:g} asks for overall ({round(final * total):,}); "
            "raise final or lower those overrides.")
    return zeros, total


def _unreachable(slots: list[Slot], final: float, max_layer: float, how: str) -> RecipeError:
    free = [s for s in slots if s.fixed is None]
    cap = sum(s.cap(max_layer) * s.unit for s in free)
    total = sum(s.size for s in slots)
    return RecipeError(
        f"sparsity: allocation {how} cannot reach final={final:g} over the pruned kernels: with the per-layer "
        f"ceiling max_layer={max_layer:g} (and at least one block per output row for block patterns) the free "
        f"layers ({', '.join(s.name for s in free) or 'none'}) can hold {cap:,} zeros of the {total:,} weights, plus "
        "what the overrides fix. Raise max_layer, lower final, or lower the overrides' final.")


def global_targets(slots: list[Slot], final: float, max_layer: float) -> dict[str, float]:
    """Per-layer targets from one magnitude ranking across every free slot.

    Args:
        slots: The pruned kernels; free ones need ``scores``.
        final: The overall sparsity over every slot's weights.
        max_layer: The per-layer ceiling.

    Returns:
        ``{name: target}`` for every slot (fixed ones unchanged), whole units per layer.

    Raises:
        RecipeError: the target cannot be met under the ceiling, or the fixed slots exceed it.
    """
    zeros, _ = _budget(slots, final)
    free = [s for s in slots if s.fixed is None]
    chosen: dict[str, int] = {}
    pool = list(free)
    while True:
        left = zeros - sum(chosen[s.name] * s.unit for s in free if s.name in chosen)
        counts = _rank(pool, left)
        over = [s for s in pool if counts[s.name] > s.cap(max_layer)]
        if not over:
            chosen.update(counts)
            break
        for s in over:  # held at the ceiling; its excess is ranked again over the others
            chosen[s.name] = s.cap(max_layer)
        pool = [s for s in pool if s not in over]
        if not pool:
            break
    got = sum(chosen[s.name] * s.unit for s in free)
    if zeros - got >= max((s.unit for s in free), default=1):
        raise _unreachable(slots, final, max_layer, "global")
    return {s.name: (s.fixed if s.fixed is not None else chosen[s.name] / s.units) for s in slots}


def _rank(pool: list[Slot], zeros: int) -> dict[str, int]:
    """Units of each slot among the smallest-magnitude units that together hold ``zeros`` weights."""
    if not pool or zeros <= 0:
        return {s.name: 0 for s in pool}
    scores = np.concatenate([np.abs(np.asarray(s.scores, dtype=np.float64)).ravel() for s in pool])
    owner = np.concatenate([np.full(s.units, i) for i, s in enumerate(pool)])
    sizes = np.concatenate([np.full(s.units, s.unit) for s in pool])
    order = np.argsort(scores, kind="stable")
    taken = order[: int(np.searchsorted(np.cumsum(sizes[order]), zeros, side="right"))]
    counts = np.bincount(owner[taken], minlength=len(pool))
    return {s.name: int(counts[i]) for i, s in enumerate(pool)}


def erk_raw(shape: tuple[int, ...]) -> float:
    """The unnormalised ERK density of a kernel: ``sum(dims) / prod(dims)``."""
    return float(sum(shape)) / float(np.prod(shape))


def erk_densities(slots: list[Slot], final: float, max_layer: float) -> dict[str, float]:
    """Real-valued ERK densities of the free slots (fixed ones excluded), meeting the overall non-zeros.

    Raises:
        RecipeError: the fixed slots exceed the target, or every free slot is bounded and the total is missed.
    """
    zeros, _ = _budget(slots, final)
    free = [s for s in slots if s.fixed is None]
    ones = sum(s.size for s in free) - zeros  # non-zeros the free slots keep
    floor = 1.0 - max_layer
    bound: dict[str, float] = {}
    while True:
        open_ = [s for s in free if s.name not in bound]
        rhs = ones - sum(bound[s.name] * s.size for s in free if s.name in bound)
        divisor = sum(erk_raw(s.shape) * s.size for s in open_)
        if not open_:
            break
        eps = rhs / divisor
        dens = {s.name: eps * erk_raw(s.shape) for s in open_}
        high = [s for s in open_ if dens[s.name] > 1.0]
        if high:  # dense, and the rest scaled up (RigL's loop; all at once: they only grow)
            bound.update({s.name: 1.0 for s in high})
            continue
        low = [s for s in open_ if dens[s.name] < floor]
        if low:  # held at the ceiling's density, and the rest scaled down
            bound.update({s.name: floor for s in low})
            continue
        bound.update(dens)
        break
    kept = sum(bound[s.name] * s.size for s in free)
    if abs(kept - ones) > 1.0:
        raise _unreachable(slots, final, max_layer, "erk")
    return {s.name: bound[s.name] for s in free}


def erk_targets(slots: list[Slot], final: float, max_layer: float, tolerance: float) -> dict[str, float]:
    """Per-layer ERK targets in whole units; block slots rounded to their grid, the others re-scaled around them.

    Args:
        slots: The pruned kernels.
        final: The overall sparsity over every slot's weights.
        max_layer: The per-layer ceiling.
        tolerance: How far a block slot's achievable target may lie from its ERK target.

    Returns:
        ``{name: target}`` for every slot.

    Raises:
        RecipeError: a block pattern cannot meet a layer's ERK target (its grid is too coarse, or it would leave
            an output row without a block), or the overall target cannot be met.
    """
    dens = erk_densities(slots, final, max_layer)
    work = [Slot(**vars(s)) for s in slots]
    for s in work:
        if s.fixed is not None or s.unit == 1:
            continue
        target = 1.0 - dens[s.name]
        units = int(round(target * s.units))
        if units > s.units - s.min_kept:
            raise _block_error(s, target, "it would leave an output row of blocks without a weight")
        if abs(units / s.units - target) > tolerance:
            raise _block_error(s, target, f"its {s.units} blocks reach {units / s.units:.2%} at the nearest, "
                                          f"more than sparsity.tolerance={tolerance:g} away")
        s.fixed = units / s.units  # now fixed: the unstructured layers absorb the rounding
    if any(s.fixed is None for s in work):
        dens = erk_densities(work, final, max_layer)
    out = {s.name: float(s.fixed) for s in work if s.fixed is not None}
    free = [s for s in work if s.fixed is None]
    counts = {s.name: min(int(round((1.0 - dens[s.name]) * s.units)), s.cap(max_layer)) for s in free}
    zeros, _ = _budget(work, final)
    short = zeros - sum(counts.values())
    for s in sorted(free, key=lambda s: -s.size):  # the rounding's remainder, to the largest layers first
        if short == 0:
            break
        step = max(-counts[s.name], min(short, s.cap(max_layer) - counts[s.name]))
        counts[s.name] += step
        short -= step
    out.update({s.name: counts[s.name] / s.units for s in free})
    planned = sum(out[s.name] * s.size for s in work) / sum(s.size for s in work)
    if abs(planned - final) > tolerance:  # every layer fixed or on a block grid: nothing absorbed the rounding
        raise RecipeError(
            f"sparsity: allocation erk plans {planned:.2%} over the pruned kernels, more than sparsity.tolerance="
            f"{tolerance:g} from final={final:g}: every pruned layer has a fixed target or a block pattern, so "
            "none can absorb the rounding to whole blocks. Give one layer an unstructured pattern, e.g. layers: "
            f"[{{match: \"^{re.escape(max(work, key=lambda s: s.size).name)}$\", pattern: unstructured}}].")
    return {s.name: out[s.name] for s in slots}


def _block_error(s: Slot, target: float, why: str) -> RecipeError:
    name = re.escape(s.name)
    return RecipeError(
        f"sparsity: allocation erk gives layer '{s.name}' (kernel {s.shape}, {s.pattern}) a sparsity of {target:.2%}, "
        f"which its block pattern cannot meet: {why}. Give the layer an unstructured pattern or a smaller block, "
        f"e.g. layers: [{{match: \"^{name}$\", pattern: unstructured}}], or fix its sparsity with an override "
        f"(layers: [{{match: \"^{name}$\", final: 0.5}}]; the others are re-balanced), or use allocation: global, "
        "whose ranking works in whole blocks.")


@dataclass
class Curve:
    """One layer's measured drop against sparsity (the unstructured sensitivity), for ``auto``."""

    levels: list[float]
    drops: list[float]


def auto_targets(slots: list[Slot], curves: dict[str, Curve], final: float, max_layer: float) -> dict[str, float]:
    """Per-layer targets with the least predicted drop: greedy over each layer's lower convex hull.

    The drop at sparsity 0 is 0; between measured levels it is interpolated linearly; beyond the highest
    measured level it is extrapolated with the last segment's slope (at least as steep). Segments are taken
    cheapest first (predicted drop per weight removed), the last one partly, so the zeros meet ``final``.

    Raises:
        RecipeError: a free slot has no measured curve, or the target cannot be met under the ceiling.
    """
    zeros, _ = _budget(slots, final)
    free = [s for s in slots if s.fixed is None]
    segments: list[tuple[float, int, str, int]] = []  # (cost per weight, order, name, units)
    for s in free:
        if s.name not in curves:
            raise RecipeError(f"sparsity: allocation auto has no sensitivity measured for layer '{s.name}'")
        pts = _hull(s, curves[s.name], max_layer)
        for i, ((u0, d0), (u1, d1)) in enumerate(itertools.pairwise(pts)):
            if u1 > u0:
                segments.append(((d1 - d0) / ((u1 - u0) * s.unit), i, s.name, u1 - u0))
    by_name = {s.name: s for s in free}
    counts = {s.name: 0 for s in free}
    left = zeros
    for _, _, name, units in sorted(segments, key=lambda t: (t[0], t[1])):
        if left <= 0:
            break
        take = min(units, left // by_name[name].unit)
        counts[name] += take
        left -= take * by_name[name].unit
    if left >= max((s.unit for s in free), default=1):
        raise _unreachable(slots, final, max_layer, "auto")
    return {s.name: (s.fixed if s.fixed is not None else counts[s.name] / s.units) for s in slots}


def _hull(s: Slot, curve: Curve, max_layer: float) -> list[tuple[int, float]]:
    """The lower convex hull of (units zeroed, drop) from 0 to the slot's cap, drops made non-decreasing."""
    cap = s.cap(max_layer)
    pts = [(0, 0.0)]
    best = 0.0
    for lv, d in sorted(zip(curve.levels, curve.drops)):
        u = min(int(round(lv * s.units)), cap)
        best = max(best, float(d))
        if u > pts[-1][0]:
            pts.append((u, best))
    if pts[-1][0] < cap:
        (u0, d0), (u1, d1) = pts[-2] if len(pts) > 1 else (0, 0.0), pts[-1]
        slope = max((d1 - d0) / (u1 - u0), 0.0) if u1 > u0 else 0.0
        pts.append((cap, d1 + slope * (cap - u1)))
    hull: list[tuple[int, float]] = []
    for p in pts:
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], p) <= 0:
            hull.pop()
        hull.append(p)
    return hull


def _cross(a: tuple[int, float], b: tuple[int, float], c: tuple[int, float]) -> float:
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
