"""The grid of a sweep: dotted recipe paths x values x repeats, expanded into validated trials."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgesparse.errors import EdgesparseError, RecipeError
from edgesparse.recipe import Recipe, override, parse_value

#: recipe sections a shared baseline depends on (a grid axis under one of these gets its own baseline)
BASELINE_SECTIONS = ("data", "model", "baseline", "training", "seed")


class SweepError(EdgesparseError):
    """The sweep cannot start (bad grid, bad workers, unreachable Ray cluster ...)."""


@dataclass
class Trial:
    """One point of the grid at one repeat."""

    id: str
    overrides: dict[str, Any]
    repeat: int
    seed: int
    baseline_key: str = ""

    def recipe(self, base: Recipe) -> Recipe:
        return override(base, {**self.overrides, "seed": self.seed})


def _split_values(text: str) -> list[str]:
    """Split on commas that are not inside brackets or braces."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [v.strip() for v in out if v.strip()]


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["sparsity.final=0,0.5,0.9", "sparsity.pattern=unstructured,block:1x16"]`` -> a grid.

    Raises:
        SweepError: an item is not ``path=v1,v2,...`` or has no values.
    """
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise SweepError(f"--grid '{item}' is not of the form path=value1,value2 (e.g. sparsity.final=0.5,0.9).")
        grid[key.strip()] = [parse_value(v) for v in _split_values(values)]
    return grid


def _baseline_key(recipe: Recipe) -> str:
    data = recipe.model_dump(mode="json")
    sub = {k: data.get(k) for k in BASELINE_SECTIONS}
    return hashlib.sha256(json.dumps(sub, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _trial_id(overrides: dict[str, Any], repeat: int) -> str:
    text = json.dumps(overrides, sort_keys=True, default=str)
    short = ",".join(f"{k.split('.')[-1]}={v}" for k, v in overrides.items())
    short = re.sub(r"[^A-Za-z0-9=.,_:x-]+", "", short)[:60]
    return f"{short or 'base'}-r{repeat}-{hashlib.sha256(f'{text}|{repeat}'.encode()).hexdigest()[:6]}"


def plan(base: Recipe, grid: dict[str, list[Any]], repeats: int) -> list[Trial]:
    """Expand the grid into validated trials, before anything trains.

    Raises:
        SweepError: empty grid or repeats < 1.
        RecipeError: a grid path or value does not validate (the trial and value are named).
    """
    if not grid:
        raise SweepError("the grid is empty: give --grid path=v1,v2 (or a `sweep:` section in the recipe).")
    if repeats < 1:
        raise SweepError(f"--repeats must be >= 1 (got {repeats}).")
    empty = [k for k, v in grid.items() if not v]
    if empty:
        raise SweepError(f"grid axis {empty[0]} has no values.")
    trials = []
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        overrides = dict(zip(keys, values))
        for r in range(repeats):
            t = Trial(id=_trial_id(overrides, r), overrides=overrides, repeat=r, seed=base.seed + r)
            try:
                recipe = t.recipe(base)
            except RecipeError as exc:
                shown = ", ".join(f"{k}={v}" for k, v in overrides.items())
                raise RecipeError(f"trial [{shown}] is invalid: {exc}") from None
            t.baseline_key = _baseline_key(recipe)
            trials.append(t)
    return trials
