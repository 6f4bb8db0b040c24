"""Channel (filter) pruning: a physically smaller dense model that is faster on every CPU.

The stage, in the order :func:`plan_channels` and :func:`thin` run it:

1. :mod:`.graph` builds the channel dependency graph (coupled groups, frozen layers);
2. :mod:`.importance` scores every channel unit (l1, l2, bn, taylor);
3. :mod:`.allocation` decides how many units each group loses (uniform, global, auto from
   :mod:`.sensitivity`) to meet the target (MACs, parameters, a fixed ratio; latency through a measuring
   callback the orchestrator provides, since timing needs the exporter this stage must not import);
4. :mod:`.surgery` masks the removed channels in a copy of the model, rebuilds a smaller model with the kept
   ones, and checks that both compute the same outputs (a difference above the tolerance is an error).

Two schedules (``channels.schedule``). ``oneshot``: :func:`thin` at once, then the orchestrator fine-tunes the
thinned model (the same optimisation as fine-tuning the masked model with its masks held at zero, at a fraction
of the cost). ``gradual`` (:mod:`.schedule`): :func:`start_gradual` copies the dense model and returns the masks
whose callback removes the planned channels step by step while the orchestrator fine-tunes the copy; then
:meth:`.schedule.GradualMask.finish` thins it and runs the same check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgesparse import progress
from edgesparse.errors import TrainError
from edgesparse.recipe import ChannelsConfig
from edgesparse.task import Task
from edgesparse.train.channels import allocation, sensitivity
from edgesparse.train.channels.allocation import Target
from edgesparse.train.channels.cost import CostModel, build_cost_model
from edgesparse.train.channels.graph import ChannelGraph, build_graph
from edgesparse.train.channels.importance import importance
from edgesparse.train.channels.schedule import GradualMask, clone_model, schedule_steps
from edgesparse.train.channels.surgery import check_equal, mask_model, thin_model

__all__ = ["ChannelPlan", "GradualMask", "LatencyFn", "build_graph", "plan_channels", "schedule_steps",
           "start_gradual", "thin"]

log = logging.getLogger("edgesparse.train.channels")

#: Times a thinned model against the dense one (paired); returns thinned / dense median latency.
LatencyFn = Callable[[Any], float]
#: Latency targets re-allocate at most this many times, correcting the MACs fraction each time.
LATENCY_ROUNDS = 6


@dataclass
class ChannelPlan:
    """What the channel stage decided for one model."""

    graph: ChannelGraph
    cost: CostModel
    scores: np.ndarray
    keep: np.ndarray
    target: dict[str, float]
    rows: list[sensitivity.SensitivityRow] = field(default_factory=list)
    latency_trials: list[dict[str, float]] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """Figures for the summary: costs dense vs thinned, per-group kept channels, frozen layers."""
        full = np.ones(self.graph.num_units, dtype=bool)
        groups = [{"name": g.name, "layers": g.layers, "channels": len(g.units),
                   "kept": int(np.count_nonzero(self.keep[g.units]))} for g in self.graph.groups]
        out: dict[str, Any] = {
            "target": self.target, "dense_params": self.cost.params(full), "params": self.cost.params(self.keep),
            "dense_macs": self.cost.macs(full), "macs": self.cost.macs(self.keep), "groups": groups,
            "frozen": dict(self.graph.frozen_layers)}
        if self.latency_trials:
            out["latency_trials"] = self.latency_trials
        return out


def _check_prunable(graph: ChannelGraph, model: Any) -> None:
    if not graph.groups:
        frozen = "; ".join(f"{k}: {v}" for k, v in graph.frozen_layers.items()) or "none"
        raise TrainError(
            f"the model '{model.name}' has no prunable channel group: every layer that makes channels is the "
            f"output layer or coupled to a frozen layer (frozen: {frozen}). Remove the channels section, or use "
            "a model with convolution or dense layers between its input and its output layer.")


def plan_channels(model: Any, cfg: ChannelsConfig, x_val: np.ndarray, y_val: np.ndarray, *,
                  x_train: np.ndarray | None = None, y_train: np.ndarray | None = None,
                  latency_fn: LatencyFn | None = None, probs: bool = True, task: Task | None = None) -> ChannelPlan:
    """Decide which channels of ``model`` to keep.

    Args:
        model: The trained dense functional model (not modified).
        cfg: The recipe's ``channels`` section.
        x_val: Validation inputs (sensitivity analysis of ``auto``).
        y_val: Validation labels.
        x_train: Training inputs (the ``taylor`` criterion; validation data when None).
        y_train: Training labels.
        latency_fn: Required for a latency target: times a thinned model against the dense one.
        probs: Whether the model outputs probabilities (else logits); used without a task.
        task: The data's task: sensitivity measures its guard metric and loss, Taylor its loss.

    Returns:
        The plan (graph, scores, keep mask, sensitivity rows).

    Raises:
        TrainError: no prunable group, or an unreachable target (naming the smallest reachable value).
    """
    graph = build_graph(model)
    _check_prunable(graph, model)
    cost = build_cost_model(model, graph)
    xs, ys = (x_train, y_train) if x_train is not None and y_train is not None else (x_val, y_val)
    scores = importance(cfg.importance, model, graph, x=xs, y=ys, batches=cfg.taylor_batches, task=task)
    plan = ChannelPlan(graph=graph, cost=cost, scores=scores, keep=np.ones(graph.num_units, dtype=bool),
                       target={cfg.target.kind: cfg.target.value} if cfg.target else {"ratio": float(cfg.ratio or 0)})
    if cfg.allocation == "auto":
        plan.rows = sensitivity.analyze(model, graph, scores, cost, x=x_val, y=y_val,
                                        ratios=tuple(cfg.sensitivity_ratios), min_keep=cfg.min_keep, probs=probs,
                                        task=task)
    if cfg.target is not None and cfg.target.kind == "latency":
        if latency_fn is None:
            raise TrainError("a channels latency target needs a latency measurement (run it through "
                             "edgesparse.train, which times the thinned model against the dense one).")
        _latency_plan(plan, model, cfg, latency_fn)
    else:
        plan.keep = _allocate(plan, cfg, Target(*next(iter(plan.target.items()))))
    return plan


def _allocate(plan: ChannelPlan, cfg: ChannelsConfig, target: Target) -> np.ndarray:
    if cfg.allocation == "uniform":
        return allocation.uniform(plan.graph, plan.scores, plan.cost, target, cfg.min_keep,
                                  multiple=cfg.channel_multiple)
    if cfg.allocation == "global":
        return allocation.global_ranking(plan.graph, plan.scores, plan.cost, target, cfg.min_keep)
    predicted = sensitivity.predicted_loss(plan.graph, plan.rows)
    keep, _ = allocation.auto(plan.graph, plan.scores, plan.cost, target, cfg.min_keep, predicted=predicted,
                              multiple=cfg.channel_multiple)
    return keep


def _latency_plan(plan: ChannelPlan, model: Any, cfg: ChannelsConfig, latency_fn: LatencyFn) -> None:
    """Allocate on MACs, time the thinned model paired against the dense one, correct the MACs fraction."""
    goal = cfg.target.value if cfg.target is not None else 1.0
    fraction, best = goal, None
    lowest = _lowest_macs(plan, cfg)
    for round_ in range(1, LATENCY_ROUNDS + 1):
        fraction = max(fraction, lowest)
        if any(abs(t["macs_fraction"] - fraction) < 1e-6 for t in plan.latency_trials):
            break  # the search came back to a measured allocation (the floor): nothing left to try
        progress.item("channels latency search", round_, LATENCY_ROUNDS,
                      f"MACs {fraction:.3f} of dense: thinning and timing (stops once within 5% of {goal:g}x)")
        keep = _allocate(plan, cfg, Target("macs", fraction))
        ratio = float(latency_fn(thin_model(model, plan.graph, keep)))
        plan.latency_trials.append({"macs_fraction": fraction, "latency_ratio": ratio})
        log.info("channels: MACs %.3f of dense -> paired latency %.3fx dense", fraction, ratio)
        if ratio <= goal and (best is None or fraction > best[0]):
            best = (fraction, keep)
        if 0.95 * goal <= ratio <= goal:
            break
        fraction = _next_fraction(plan.latency_trials, goal)
    if best is None:
        smallest = min(t["latency_ratio"] for t in plan.latency_trials)
        raise TrainError(f"channels target {{latency: {goal:g}}} was not met: the fastest thinned model measured "
                         f"{smallest:.3f}x the dense model's latency ({len(plan.latency_trials)} allocations tried). "
                         "Raise the latency target, or use a macs target.")
    plan.keep = best[1]


def _lowest_macs(plan: ChannelPlan, cfg: ChannelsConfig) -> float:
    """The smallest MACs fraction the recipe's allocation reaches (a hair above, so the target is reachable)."""
    caps = None
    if cfg.allocation == "auto":
        caps = allocation.auto_caps(plan.graph, cfg.min_keep, sensitivity.predicted_loss(plan.graph, plan.rows))
    multiple = cfg.channel_multiple if cfg.allocation != "global" else 1
    return allocation.lowest_fraction(plan.graph, plan.scores, plan.cost, "macs", cfg.min_keep, caps,
                                      multiple) + 1e-4


