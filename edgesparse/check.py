"""Check that a recipe can run, without training: what ``edgesparse validate`` does after the schema.

The schema (pydantic) only knows the recipe's text. :func:`check_recipe` resolves what the text
points at: it loads the data (files exist, npz arrays present and consistent), builds or loads the
model, checks that the model's input takes the data's samples and that it has an output per class,
and makes the sparsity plan (per-layer overrides must match layers, block patterns must divide the
kernels they prune). Every problem is the same typed error ``train`` would raise later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgesparse.data import load_dataset
from edgesparse.errors import DataError
from edgesparse.models import build_model, describe
from edgesparse.recipe import Recipe, recipe_dir
from edgesparse.train.sparsity import plan_sparsity


@dataclass
class CheckReport:
    """What :func:`check_recipe` resolved."""

    data: dict[str, Any]
    model: dict[str, Any]
    plan: list[dict[str, Any]] = field(default_factory=list)

    def lines(self) -> list[str]:
        """One human line per finding (printed by ``edgesparse validate``)."""
        d, m = self.data, self.model
        out = [
            (f"data: {d['name']} train/val/test = {d['train']}/{d['validation']}/{d['test']}, input "
             f"{tuple(d['input_shape'])}, {d['num_classes']} classes"),
            (f"model: {m['name']} ({m['params']:,} params), input {tuple(m['input_shape'])} -> "
             f"{m['output_shape'][-1]} outputs: fits the data"),
        ]
        if self.plan:
            pruned = [lp for lp in self.plan if lp["prune"]]
            groups: dict[str, list[str]] = {}
            for lp in pruned:
                groups.setdefault(f"{lp['target']:.0%} {lp['pattern']}", []).append(lp["name"])
            out.append(f"sparsity plan: {len(pruned)} layers pruned: "
                       + "; ".join(f"{how}: {_names(names)}" for how, names in groups.items()))
            notes: dict[str, list[str]] = {}
            for lp in self.plan:
                if lp["note"] and lp["note"] != "not prunable":
                    notes.setdefault(lp["note"], []).append(lp["name"])
            out += [f"  {_names(names)}: {note}" for note, names in notes.items()]
        return out


def _names(names: list[str], shown: int = 4) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def check_model_fits_data(model: Any, data: Any) -> None:
    """Fail when the data cannot feed the model.

    Args:
        model: A tf_keras model.
        data: A :class:`~edgesparse.data.Dataset`.

    Raises:
        DataError: the samples' shape differs from the model's input, or labels exceed its outputs.
    """
    expected = tuple(model.input_shape[1:])
    got = tuple(data.input_shape)
    if len(expected) != len(got) or any(e is not None and e != g for e, g in zip(expected, got)):
        raise DataError(
            f"the data's samples have shape {got} but the model '{model.name}' expects {expected}. "
            "Resize the data (image_size/channels in the data section) or build the model for this input."
        )
    outputs = model.output_shape[-1]
    for split, y in (("train", data.y_train), ("validation", data.y_val), ("test", data.y_test)):
        if len(y) and (int(np.max(y)) >= outputs or int(np.min(y)) < 0):
            raise DataError(
                f"{split} labels range over [{int(np.min(y))}, {int(np.max(y))}] but the model '{model.name}' has "
                f"{outputs} outputs (classes 0..{outputs - 1}). Give the model one output per class, or fix the labels."
            )


def check_recipe(recipe: Recipe) -> CheckReport:
    """Resolve the recipe's data and model and plan its sparsity, without training anything.

    Args:
        recipe: A validated recipe (relative paths resolve against its folder).

    Returns:
        What was found: data splits, model, per-layer sparsity plan.

    Raises:
        DataError: the data cannot be loaded or does not fit the model.
        ModelError: the model cannot be built or loaded, or cannot be pruned.
        RecipeError: a sparsity override matches no layer, or a block pattern does not divide a kernel.
    """
    base = recipe_dir(recipe)
    data = load_dataset(recipe.data, recipe.seed, base_dir=base)
    model = build_model(recipe.model, tuple(data.input_shape), data.num_classes, base)
    check_model_fits_data(model, data)
    report = CheckReport(data=data.describe(), model=describe(model))
    if recipe.sparsity is not None:
        steps = data.steps_per_epoch(recipe.data.batch_size)
        report.plan = plan_sparsity(model, recipe.sparsity, steps).to_dict()["layers"]
    return report
