"""Allocation: how many channels each group loses, to meet a target.

* ``uniform``: the same ratio in every group (a fixed ``ratio``, or the smallest ratio that meets a MACs or
  parameters target, found by bisection);
* ``global``: one ranking of every prunable unit by importance (scores are mean-normalized per layer), the
  least important removed first until the target is met, each group keeping its floor (``min_keep``);
* ``auto``: per-group ratios from a sensitivity analysis (each group pruned alone, the validation loss it
  costs measured): greedily the step with the least predicted loss per MAC (or parameter) saved, no group
  beyond the largest ratio measured (``sensitivity_ratios``).

Within a group the least important units go first. A target no allocation can reach raises a
:class:`~edgesparse.errors.TrainError` naming the smallest reachable value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgesparse.errors import TrainError
from edgesparse.train.channels.cost import CostModel
from edgesparse.train.channels.graph import ChannelGraph, Group

#: Ratio steps ``auto`` moves a group by.
AUTO_STEP = 1 / 16


@dataclass
class Target:
    """``kind``: macs | params (a fraction of the dense model's) or ratio (channels removed per group)."""

    kind: str
    value: float


def removable(group: Group, min_keep: float) -> int:
    """How many of the group's units may go (each group keeps ``min_keep`` of them, at least one)."""
    n = len(group.units)
    return max(0, n - max(1, math.ceil(min_keep * n)))


def keep_for_ratios(graph: ChannelGraph, scores: np.ndarray, ratios: list[float], min_keep: float,
                    multiple: int = 1) -> np.ndarray:
    """Keep mask when group ``i`` loses ``ratios[i]`` of its units, least important first.

    With ``multiple`` > 1 each group keeps a multiple of it (the nearest; all of a group smaller than it):
    CPU kernels run channel counts that fill their SIMD registers faster.
    """
    keep = np.ones(graph.num_units, dtype=bool)
    for group, ratio in zip(graph.groups, ratios, strict=True):
        n = len(group.units)
        k = min(round(ratio * n), removable(group, min_keep))
        if multiple > 1 and k > 0:
            k = n - min(n, max(multiple, round((n - k) / multiple) * multiple))
        if k > 0:
            order = group.units[np.argsort(scores[group.units], kind="stable")]
            keep[order[:k]] = False
    return keep


def _unreachable(target: Target, smallest: float, how: str) -> TrainError:
    return TrainError(
        f"channels target {{{target.kind}: {target.value:g}}} cannot be reached: {how} the smallest reachable "
        f"{target.kind} is {smallest:.3f} of the dense model's. Raise the target to at least "
        f"{math.ceil(smallest * 100) / 100:g}, lower channels.min_keep, or make more layers prunable (frozen layers "
        "are listed in the summary).")


def uniform(graph: ChannelGraph, scores: np.ndarray, cost: CostModel, target: Target, min_keep: float, *,
            multiple: int = 1) -> np.ndarray:
    """Same ratio everywhere; for a cost target, the smallest ratio that meets it."""
    if target.kind == "ratio":
        return keep_for_ratios(graph, scores, [target.value] * len(graph.groups), min_keep, multiple)
    full = cost.cost(target.kind, np.ones(graph.num_units, dtype=bool))
    goal = target.value * full

    def at(r: float) -> np.ndarray:
        return keep_for_ratios(graph, scores, [r] * len(graph.groups), min_keep, multiple)

    if cost.cost(target.kind, at(1.0)) > goal:
        raise _unreachable(target, cost.cost(target.kind, at(1.0)) / full, "with every group at its floor")
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if cost.cost(target.kind, at(mid)) <= goal else (mid, hi)
    return at(hi)


def global_ranking(graph: ChannelGraph, scores: np.ndarray, cost: CostModel, target: Target,
                   min_keep: float) -> np.ndarray:
    """Remove the globally least important units (each group above its floor) until the target is met."""
    caps = {i: removable(g, min_keep) for i, g in enumerate(graph.groups)}
    owner = np.full(graph.num_units, -1)
    for i, g in enumerate(graph.groups):
        owner[g.units] = i
    candidates = np.concatenate([g.units for g in graph.groups]) if graph.groups else np.zeros(0, dtype=np.int64)
    order, taken = [], dict.fromkeys(caps, 0)
    for u in candidates[np.argsort(scores[candidates], kind="stable")].tolist():
        if taken[owner[u]] < caps[owner[u]]:
            taken[owner[u]] += 1
            order.append(u)

    def at(k: int) -> np.ndarray:
        keep = np.ones(graph.num_units, dtype=bool)
        keep[order[:k]] = False
        return keep

    if target.kind == "ratio":
        return at(min(len(order), round(target.value * len(candidates))))
    full = cost.cost(target.kind, at(0))
    if cost.cost(target.kind, at(len(order))) > target.value * full:
        raise _unreachable(target, cost.cost(target.kind, at(len(order))) / full, "with every group at its floor")
    lo, hi = 0, len(order)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if cost.cost(target.kind, at(mid)) <= target.value * full else (mid + 1, hi)
    return at(hi)


def predicted_at(ratios: list[float], losses: list[float], r: float) -> float:
    """Loss increase at ratio ``r``: piecewise linear through (0, 0) and the measured points (negative values
    count as 0), extended past the largest measured ratio along its last segment (never flat: removing more
    channels than measured is not free)."""
    xs, ys = [0.0, *ratios], [0.0, *[max(0.0, v) for v in losses]]
    if r <= xs[-1]:
        return float(np.interp(r, xs, ys))
    slope = max(0.0, (ys[-1] - ys[-2]) / max(xs[-1] - xs[-2], 1e-9))
    return ys[-1] + slope * (r - xs[-1])


def auto_caps(graph: ChannelGraph, min_keep: float, predicted: list[tuple[list[float], list[float]]]) -> list[float]:
    """The largest ratio ``auto`` gives each group: its floor, and never past the largest ratio the sensitivity
    analysis measured (beyond it the prediction is a guess; measured: extrapolating let auto strip late stages to
    their 10% floor and lose 7 points)."""
    return [min(removable(g, min_keep) / max(1, len(g.units)), max(predicted[i][0], default=1.0))
            for i, g in enumerate(graph.groups)]


def lowest_fraction(graph: ChannelGraph, scores: np.ndarray, cost: CostModel, kind: str, min_keep: float,
                    caps: list[float] | None = None, multiple: int = 1) -> float:
    """The smallest fraction of the dense model's ``kind`` (macs, params) an allocation can reach: every group
    at its floor, or at ``caps`` (per-group ratios, e.g. :func:`auto_caps`)."""
    ratios = caps if caps is not None else [1.0] * len(graph.groups)
    full = cost.cost(kind, np.ones(graph.num_units, dtype=bool))
    return float(cost.cost(kind, keep_for_ratios(graph, scores, ratios, min_keep, multiple)) / full)


def auto(graph: ChannelGraph, scores: np.ndarray, cost: CostModel, target: Target, min_keep: float, *,
         predicted: list[tuple[list[float], list[float]]], multiple: int = 1) -> tuple[np.ndarray, list[float]]:
    """Greedy per-group ratios: each step the one with the least predicted loss per unit of cost saved.

    Args:
        predicted: Per group, (ratios, predicted loss increase) measured by the sensitivity analysis.

    Returns:
        The keep mask and each group's ratio.
    """
    if target.kind == "ratio":
        raise TrainError("channels allocation auto needs a target (macs or params), not a fixed ratio.")
    top = auto_caps(graph, min_keep, predicted)
    ratios = [0.0] * len(graph.groups)
    full = cost.cost(target.kind, np.ones(graph.num_units, dtype=bool))
    current = full

    def loss(i: int, r: float) -> float:
        return predicted_at(*predicted[i], r)

    # each step removes at least one unit (``multiple`` units when counts are rounded to multiples)
    steps = [max(AUTO_STEP, multiple / max(1, len(g.units))) for g in graph.groups]
    while current > target.value * full:
        best: tuple[float, int, float, int] | None = None
        for i, r in enumerate(ratios):
            if r >= top[i] - 1e-9:
                continue
            nr = min(top[i], r + steps[i])
            c = cost.cost(target.kind, keep_for_ratios(graph, scores, [*ratios[:i], nr, *ratios[i + 1:]], min_keep,
                                                          multiple))
            price = (loss(i, nr) - loss(i, r) + 1e-6) / max(current - c, 1e-9)
            if best is None or price < best[0]:
                best = (price, i, nr, c)
        if best is None:
            raise _unreachable(target, current / full, "with every group at its floor")
        _, i, ratios[i], current = best
    return keep_for_ratios(graph, scores, ratios, min_keep, multiple), ratios