def _next_fraction(trials: list[dict[str, float]], goal: float) -> float:
    """The next MACs fraction to try, aiming 2% under the goal.

    Latency has a fixed part and is not monotone in the allocation, so: once trials bracket the goal, linear
    interpolation between the largest fraction that met it and the smallest above it that did not (kept inside
    the bracket); before that, the secant through the two trials nearest the goal (proportional after one).
    """
    aim = 0.98 * goal
    met = [t for t in trials if t["latency_ratio"] <= goal]
    lo = max(met, key=lambda t: t["macs_fraction"]) if met else None
    floor = lo["macs_fraction"] if lo is not None else -1.0
    above = [t for t in trials if t["latency_ratio"] > goal and t["macs_fraction"] > floor]
    hi = min(above, key=lambda t: t["macs_fraction"]) if above else None
    if lo is not None and hi is not None:
        a, b = lo, hi
    elif len(trials) > 1:
        a, b = sorted(trials, key=lambda t: abs(t["latency_ratio"] - aim))[:2]
    else:
        return float(np.clip(trials[0]["macs_fraction"] * aim / max(trials[0]["latency_ratio"], 1e-6), 0.01, 0.99))
    slope = (b["latency_ratio"] - a["latency_ratio"]) / ((b["macs_fraction"] - a["macs_fraction"]) or 1e-9)
    guess = a["macs_fraction"] + (aim - a["latency_ratio"]) / slope if slope > 0 else \
        (a["macs_fraction"] + b["macs_fraction"]) / 2
    if lo is None or hi is None:  # extrapolating: latency is noisy and not linear, so at most halve or double
        tried = [t["macs_fraction"] for t in trials]
        guess = min(max(guess, 0.5 * min(tried)), 2.0 * max(tried))
    if lo is not None and hi is not None:
        width = hi["macs_fraction"] - lo["macs_fraction"]
        guess = min(max(guess, lo["macs_fraction"] + 0.1 * width), hi["macs_fraction"] - 0.1 * width)
    return float(np.clip(guess, 0.01, 0.99))


