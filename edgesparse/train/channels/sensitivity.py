"""Sensitivity analysis: prune each group alone at several ratios (no fine-tuning) and measure what it costs.

Each trial zeroes the group's least important channels in a working copy of the model (the masked model
computes exactly what the thinned one would), evaluates it on validation data and restores the weights.
``auto`` allocation reads the loss increases; ``edgesparse analyze`` renders the whole table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgesparse import progress
from edgesparse.data.dataset import take
from edgesparse.task import Task
from edgesparse.train.channels.allocation import keep_for_ratios, removable
from edgesparse.train.channels.cost import CostModel
from edgesparse.train.channels.graph import ChannelGraph
from edgesparse.train.channels.surgery import apply_mask, mask_model

#: Validation samples each trial evaluates at most (groups x ratios trials run).
MAX_SAMPLES = 2048


@dataclass
class SensitivityRow:
    """One group pruned alone at one ratio."""

    group: str
    channels: int
    ratio: float  # asked
    removed: int
    accuracy: float
    accuracy_drop: float  # points of accuracy (percent) lost against the unpruned model
    loss_increase: float  # validation cross-entropy increase
    macs_saved: float  # fraction of the dense model's MACs this removal saves
    params_saved: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def _scores(model: Any, x: Any, y: Any, probs: bool, task: Task | None = None) -> tuple[float, float]:
    """(primary metric, mean loss) of ``model`` on ``(x, y)``; without a task (accuracy, cross-entropy)."""
    if task is not None:
        out = model.predict(x, batch_size=256, verbose=0)
        scores = task.evaluate(out, y, x)
        return float(scores.get(task.guard_key, scores.get(task.metric_key, 0.0))), task.loss_value(out, y, x)
    out = np.asarray(model.predict(x, batch_size=256, verbose=0), dtype=np.float64)
    if not probs:
        out = np.exp(out - out.max(axis=-1, keepdims=True))
        out /= out.sum(axis=-1, keepdims=True)
    ce = -np.log(np.clip(out[np.arange(len(y)), y.astype(int)], 1e-12, 1.0))
    return float(np.mean(np.argmax(out, axis=-1) == y)), float(np.mean(ce))


def analyze(model: Any, graph: ChannelGraph, scores: np.ndarray, cost: CostModel, *, x: np.ndarray, y: np.ndarray,
            ratios: tuple[float, ...] = (0.25, 0.5, 0.75), min_keep: float = 0.1,
            probs: bool = True, task: Task | None = None) -> list[SensitivityRow]:
    """Prune every group alone at each of ``ratios`` and measure accuracy, loss and cost saved.

    Args:
        model: The trained dense model (not modified).
        graph: Its channel graph.
        scores: Importance per unit (the least important go first).
        cost: Its cost model.
        x: Validation inputs (the first ``MAX_SAMPLES``).
        y: Validation labels.
        ratios: Fractions of each group's channels to remove (capped by ``min_keep``).
        min_keep: Fraction of each group's channels always kept.
        probs: Whether the model outputs probabilities (else logits); without a task.
        task: The data's task: its guard metric and loss are measured (``accuracy`` holds that metric, and
            ``accuracy_drop`` its degradation: points for fractions, % for errors).

    Returns:
        One row per (group, ratio).
    """
    x, y = take(x, slice(0, MAX_SAMPLES)), take(y, slice(0, MAX_SAMPLES))
    work = mask_model(model, graph, np.ones(graph.num_units, dtype=bool))
    original = work.get_weights()
    base_acc, base_loss = _scores(work, x, y, probs, task)
    full = np.ones(graph.num_units, dtype=bool)
    dense_macs, dense_params = max(1, cost.macs(full)), max(1, cost.params(full))
    rows = []
    for i, group in enumerate(graph.groups):
        progress.item("channel sensitivity", i + 1, len(graph.groups),
                      f"group {group.name} ({len(group.units)} channels) at ratios "
                      + ", ".join(f"{r:g}" for r in ratios))
        for ratio in ratios:
            r = [0.0] * len(graph.groups)
            r[i] = ratio
            keep = keep_for_ratios(graph, scores, r, min_keep)
            apply_mask(work, graph, keep)
            acc, loss = _scores(work, x, y, probs, task)
            work.set_weights(original)
            rows.append(SensitivityRow(
                group=group.name, channels=len(group.units), ratio=ratio,
                removed=min(round(ratio * len(group.units)), removable(group, min_keep)),
                accuracy=acc, accuracy_drop=(100 * (base_acc - acc) if task is None else
                                             task.degradation(base_acc, acc, task.guard_key)),
                loss_increase=loss - base_loss,
                macs_saved=1 - cost.macs(keep) / dense_macs, params_saved=1 - cost.params(keep) / dense_params))
    return rows


def predicted_loss(graph: ChannelGraph, rows: list[SensitivityRow]) -> list[tuple[list[float], list[float]]]:
    """Per group (ratios, predicted loss increase) for ``auto`` allocation.

    The prediction is the validation loss increase plus the accuracy drop as a fraction: the loss is smooth
    where a small validation split's accuracy moves in steps.
    """
    out = []
    for group in graph.groups:
        mine = sorted((r for r in rows if r.group == group.name), key=lambda r: r.ratio)
        out.append(([r.ratio for r in mine], [r.loss_increase + r.accuracy_drop / 100 for r in mine]))
    return out
