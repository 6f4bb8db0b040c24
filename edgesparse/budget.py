"""A size budget: the sparsity that makes the exported model.tflite fit ``sparsity.target.bytes``.

Edge engineers think in flash bytes ("the model must fit in 64 KB"), and the bytes a sparsity buys
depend on the converter: the mode (int8 stores a byte per weight, float32 four), whether it stores a
kernel in its sparse encoding (CSR or blocks: a value plus indices per non-zero, only for tensors
sparse enough to gain), the weights that are never pruned (biases, depthwise kernels, BatchNorm) and
the graph itself. Rather than model that storage by formula, the prediction asks the converter:
a copy of the model is pruned in one step (tfmot's own masks, with the run's allocation and
patterns) to a trial sparsity and converted in the export's mode and encodings, and the trial
sparsity is searched (interpolation between the sizes at the two ends, bisection when it stalls)
until the file lands just under the budget. The file's size depends on how many weights are zero
and where the blocks are, not on their trained values, so a trial on the dense model predicts the
trained model's file.

Three checks surround it:

* before training, the smallest reachable file (every pruned layer at ``max_layer``) is converted;
  a budget below it is a :class:`~edgesparse.errors.RecipeError` naming that size;
* after export, the actual file is compared with the budget; if it missed (over the budget, or
  under 90% of it), the run corrects once (:func:`correction`);
* the summary records budget, predicted and actual bytes and the trials.

It lives beside the orchestrator because it uses a training stage (pruning) and an export stage
(conversion), which do not import each other.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgesparse.errors import RecipeError
from edgesparse.export.candidates import mode_encodings
from edgesparse.export.convert import convert
from edgesparse.export.modes import CONVERTER_MODES
from edgesparse.recipe import SparsityConfig
from edgesparse.train import sparsity

log = logging.getLogger(__name__)

#: A trial whose file is within this share under the budget ends the search.
CLOSE_ENOUGH = 0.97
#: The lower end of a budget's acceptable range: a file under LOW x budget wastes sparsity (accuracy).
LOW = 0.9
#: Trial conversions between the two ends of the search.
MAX_TRIALS = 8
#: Calibration samples of a trial int8 conversion (the storage does not depend on them).
TRIAL_SAMPLES = 16


@dataclass
class BudgetPlan:
    """What the budget asked for, what the search predicted, and what the export made."""

    budget: int
    mode: str  # the converter mode the trials used
    encodings: list[bool]  # the sparse encodings tried per trial (the smaller file counts)
    final: float = 0.0  # the chosen sparsity over the pruned kernels
    predicted: int = 0  # the trial file's bytes at ``final``
    smallest: int = 0  # every pruned layer at max_layer
    unpruned: int = 0  # the model converted unpruned, in the same mode
    trials: list[dict[str, Any]] = field(default_factory=list)
    actual: int | None = None
    met: bool | None = None
    correction: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prediction_mode(recipe: Any) -> tuple[str, list[bool]]:
    """The converter mode and sparse encodings the export will use (QAT/PQAT convert as int8)."""
    mode = recipe.quantization.mode
    mode = "int8" if mode in ("qat", "pqat") else mode
    setting = recipe.export.sparse_encoding if recipe.export is not None else "auto"
    return mode, mode_encodings(mode, setting)


class _Sizer:
    """Trial conversions of one dense model at chosen overall sparsities, in the export's mode."""

    def __init__(self, model: Any, cfg: SparsityConfig, recipe: Any, steps_per_epoch: int, representative: Any,
                 sensitivity: list[sparsity.LayerSensitivity] | None) -> None:
        self.model, self.cfg, self.steps, self.sensitivity = model, cfg, steps_per_epoch, sensitivity
        self.mode, self.encodings = prediction_mode(recipe)
        self.io = recipe.export.io if recipe.export is not None else "float32"
        self.rep = representative if CONVERTER_MODES.get(self.mode).needs_calibration else None
        self.trials: list[dict[str, Any]] = []

    def _cfg(self, final: float) -> SparsityConfig:
        return self.cfg.model_copy(update={"final": final, "target": None, "schedule": "constant",
                                           "method": "magnitude", "regularization": None})

    def highest(self) -> float:
        """The highest overall sparsity the plan accepts: ``max_layer``, or less where a block pattern would keep
        fewer blocks than a layer has output rows (found by bisection on the plan alone, no conversion)."""
        def plans(final: float) -> bool:
            try:
                sparsity.plan_sparsity(self.model, self._cfg(final), self.steps, sensitivity=self.sensitivity)
            except RecipeError:
                return False
            return True

        if plans(self.cfg.max_layer):
            return self.cfg.max_layer
        lo, hi = 0.0, self.cfg.max_layer
        while hi - lo > 1e-4:
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if plans(mid) else (lo, mid)
        log.info("budget: a block pattern caps the sparsity at %.2f%% (below max_layer %g)", 100 * lo,
                 self.cfg.max_layer)
        return float(np.floor(lo * 1e4) / 1e4)

    def __call__(self, final: float) -> int:
        cfg = self._cfg(final)
        if final == 0.0:
            pruned = self.model
            planned = 0.0
        else:
            plan = sparsity.plan_sparsity(self.model, cfg, self.steps, sensitivity=self.sensitivity)
            planned = plan.planned or 0.0
            pruned = one_step_prune(self.model, cfg, plan)
        sizes = {enc: len(convert(pruned, self.mode, sparse_encoding=enc, representative=self.rep, io=self.io))
                 for enc in self.encodings}
        best = min(sizes.values())
        self.trials.append({"final": round(final, 4), "planned": round(planned, 4), "bytes": best,
                            "sparse_encoding": min(sizes, key=lambda e: sizes[e])})
        log.debug("budget: %.2f%% over the pruned kernels -> %s B", 100 * final, f"{best:,}")
        return best