def thin(model: Any, plan: ChannelPlan, x_check: np.ndarray, tolerance: float = 1e-4) -> tuple[Any, float]:
    """Build the thinned model and check it against the masked one on ``x_check``.

    Returns:
        The thinned model and the max absolute output difference.

    Raises:
        TrainError: the outputs differ by more than ``tolerance``.
    """
    masked = mask_model(model, plan.graph, plan.keep)
    thinned = thin_model(model, plan.graph, plan.keep)
    diff = check_equal(masked, thinned, x_check, tolerance)
    return thinned, diff


def start_gradual(model: Any, plan: ChannelPlan, cfg: ChannelsConfig, steps_per_epoch: int) -> GradualMask:
    """A copy of ``model`` (never ``model`` itself) with the masks that remove ``plan``'s channels gradually.

    Fine-tune ``GradualMask.model`` with ``GradualMask.callback()``, then call ``GradualMask.finish``.

    Args:
        model: The trained dense model (not modified).
        plan: The plan made on ``model`` (its keep mask is the final one, its scores the order of removal).
        cfg: The recipe's ``channels`` section (``begin``, ``end``, ``frequency``, ``epochs``).
        steps_per_epoch: Training steps per epoch of the channel phase.

    Raises:
        RecipeError: the schedule's window holds no mask update at this many steps.
    """
    schedule = schedule_steps(cfg, steps_per_epoch)
    log.info("channels: gradual removal of %d channels at steps %d->%d every %d",
             int(np.count_nonzero(~plan.keep)), schedule.begin_step, schedule.end_step, schedule.frequency)
    return GradualMask(clone_model(model), plan.graph, plan.keep, plan.scores, schedule)
