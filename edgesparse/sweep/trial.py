"""One trial of a sweep: a run directory trained from the shared dense baseline, then profiled.

Everything crosses process boundaries as JSON and paths, so :func:`run_trial` serves this process,
local worker processes and Ray tasks alike.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from pathlib import Path
from typing import Any

from edgesparse import _io
from edgesparse.device.targets import parse_target
from edgesparse.errors import EdgesparseError
from edgesparse.recipe import Recipe, dump_recipe, override, set_recipe_dir
from edgesparse.run import load_model, train
from edgesparse.summary import RunSummary, read_summary
from edgesparse.sweep.grid import Trial
from edgesparse.tflite import footprint

log = logging.getLogger(__name__)


def train_baseline(base: Recipe, trial: Trial, root: Path) -> Path:
    """Train (or reuse) the shared dense baseline of ``trial``; return its folder."""
    folder = root / "baselines" / trial.baseline_key
    if (folder / "baseline.json").exists():
        return folder
    recipe = override(trial.recipe(base), {"channels": None, "sparsity": None, "quantization.mode": "none",
                                           "export": None})
    log.info("baseline %s (seed %d): training once, shared by its trials", trial.baseline_key, trial.seed)
    t0 = time.perf_counter()
    res = train(recipe, run_dir=folder / "run", export=False, force=True)  # the sweep owns its folders
    s = res.summary
    _io.write_json(folder / "baseline.json", {"accuracy": s.baseline.accuracy, "metric": s.baseline.metric,
                                              "metric_name": (s.task or {}).get("metric", "accuracy"),
                                              "seconds": time.perf_counter() - t0, "seed": trial.seed})
    return folder


def run_trial(base_json: str, base_dir: str, trial_json: str, root: str, profile_runs: int = 50) -> dict[str, Any]:
    """Run one trial (in this process or a worker) and return its result row.

    Errors are caught and recorded: trials fail independently.
    """
    base = Recipe.model_validate_json(base_json)
    set_recipe_dir(base, Path(base_dir))
    trial = Trial(**json.loads(trial_json))
    out = Path(root) / "trials" / trial.id
    row: dict[str, Any] = {"trial": trial.id, "repeat": trial.repeat, "seed": trial.seed, **trial.overrides}
    t0 = time.perf_counter()
    try:
        recipe = trial.recipe(base)
        if recipe.export is not None:
            recipe = override(recipe, {"export.dir": str(out / "bundle")})
        s = finished_run(out, recipe)
        if s is None:
            dense = load_model(Path(root) / "baselines" / trial.baseline_key / "run" / "baseline.keras")
            s = train(recipe, run_dir=out, dense_model=dense, force=True).summary  # a failed try is redone
        row.update(status="ok", error=None, **row_figures(s))
        if s.tflite is not None and profile_runs:
            tflite = Path(s.tflite.path)
            row.update(profile_figures(tflite, profile_runs, tflite.with_name("dense.tflite")))
    except Exception as exc:
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        if not isinstance(exc, EdgesparseError):
            row["traceback"] = traceback.format_exc(limit=6)
    row["train_seconds"] = time.perf_counter() - t0
    _io.write_json(out / "result.json", row)
    return row


def finished_run(out: Path, recipe: Recipe) -> RunSummary | None:
    """The summary of a run directory that already finished this exact recipe (else None).

    A trial whose training and export completed but whose profiling failed is then only
    re-profiled, not retrained.
    """
    lock, summary = out / "recipe.lock.yaml", out / "summary.json"
    if not (lock.exists() and summary.exists()) or lock.read_text() != dump_recipe(recipe):
        return None
    s = read_summary(summary)
    if recipe.export is not None and not (s.tflite and Path(s.tflite.path).exists()):
        return None
    return s


def row_figures(s: RunSummary) -> dict[str, Any]:
    """The result-row columns a run's summary gives.

    ``metric`` names the task's primary metric (its key: ``accuracy``, ``mae``, ``cls/accuracy``) and
    ``direction`` whether higher or lower is better; ``*_metric`` hold it on the test split. The
    ``*_accuracy`` columns stay for tasks that have an accuracy (None otherwise), so older readers still work.
    """
    tfl = s.tflite
    model = s.model
    task = s.task or {}
    return {
        "metric": task.get("metric", "accuracy"),
        "direction": task.get("direction", "higher"),
        "baseline_metric": s.baseline.metric,
        "keras_metric": model.metric if model else None,
        "tflite_metric": tfl.metric if tfl else None,
        "baseline_accuracy": s.baseline.accuracy,
        "keras_accuracy": model.accuracy if model else None,
        "tflite_accuracy": tfl.accuracy if tfl else None,
        "agreement": tfl.agreement if tfl else None,
        "sparsity": model.sparsity if model else None,
        "dense_tflite_bytes": s.baseline.tflite_bytes,
        "tflite_bytes": tfl.bytes if tfl else None,
        "gzip_bytes": tfl.gzip_bytes if tfl else None,
        "layer_sparsity": json.dumps(s.sparsity.achieved.layers if s.sparsity else {}),
        **_budget_columns(s),
    }


def _budget_columns(s: RunSummary) -> dict[str, Any]:
    """``sparsity.target.bytes`` trials: the budget, the predicted bytes and whether model.tflite fits."""
    b = (s.sparsity.budget if s.sparsity is not None else None) or {}
    return {"budget_bytes": b.get("budget"), "budget_predicted_bytes": b.get("predicted"),
            "budget_met": b.get("met")}


def profile_figures(model: Path, runs: int, reference: Path | None = None) -> dict[str, Any]:
    """Footprint and latency of ``model``; with ``reference`` (the dense .tflite) also the paired ratio.

    The paired ratio times both models alternately in one process (the runner's ``--paired``), so it
    holds while the machine's speed drifts; the separate medians do not.
    """
    fp = footprint(model)
    target = parse_target("local")
    r = target.run_runner(model, runs=runs, warmup=5)
    out = {"runtime_weight_bytes": fp.weight_runtime_bytes, "peak_rss_bytes": r.get("peak_rss_bytes"),
           "latency_median_ms": r["latency_ms"]["median"], "latency_p90_ms": r["latency_ms"]["p90"],
           "drift_pct": (r.get("stability") or {}).get("drift_pct"),
           "macs_nonzero": fp.macs_nonzero, "macs_dense": fp.macs_dense, "resolver": r.get("resolver")}
    if reference is not None and reference.exists() and reference.resolve() != model.resolve():
        paired = target.run_runner(model, runs=max(runs, 100), warmup=5, paired=reference)["paired"]
        out.update(latency_ratio=paired["ratio_median"], latency_ratio_q1=paired["ratio_q1"],
                   latency_ratio_q3=paired["ratio_q3"])
    return out


def worker_init(threads: int) -> None:
    """Give each worker process its share of the cores (set before TensorFlow starts)."""
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    os.environ["OMP_NUM_THREADS"] = str(threads)