def one_step_prune(model: Any, cfg: SparsityConfig, plan: sparsity.SparsityPlan) -> Any:
    """A stripped copy of ``model`` with every planned layer at its target, pruned by tfmot in one mask update.

    The copy holds the zeros the pruning phase would leave (same allocation, patterns, blocks), so its
    conversion stores what the trained model's will.
    """
    plan.begin_step, plan.end_step, plan.frequency = 0, 1, 1
    wrapped = sparsity.apply_pruning(model, cfg.model_copy(update={"schedule": "constant", "method": "magnitude"}),
                                     plan)
    for layer in wrapped.layers:
        obj = getattr(layer, "pruning_obj", None)
        if obj is None:
            continue
        layer.pruning_step.assign(0)
        obj.conditional_mask_update()
        obj.weight_mask_op()
    return sparsity.strip(wrapped)


def trained_like(model: Any, seed: int = 0) -> Any:
    """A copy of an untrained model whose constant weights (zero biases, BatchNorm's ones and zeros) vary a little.

    The converter stores identical constant tensors once: an untrained model's zero biases share one
    buffer, a trained model's do not (measured: a small CNN's int8 file 9,040 B untrained, 10,296 B
    trained). Perturbing the constant weights makes the trial file store what the trained one will; the
    kernels keep their values (their magnitudes decide what is pruned).
    """
    copy = sparsity.clone_dense(model)
    rng = np.random.default_rng(seed)
    weights = []
    for w in copy.get_weights():
        if w.size > 1 and np.issubdtype(w.dtype, np.floating) and np.ptp(w) == 0:
            base = float(w.flat[0])
            w = (base + abs(base or 1.0) * 1e-2 * rng.uniform(0.5, 1.0, w.shape)).astype(w.dtype)
        weights.append(w)
    copy.set_weights(weights)
    return copy


def _unreachable(budget: int, smallest: int, unpruned: int, cfg: SparsityConfig, mode: str) -> RecipeError:
    return RecipeError(
        f"sparsity.target.bytes = {budget:,} B cannot be met: the smallest model.tflite reachable is {smallest:,} B "
        f"(every pruned layer at max_layer {cfg.max_layer:g} or the most its block pattern allows, {mode}; "
        f"unpruned: {unpruned:,} B; the rest is the "
        "graph and the weights tfmot does not prune). Raise the budget to at least "
        f"{smallest:,} B, " + ("quantize (quantization.mode: int8), " if mode in ("none", "float16", "dynamic") else "")
        + "or prune more layers (sparsity.layers, channels)")


def smallest_reachable(model: Any, cfg: SparsityConfig, recipe: Any, steps_per_epoch: int,
                       representative: Any) -> BudgetPlan:
    """Refuse, before any training, a budget below the smallest file the recipe can reach.

    Every pruned layer at ``max_layer`` is the sparsest any allocation can make the model (overrides with a
    fixed ``final`` keep theirs), so this needs neither trained weights nor the sensitivity.

    Returns:
        A plan with ``smallest`` and ``unpruned`` filled in.

    Raises:
        RecipeError: the budget is below the smallest reachable file.
    """
    assert cfg.target is not None
    uniform = cfg.model_copy(update={"allocation": "uniform"})
    sizer = _Sizer(trained_like(model), uniform, recipe, steps_per_epoch, representative, None)
    out = BudgetPlan(budget=cfg.target.bytes, mode=sizer.mode, encodings=sizer.encodings)
    out.smallest = sizer(sizer.highest())
    out.unpruned = sizer(0.0)
    if out.smallest > out.budget:
        raise _unreachable(out.budget, out.smallest, out.unpruned, cfg, sizer.mode)
    log.info("budget: %s B asked; reachable from %s B (max_layer %g) to %s B (unpruned), %s", f"{out.budget:,}",
             f"{out.smallest:,}", cfg.max_layer, f"{out.unpruned:,}", sizer.mode)
    return out


