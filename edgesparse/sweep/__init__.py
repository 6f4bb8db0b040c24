"""``edgesparse sweep``: the sparsity study — many trials of one recipe against a shared dense baseline.

A grid of dotted recipe paths (the same paths as ``--set``) expands into trials; each trial is an
ordinary run directory under ``SWEEP_DIR/trials/``. The dense baseline is trained once per distinct
(data, model, baseline, training, seed) combination and every trial that starts from it clones it.
Trials fail independently (the error is recorded, the sweep goes on); re-running the same command
resumes: trials with a ``result.json`` are not redone.

Layout::

    SWEEP_DIR/sweep.json            the grid, repeats and trial list
    SWEEP_DIR/baselines/<key>/      shared dense baselines (baseline.keras, baseline.json)
    SWEEP_DIR/trials/<id>/          one run directory per trial, with result.json
    SWEEP_DIR/results.csv|json      one row per trial x repeat
    SWEEP_DIR/report.md + *.png     plots and a generated summary

Modules: ``grid`` (expanding the grid), ``trial`` (one trial), ``cluster`` (Ray), ``results``
(results.csv/json), ``report`` (report.md and its plots). Progress goes to the ``edgesparse.sweep``
logger.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgesparse import _io
from edgesparse import progress as _progress
from edgesparse.recipe import Recipe, override, recipe_dir
from edgesparse.render import MetricLabel
from edgesparse.summary import read_summary
from edgesparse.sweep.cluster import check_ray, check_shared_paths
from edgesparse.sweep.grid import SweepError, Trial, parse_grid, plan
from edgesparse.sweep.report import write_report
from edgesparse.sweep.results import SweepResult, write_results
from edgesparse.sweep.trial import profile_figures, run_trial, train_baseline, worker_init

__all__ = ["SweepError", "SweepResult", "Trial", "check_ray", "parse_grid", "plan", "run_trial", "sweep"]

log = logging.getLogger(__name__)


def sweep(
    base: Recipe,
    grid: dict[str, list[Any]],
    *,
    repeats: int = 1,
    root: str | Path | None = None,
    workers: int = 1,
    ray_address: str | None = None,
    profile_runs: int = 50,
    retry_failed: bool = False,
    reprofile: bool = False,
    progress: bool = True,
) -> SweepResult:
    """Run every trial of the grid; write results.csv/json and report.md.

    Args:
        base: The recipe the grid varies.
        grid: Dotted path -> values.
        repeats: Repeats per grid point (seeds base.seed, base.seed + 1, ...).
        root: Sweep directory (default sweeps/<name>).
        workers: Parallel worker processes on this machine.
        ray_address: Send trials to this Ray cluster instead.
        profile_runs: Latency runs per trial on this machine (0: skip profiling).
        retry_failed: Run again the trials a previous run of this sweep recorded as failed.
        reprofile: Measure the latency of every finished trial and of the dense model again, in one
            pass and without retraining (on a quieter machine, or after the machine changed), so that
            all latencies of the report come from the same sitting.
        progress: Show a line per finished trial (and the trials' own progress when they run here) on stderr
            when no logging is configured (see :func:`edgesparse.progress.shown`); False shows nothing.

    Returns:
        Every trial's row, the shared baselines and the dense model's figures.

    Raises:
        SweepError / RecipeError: bad grid, workers or Ray address — before any training.
    """
    with _progress.shown(progress):
        return _sweep(base, grid, repeats=repeats, root=root, workers=workers, ray_address=ray_address,
                      profile_runs=profile_runs, retry_failed=retry_failed, reprofile=reprofile)


def _sweep(base: Recipe, grid: dict[str, list[Any]], *, repeats: int, root: str | Path | None, workers: int,
           ray_address: str | None, profile_runs: int, retry_failed: bool, reprofile: bool) -> SweepResult:
    if workers < 1:
        raise SweepError(f"--workers must be >= 1 (got {workers}).")
    base = _study_guard(base, grid)
    trials = plan(base, grid, repeats)
    ray = check_ray(ray_address) if ray_address else None
    # absolute before anything leaves this process: a worker (a Ray node above all) runs in another directory
    out = (Path(root) if root else Path("sweeps") / base.name).expanduser().absolute()
    base_dir = recipe_dir(base).expanduser().absolute()
    _claim_directory(out, base, grid, repeats, trials)
    if ray is not None:
        check_shared_paths(ray, list(dict.fromkeys([out, base_dir])))
    t0 = time.perf_counter()
    result = SweepResult(root=out)
    done = _finished_trials(out, trials, retry_failed)
    todo = [t for t in trials if t.id not in done]
    log.info("%d trials (%d already done), %d shared baseline(s)", len(trials), len(done), len(_baselines_of(trials)))
    for key in dict.fromkeys(t.baseline_key for t in todo):  # one shared dense baseline per key, first
        train_baseline(base, next(t for t in todo if t.baseline_key == key), out)
    args = [(base.model_dump_json(), str(base_dir), json.dumps(asdict(t)), str(out), profile_runs) for t in todo]
    rows = _run_trials(args, ray, workers)
    if reprofile and profile_runs:
        _reprofile(out, [r for r in done.values() if r.get("status") == "ok"], profile_runs)
    by_id = {**done, **{r["trial"]: r for r in rows}}
    result.rows = [by_id[t.id] for t in trials if t.id in by_id]
    result.baselines = _baselines(out, trials)
    result.dense = _dense_figures(out, result, measured_now=bool(rows) or reprofile, profile_runs=profile_runs)
    result.seconds = time.perf_counter() - t0
    write_results(result, list(grid))
    write_report(result, list(grid))
    return result


def _study_guard(base: Recipe, grid: dict[str, list[Any]]) -> Recipe:
    """Trials record a loss of the metric against dense instead of failing on it, unless the recipe or grid says.

    A study exists to measure how much of the task's metric each level of sparsity costs; the guard's default
    (``sparsity.on_drop: fail``) would turn the interesting rows into failed trials without figures.
    """
    if base.sparsity is None or "on_drop" in base.sparsity.model_fields_set or "sparsity.on_drop" in grid:
        return base
    log.info("trials keep models that lose more than sparsity.max_drop against dense (on_drop: warn; the "
             "warning is in each trial's summary.json); set sparsity.on_drop in the recipe to fail them instead")
    return override(base, {"sparsity.on_drop": "warn"})


def _fingerprint(base: Recipe) -> tuple[str, dict[str, Any]]:
    dump = base.model_dump(mode="json")
    dump.pop("sweep", None)
    return hashlib.sha256(json.dumps(dump, sort_keys=True, default=str).encode()).hexdigest()[:16], dump


def _claim_directory(out: Path, base: Recipe, grid: dict[str, list[Any]], repeats: int, trials: list[Trial]) -> None:
    """Write sweep.json, refusing a directory that holds a sweep of another base recipe."""
    fingerprint, dump = _fingerprint(base)
    previous = out / "sweep.json"
    if previous.exists():
        old_fp = json.loads(previous.read_text()).get("recipe_fingerprint")
        if old_fp and old_fp != fingerprint:
            raise SweepError(f"'{out}' holds a sweep of a different base recipe (it changed since); "
                             "its trials cannot be "
                             "reused. Give a new -o directory, or delete the old one to start over.")
    out.mkdir(parents=True, exist_ok=True)
    _io.write_json(out / "sweep.json", {"recipe": dump, "recipe_fingerprint": fingerprint, "grid": grid,
                                        "repeats": repeats, "trials": [asdict(t) for t in trials]})


def _finished_trials(out: Path, trials: list[Trial], retry_failed: bool) -> dict[str, dict[str, Any]]:
    """Result rows of trials a previous invocation finished (failed ones dropped with ``retry_failed``)."""
    done = {t.id: json.loads((out / "trials" / t.id / "result.json").read_text())
            for t in trials if (out / "trials" / t.id / "result.json").exists()}
    if retry_failed:
        done = {k: v for k, v in done.items() if v.get("status") == "ok"}
    return done


def _trial_line(i: int, n: int, row: dict[str, Any]) -> None:
    """One progress line per finished trial: ``trial 3/8 final=0.8-r0: ok, TFLite accuracy 97.2%, 12,345 B``."""
    label = MetricLabel(row.get("metric") or "accuracy", row.get("direction") or "higher")
    detail = (f" ({row.get('error')})" if row["status"] != "ok" else
              f", TFLite {label.name} {label.fmt(row.get('tflite_metric'))}, {row.get('tflite_bytes')} B")
    log.info("trial %d/%d %s: %s%s (%.0fs)", i, n, row["trial"], row["status"], detail,
             row.get("train_seconds") or 0.0)


def _run_trials(args: list[tuple[str, str, str, str, int]], ray: Any, workers: int) -> list[dict[str, Any]]:
    """Run the trials here, in spawned worker processes, or as Ray tasks; a line as each one finishes."""
    rows: list[dict[str, Any]] = []
    if ray is not None:
        remote = ray.remote(num_cpus=1)(run_trial)
        pending = [remote.remote(*a) for a in args]
        log.info("%d trial(s) sent to the Ray cluster (%s CPUs)", len(pending),
                 f"{ray.cluster_resources().get('CPU', 0):g}")
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                rows.append(ray.get(ref))
                _trial_line(len(rows), len(args), rows[-1])
        return rows
    if workers > 1 and len(args) > 1:
        import concurrent.futures as cf
        import multiprocessing as mp

        threads = max(1, (os.cpu_count() or 1) // workers)
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                    initializer=worker_init, initargs=(threads,)) as pool:
            futures = {pool.submit(run_trial, *a): a for a in args}
            for f in cf.as_completed(futures):
                rows.append(f.result())
                _trial_line(len(rows), len(args), rows[-1])
        return rows
    for a in args:
        rows.append(run_trial(*a))
        _trial_line(len(rows), len(args), rows[-1])
    return rows


def _reprofile(out: Path, finished: list[dict[str, Any]], profile_runs: int) -> None:
    """Measure every finished trial again (no training), updating its result.json."""
    log.info("re-measuring latency of %d finished trial(s) and the dense model, no training", len(finished))
    for row in finished:
        summary = out / "trials" / row["trial"] / "summary.json"
        tfl = read_summary(summary).tflite if summary.exists() else None
        if tfl is not None and Path(tfl.path).exists():
            tflite = Path(tfl.path)
            row.update(profile_figures(tflite, profile_runs, tflite.with_name("dense.tflite")))
            _io.write_json(out / "trials" / row["trial"] / "result.json", row)


def _baselines_of(trials: list[Trial]) -> set[str]:
    return {t.baseline_key for t in trials}


def _baselines(out: Path, trials: list[Trial]) -> dict[str, dict[str, Any]]:
    """The shared baselines' records (primary metric and its name, accuracy, seconds, seed) by key."""
    paths = {key: out / "baselines" / key / "baseline.json" for key in {t.baseline_key for t in trials}}
    return {key: json.loads(p.read_text()) for key, p in paths.items() if p.exists()}


def _dense_figures(out: Path, result: SweepResult, *, measured_now: bool, profile_runs: int) -> dict[str, Any] | None:
    """The dense float32 model's footprint and latency, measured in the same sitting as the trials."""
    previous = None
    if (out / "results.json").exists():
        previous = json.loads((out / "results.json").read_text()).get("dense")
    if previous and not measured_now:
        return dict(previous)  # nothing was measured now: keep the dense figure of the same sitting
    ok = [r for r in result.rows if r.get("status") == "ok"]
    if ok and profile_runs:
        dense_path = out / "trials" / ok[0]["trial"] / "bundle" / "dense.tflite"
        if dense_path.exists():
            return {"path": str(dense_path), **profile_figures(dense_path, profile_runs)}
    return None
