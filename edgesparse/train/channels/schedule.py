"""Gradual channel pruning: whole channels masked to zero step by step while a copy of the dense model trains.

The plan (which channels go) is decided once, on the dense model; the schedule only decides *when* each planned
removal happens. Like tfmot's ``PolynomialDecay`` for weights, the share of every group's planned removals is
``1 - (1 - p)^3`` at the mask update steps ``begin, begin + frequency, ..., end`` (``p`` runs from 0 to 1 over
that window), so most channels go early, while the model can still recover, and the last ones slowly. Within a
group, channels go in order of rising importance. The masks are those of :func:`.surgery.weight_masks` (the
definition the one-shot path and the surgery check use), re-applied after every training step so that the
optimizer cannot regrow a removed channel. At the end the masked model is thinned and the thinned model must
compute what it computes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgesparse import _tf
from edgesparse.errors import RecipeError, TrainError
from edgesparse.recipe import ChannelsConfig
from edgesparse.train.channels.graph import ChannelGraph
from edgesparse.train.channels.surgery import check_equal, mask_model, thin_model, weight_masks

__all__ = ["ChannelSchedule", "GradualMask", "clone_model", "removal_order", "schedule_steps"]

log = logging.getLogger("edgesparse.train.channels")

#: The polynomial's exponent (tfmot's PolynomialDecay default).
POWER = 3


@dataclass(frozen=True)
class ChannelSchedule:
    """When planned removals happen, in training steps of the channel phase (0-based)."""

    begin_step: int
    end_step: int
    frequency: int

    def __post_init__(self) -> None:
        if self.begin_step < 0 or self.frequency < 1 or self.end_step <= self.begin_step:
            raise ValueError(f"ChannelSchedule needs 0 <= begin_step < end_step and frequency >= 1 (got "
                             f"{self.begin_step}, {self.end_step}, {self.frequency})")

    def fraction(self, step: int) -> float:
        """Share of each group's planned removals in force at ``step`` (that of the last update at or before it)."""
        if step < self.begin_step:
            return 0.0
        last = min(step, self.end_step)
        update = self.begin_step + ((last - self.begin_step) // self.frequency) * self.frequency
        p = (update - self.begin_step) / (self.end_step - self.begin_step)
        return float(1.0 - (1.0 - p) ** POWER)

    def to_dict(self) -> dict[str, int]:
        """JSON-ready steps."""
        return {"begin_step": self.begin_step, "end_step": self.end_step, "frequency": self.frequency}


def schedule_steps(cfg: ChannelsConfig, steps_per_epoch: int) -> ChannelSchedule:
    """Translate the recipe's fractions of the phase into steps; the end snapped onto the update grid.

    The last update is no later than the phase's last step, so every planned channel is removed while it trains.

    Raises:
        RecipeError: the window holds no update step at this many steps.
    """
    total = cfg.epochs * steps_per_epoch
    begin = int(round(cfg.begin * total))
    end = min(int(round(cfg.end * total)), total - 1)
    frequency = min(cfg.frequency, max(1, end - begin))
    end = begin + ((end - begin) // frequency) * frequency
    if end <= begin:
        raise RecipeError(
            f"channels: begin={cfg.begin:g} and end={cfg.end:g} of {cfg.epochs} epochs x {steps_per_epoch} steps "
            "give no mask update; widen the window, raise channels.epochs, or use schedule oneshot.")
    return ChannelSchedule(begin_step=begin, end_step=end, frequency=frequency)


def removal_order(graph: ChannelGraph, keep: np.ndarray, scores: np.ndarray) -> list[np.ndarray]:
    """Per group, the units the plan removes, least important first (ties by unit id)."""
    order = []
    for group in graph.groups:
        removed = group.units[~keep[group.units]]
        order.append(removed[np.lexsort((removed, scores[removed]))])
    return order


def clone_model(model: Any) -> Any:
    """A weight-for-weight copy of ``model`` that shares no layer or variable with it."""
    copy = _tf.keras().models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


class GradualMask:
    """The masks of one gradual run: which planned channels are removed at a step, and the Keras callback.

    Args:
        model: The model being fine-tuned (a copy of the dense model; its weights are masked in place).
        graph: The channel graph of ``model``.
        keep: The plan's final keep mask (per unit).
        scores: The plan's importance per unit (the order of removal within each group).
        schedule: When removals happen.
    """

    def __init__(self, model: Any, graph: ChannelGraph, keep: np.ndarray, scores: np.ndarray,
                 schedule: ChannelSchedule) -> None:
        tf = _tf.tf()
        self.model, self.graph, self.schedule = model, graph, schedule
        self.final_keep = np.asarray(keep, dtype=bool).copy()
        self.order = removal_order(graph, self.final_keep, scores)
        self.keep = np.ones(graph.num_units, dtype=bool)
        self.updates: list[dict[str, float]] = []  # step, share of the planned removals, units removed
        final = weight_masks(model, graph, self.final_keep)
        self._index = [i for i, (_, mask) in enumerate(final) if not mask.all()]  # only weights that ever lose
        self._variables = [final[i][0] for i in self._index]
        self._masks = [tf.Variable(np.ones(final[i][1].shape, dtype=v.dtype.as_numpy_dtype), trainable=False)
                       for i, v in zip(self._index, self._variables, strict=True)]
        self._apply = tf.function(self._assign)

    def _assign(self) -> None:
        for var, mask in zip(self._variables, self._masks, strict=True):
            var.assign(var * mask)

    def keep_at(self, step: int) -> np.ndarray:
        """The keep mask in force at ``step``: each group's least important share of its planned removals gone."""
        share = self.schedule.fraction(step)
        keep = np.ones(self.graph.num_units, dtype=bool)
        for units in self.order:
            keep[units[: int(np.round(share * len(units)))]] = False
        return keep

    def update(self, step: int) -> bool:
        """Move the masks to those of ``step``; whether they changed (the weights are masked by :meth:`apply`)."""
        keep = self.keep_at(step)
        if np.array_equal(keep, self.keep):
            return False
        masks = weight_masks(self.model, self.graph, keep)
        for i, mask in zip(self._index, self._masks, strict=True):
            mask.assign(masks[i][1].astype(mask.dtype.as_numpy_dtype))
        self.keep = keep
        removed = int(np.count_nonzero(~keep))
        self.updates.append({"step": step, "share": self.schedule.fraction(step), "removed": removed})
        log.debug("channels: step %d, %d of %d planned channels removed", step, removed,
                  int(np.count_nonzero(~self.final_keep)))
        return True

    def apply(self) -> None:
        """Zero the weights of the channels removed so far (after every step: the optimizer would regrow them)."""
        if self._variables:
            self._apply()

    def callback(self) -> Any:
        """A Keras callback: masks updated before the steps of the schedule, re-applied after every step."""
        masker = self

        def step() -> int:  # the optimizer's count survives --resume (BackupAndRestore restores it)
            return int(masker.model.optimizer.iterations.numpy())

        class GradualChannelMask(_tf.keras().callbacks.Callback):  # type: ignore[misc]
            def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
                if masker.update(step()):
                    masker.apply()

            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                masker.apply()

            def on_train_end(self, logs: Any = None) -> None:
                masker.update(max(0, step() - 1))
                masker.apply()

        return GradualChannelMask()

    def finish(self, x_check: np.ndarray, tolerance: float = 1e-4) -> tuple[Any, float]:
        """Thin the fine-tuned masked model and check that the thinned one computes what it computes.

        Returns:
            The thinned model and the max absolute output difference on ``x_check``.

        Raises:
            TrainError: training stopped before the schedule removed every planned channel, a removed channel's
                weight is not zero, or the outputs differ by more than ``tolerance``.
        """
        if not np.array_equal(self.keep, self.final_keep):
            raise TrainError(
                f"the gradual channel schedule removed {int(np.count_nonzero(~self.keep))} of the "
                f"{int(np.count_nonzero(~self.final_keep))} planned channels: training stopped before step "
                f"{self.schedule.end_step}. Lower channels.end or raise channels.epochs.")
        self.apply()
        leak = max((float(np.max(np.abs(var.numpy() * (1 - mask)), initial=0.0))
                    for var, mask in weight_masks(self.model, self.graph, self.final_keep)), default=0.0)
        if leak != 0.0:
            raise TrainError(f"a removed channel's weight is {leak:.3g} after gradual fine-tuning, not 0: the masks "
                             "were not held. This is a bug in edgesparse; please report it with the model.")
        # The masked model is built as oneshot builds it: from the variables' (replica-aggregated) values.
        masked = mask_model(self.model, self.graph, self.final_keep)
        thinned = thin_model(self.model, self.graph, self.final_keep)
        return thinned, check_equal(masked, thinned, x_check, tolerance)
