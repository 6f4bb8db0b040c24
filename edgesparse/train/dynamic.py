"""Dynamic sparse training on tfmot's pruning wrappers: ``sparsity.method: rigl | set``.

The layers are wrapped by :func:`edgesparse.train.sparsity.apply_pruning` with a schedule that never fires in
training, so each wrapper's mask belongs to :class:`DynamicSparsity` alone: before the first step it keeps each
layer's largest-magnitude weights at the layer's target sparsity (the schedule's ``target_sparsity``), and every
``frequency`` steps until ``end_step`` it drops the ``k`` smallest active weights and regrows ``k`` inactive ones,
``k = round(drop_fraction_t * active)`` with ``drop_fraction_t`` cosine-decayed to 0 at ``end_step``:

* ``rigl`` (Evci et al. 2020) regrows where the loss's gradient is largest in magnitude, on one training batch.
  The wrapper assigns ``kernel * mask`` to the kernel before the layer runs, so the gradient with respect to the
  kernel variable is dense: it is non-zero at the inactive positions too.
* ``set`` (Mocanu et al. 2018) regrows at random (seeded by the run's seed and the step).

Regrown weights start at zero and just-dropped weights are not regrown in the same update, so every update
moves exactly ``k`` weights and each mask keeps exactly its number of zeros. Stripping, export and PQAT see
ordinary tfmot wrappers and masks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgesparse import _tf

log = logging.getLogger(__name__)

METHODS = ("rigl", "set")
#: drop/grow updates the default ``update.frequency`` fits into the window
DEFAULT_UPDATES = 10
#: the default frequency is never above RigL's own (an update every 100 steps)
MAX_DEFAULT_FREQUENCY = 100


def default_frequency(window_steps: int) -> int:
    """``update.frequency`` when the recipe gives none: :data:`DEFAULT_UPDATES` updates before ``window_steps``
    (updates run at steps ``f, 2f, ...`` below the window's end), at most every :data:`MAX_DEFAULT_FREQUENCY`
    steps, at least every step.

    Args:
        window_steps: Training steps from the phase's start to ``update.end``.
    """
    return max(1, min(MAX_DEFAULT_FREQUENCY, (window_steps - 1) // DEFAULT_UPDATES))


def drop_fraction_at(step: int, end_step: int, drop_fraction: float) -> float:
    """The share of active weights an update at ``step`` moves: ``drop_fraction * (1 + cos(pi * step / end)) / 2``,
    0 from ``end_step`` on."""
    if step >= end_step:
        return 0.0
    return drop_fraction * 0.5 * (1.0 + math.cos(math.pi * step / end_step))


def initial_mask(weights: np.ndarray, target: float) -> np.ndarray:
    """A 0/1 mask of ``weights``' shape keeping the largest magnitudes, exactly ``round(target * size)`` zeros
    (ties broken by position)."""
    flat = np.abs(weights).ravel()
    zeros = int(round(target * flat.size))
    mask = np.ones(flat.size, dtype=weights.dtype)
    mask[np.argsort(flat, kind="stable")[:zeros]] = 0
    return mask.reshape(weights.shape)


def drop_grow(weights: np.ndarray, mask: np.ndarray, k: int, grow_scores: np.ndarray) -> np.ndarray:
    """One drop/grow step of one layer.

    Args:
        weights: The layer's kernel (its values at inactive positions are ignored).
        mask: Its 0/1 mask.
        k: Weights to move; capped at the active and at the inactive count.
        grow_scores: Same shape; among the inactive positions (before the drop) the ``k`` highest are regrown.

    Returns:
        The new mask: the ``k`` smallest-magnitude active weights dropped, ``k`` inactive ones grown, the number of
        zeros unchanged.
    """
    active = mask.ravel() > 0
    k = max(0, min(int(k), int(active.sum()), int((~active).sum())))
    new = active.copy()
    if k:
        magnitude = np.where(active, np.abs(weights.ravel()), np.inf)
        new[np.argsort(magnitude, kind="stable")[:k]] = False
        # just-dropped positions are active in the old mask, so they are never among the candidates
        score = np.where(active, -np.inf, grow_scores.ravel().astype(np.float64))
        new[np.argsort(-score, kind="stable")[:k]] = True
    return new.reshape(mask.shape).astype(mask.dtype)


@dataclass
class UpdateRecord:
    """One drop/grow update over all layers."""

    step: int
    drop_fraction: float
    moved: int  # weights dropped (= regrown)
    survived: float | None  # of the weights the previous update regrew, the share still active after this one


@dataclass
class DynamicStats:
    """What the drop/grow updates did, recorded in summary.json (``sparsity.dynamic``)."""

    method: str
    frequency: int
    end_step: int
    drop_fraction: float
    updates: list[UpdateRecord] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the totals first."""
        out = asdict(self)
        out["count"] = len(self.updates)
        out["moved"] = sum(u.moved for u in self.updates)
        kept = [u.survived for u in self.updates if u.survived is not None]
        out["survived_mean"] = float(np.mean(kept)) if kept else None
        return out


def wrappers(model: Any) -> list[Any]:
    """The model's tfmot ``PruneLowMagnitude`` wrappers."""
    cls = _tf.tfmot_module("python.core.sparsity.keras.pruning_wrapper").PruneLowMagnitude
    return [layer for layer in model.layers if isinstance(layer, cls)]


def pruning_vars(wrapper: Any) -> tuple[Any, Any]:
    """The wrapper's (weight, mask) variables (tfmot prunes one weight per supported layer)."""
    weight, mask, _ = wrapper.pruning_vars[0]
    return weight, mask


def set_initial_masks(model: Any) -> None:
    """Give every wrapper its schedule's target sparsity at once, by magnitude, and zero the masked weights."""
    for wrapper in wrappers(model):
        weight, mask = pruning_vars(wrapper)
        w = weight.numpy()
        m = initial_mask(w, float(wrapper.pruning_schedule.target_sparsity))
        mask.assign(m)
        weight.assign(w * m)


def kernel_gradients(model: Any, batch: tuple[Any, Any]) -> list[np.ndarray]:
    """``|dL/dW|`` of each wrapper's weight on one batch, by the compiled model's loss (distillation included).

    The forward pass runs in training mode (BatchNormalization on batch statistics, dropout on); every
    non-trainable variable (tfmot's step counters and masks, moving statistics) and the loss trackers are restored
    afterwards, so training continues as if the batch had not been seen.
    """
    tf = _tf.tf()
    state = list(model.non_trainable_variables) + [v for m in model.metrics for v in m.variables]
    saved = [v.numpy() for v in state]
    weights = [pruning_vars(w)[0] for w in wrappers(model)]
    x, y = tf.nest.map_structure(tf.convert_to_tensor, batch)
    try:
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = model.compute_loss(x, y, y_pred)
        grads = tape.gradient(loss, weights)
    finally:
        for v, value in zip(state, saved):
            v.assign(value)
    return [np.zeros(w.shape, np.float32) if g is None else np.abs(tf.convert_to_tensor(g).numpy())
            for w, g in zip(weights, grads)]


class DynamicSparsity:
    """Factory of the tf_keras callback that owns the masks of ``method: rigl | set`` (see the module doc).

    Args:
        method: ``rigl`` or ``set``.
        frequency: Training steps between updates.
        end_step: The step from which the masks stay fixed.
        drop_fraction: Share of active weights moved by the first update.
        batches: Training batches ``(x, y)`` for rigl's gradient (an endless iterator); unused by set.
        seed: Seeds set's random regrowth.
    """

    def __init__(self, method: str, frequency: int, end_step: int, drop_fraction: float,
                 batches: Iterator[tuple[Any, Any]] | None = None, seed: int = 0) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        if method == "rigl" and batches is None:
            raise ValueError("rigl regrows by gradient: give training batches")
        self.stats = DynamicStats(method=method, frequency=int(frequency), end_step=int(end_step),
                                  drop_fraction=float(drop_fraction))
        self.batches, self.seed = batches, int(seed)
        self._grown: dict[str, np.ndarray] = {}

    def update(self, model: Any, step: int) -> UpdateRecord:
        """Drop and regrow every wrapper's weights once, as the update at ``step``."""
        fraction = drop_fraction_at(step, self.stats.end_step, self.stats.drop_fraction)
        layers = wrappers(model)
        if self.stats.method == "rigl":
            assert self.batches is not None
            scores = kernel_gradients(model, next(self.batches))
        else:
            rng = np.random.default_rng([self.seed, step])
            scores = [rng.random(tuple(pruning_vars(w)[0].shape)) for w in layers]
        moved, kept, regrown = 0, 0, 0
        for wrapper, score in zip(layers, scores):
            weight, mask = pruning_vars(wrapper)
            w, m = weight.numpy(), mask.numpy()
            k = int(round(fraction * int(np.count_nonzero(m))))
            new = drop_grow(w * m, m, k, score)
            previous = self._grown.get(wrapper.name)
            if previous is not None:
                kept += int(np.count_nonzero(new.ravel()[previous]))
                regrown += int(previous.size)
            grown = np.flatnonzero((new > 0) & (m == 0))
            self._grown[wrapper.name] = grown
            moved += int(grown.size)
            mask.assign(new)
            weight.assign(w * m * new)  # dropped and regrown positions both 0
        record = UpdateRecord(step=step, drop_fraction=fraction, moved=moved,
                              survived=kept / regrown if regrown else None)
        self.stats.updates.append(record)
        log.debug("sparsity: %s update at step %d: drop fraction %.3f, %d weights moved%s", self.stats.method, step,
                  fraction, moved, "" if record.survived is None else
                  f", {record.survived:.0%} of the last update's regrown weights survived")
        return record

    def callback(self) -> Any:
        """The tf_keras callback: initial masks before the first step, an update after every ``frequency``-th."""
        owner = self

        class Callback(_tf.keras().callbacks.Callback):  # type: ignore[misc]
            def __init__(self) -> None:
                super().__init__()
                self.started = False

            def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
                if self.started:
                    return
                self.started = True
                layers = wrappers(self.model)
                # tfmot's UpdatePruningStep sets the step to 0 on a fresh model; a resumed one restored its masks
                if layers and int(layers[0].pruning_step.numpy()) <= 0:
                    set_initial_masks(self.model)

            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                layers = wrappers(self.model)
                if not layers:
                    return
                step = int(layers[0].pruning_step.numpy())
                if step % owner.stats.frequency == 0 and step < owner.stats.end_step:
                    owner.update(self.model, step)

            def on_train_end(self, logs: Any = None) -> None:
                summary = owner.stats.to_dict()
                log.info("sparsity: %s made %d drop/grow updates (every %d steps to step %d, drop fraction %g "
                         "decayed to 0), %d weights moved; %s of the regrown weights survived the next update",
                         owner.stats.method, summary["count"], owner.stats.frequency, owner.stats.end_step,
                         owner.stats.drop_fraction, summary["moved"],
                         "n/a" if summary["survived_mean"] is None else f"{summary['survived_mean']:.0%}")

        return Callback()