# long: one search loop (interpolation, bisection when one end stalls) reads best as a whole
def solve(model: Any, cfg: SparsityConfig, recipe: Any, steps_per_epoch: int, representative: Any,
          sensitivity: list[sparsity.LayerSensitivity] | None = None, budget: int | None = None) -> BudgetPlan:
    """The lowest overall sparsity whose exported file fits the budget, by trial conversions.

    Args:
        model: The dense model the sparsity phase will prune (trained: ``global`` ranks its weights).
        cfg: The sparsity section (its ``target``, allocation, patterns, overrides, ``max_layer``).
        recipe: The recipe (quantization mode, export encoding and I/O).
        steps_per_epoch: Of the sparsity phase (the plan needs it).
        representative: Calibration inputs for integer modes.
        sensitivity: ``allocation: auto``'s measured rows.
        budget: Aim at this many bytes instead of ``cfg.target.bytes`` (the correction after a miss).

    Returns:
        The plan: ``final`` to prune to and the ``predicted`` bytes.

    Raises:
        RecipeError: the budget is below the smallest reachable file.
    """
    assert cfg.target is not None
    n = budget if budget is not None else cfg.target.bytes
    sizer = _Sizer(model, cfg, recipe, steps_per_epoch, representative, sensitivity)
    out = BudgetPlan(budget=cfg.target.bytes, mode=sizer.mode, encodings=sizer.encodings)
    lo, s_lo = 0.0, sizer(0.0)
    out.unpruned = s_lo
    if s_lo <= n:
        out.final, out.predicted, out.trials = 0.0, s_lo, sizer.trials
        log.warning("budget: the unpruned model (%s B) already fits %s B; nothing is pruned", f"{s_lo:,}", f"{n:,}")
        return out
    hi = sizer.highest()
    s_hi = sizer(hi)
    out.smallest = s_hi
    if s_hi > n:
        raise _unreachable(n, s_hi, s_lo, cfg, sizer.mode)
    last_side = ""
    stalled = 0
    for _ in range(MAX_TRIALS):
        if s_hi >= CLOSE_ENOUGH * n or hi - lo < 1e-4:
            break
        f = lo + (s_lo - n) * (hi - lo) / (s_lo - s_hi) if s_lo > s_hi else (lo + hi) / 2
        if stalled >= 1:  # the same end moved twice: the size is not linear here, halve the interval
            f = (lo + hi) / 2
        f = min(max(round(f, 4), lo + 1e-4), hi - 1e-4)
        s = sizer(f)
        side = "lo" if s > n else "hi"
        stalled = stalled + 1 if side == last_side else 0
        last_side = side
        if s > n:
            lo, s_lo = f, s
        else:
            hi, s_hi = f, s
    out.final, out.predicted, out.trials = hi, s_hi, sizer.trials
    log.info("budget: %.2f%% over the pruned kernels predicts %s B for %s B (%d trial conversions, %s)", 100 * hi,
             f"{s_hi:,}", f"{n:,}", len(sizer.trials), sizer.mode)
    return out


def missed(plan: BudgetPlan, actual: int, kept_mode: str) -> bool:
    """Whether the exported file is over the budget, or under :data:`LOW` of it in the predicted mode.

    A smaller file from another mode (a float32 fallback that ``export.objective`` kept because the int8 one ran
    slower; float32's sparse encoding can be smaller than int8's) is not a miss of the prediction.
    """
    if actual > plan.budget:
        return True
    same = ("int8" if kept_mode in ("qat", "pqat") else kept_mode) == plan.mode
    return same and actual < LOW * plan.budget and plan.final > 0.0


def correction(plan: BudgetPlan, actual: int) -> int | None:
    """The bytes to aim at once more after a miss (the budget scaled by predicted / actual), None when pointless.

    None when the corrected aim is below the smallest reachable file or not below the unpruned one: the miss
    comes from the conversion kept (another mode), not from the sparsity.
    """
    aim = int(plan.budget * plan.predicted / max(1, actual))
    if aim < plan.smallest or aim >= plan.unpruned:
        return None
    return aim


def set_final(cfg: SparsityConfig, final: float) -> SparsityConfig:
    """The sparsity section with the budget's sparsity as ``final`` (validated again: schedules, ceilings)."""
    data = cfg.model_dump()
    data.update(final=final, target=None)
    if data.get("schedule") == "polynomial" and data.get("initial", 0.0) > final:
        data["initial"] = 0.0
    return SparsityConfig.model_validate(data)
