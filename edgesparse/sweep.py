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
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import os
import re
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgesparse import _io
from edgesparse.errors import EdgesparseError, RecipeError
from edgesparse.recipe import Recipe, override, recipe_dir, set_recipe_dir

Log = Callable[[str], None]

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
    from edgesparse.recipe import _parse_value

    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise SweepError(f"--grid '{item}' is not of the form path=value1,value2 (e.g. sparsity.final=0.5,0.9).")
        grid[key.strip()] = [_parse_value(v) for v in _split_values(values)]
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


# ---- running ----------------------------------------------------------------------------------


def _baseline(base: Recipe, trial: Trial, root: Path, log: Log) -> Path:
    """Train (or reuse) the shared dense baseline of ``trial``; return its folder."""
    from edgesparse.train.pipeline import train

    folder = root / "baselines" / trial.baseline_key
    if (folder / "baseline.json").exists():
        return folder
    recipe = override(trial.recipe(base), {"sparsity": None, "quantization.mode": "none", "export": None})
    log(f"baseline {trial.baseline_key} (seed {trial.seed}): training once, shared by its trials")
    t0 = time.perf_counter()
    res = train(recipe, run_dir=folder / "run", export=False)
    _io.write_json(folder / "baseline.json", {"accuracy": res.summary["baseline"]["accuracy"],
                                              "seconds": time.perf_counter() - t0, "seed": trial.seed})
    return folder


def run_trial(base_json: str, base_dir: str, trial_json: str, root: str, profile_runs: int = 50) -> dict[str, Any]:
    """Run one trial (in this process or a worker) and return its result row.

    Everything crosses process boundaries as JSON/paths, so the same function serves local worker
    processes and Ray tasks. Errors are caught and recorded: trials fail independently.
    """
    from edgesparse.recipe import Recipe as _Recipe

    base = _Recipe.model_validate_json(base_json)
    set_recipe_dir(base, Path(base_dir))
    trial = Trial(**json.loads(trial_json))
    out = Path(root) / "trials" / trial.id
    row: dict[str, Any] = {"trial": trial.id, "repeat": trial.repeat, "seed": trial.seed, **trial.overrides}
    t0 = time.perf_counter()
    try:
        from edgesparse.train.pipeline import _load_model, train

        recipe = trial.recipe(base)
        if recipe.export is not None:
            recipe = override(recipe, {"export.dir": str(out / "bundle")})
        s = _finished_run(out, recipe)
        if s is None:
            dense = _load_model(Path(root) / "baselines" / trial.baseline_key / "run" / "baseline.keras")
            s = train(recipe, run_dir=out, dense_model=dense).summary
        row.update(status="ok", error=None, **_row_figures(s))
        if s.get("tflite") and profile_runs:
            tflite = Path(s["tflite"]["path"])
            row.update(_profile_figures(tflite, profile_runs, tflite.with_name("dense.tflite")))
    except Exception as exc:  # noqa: BLE001 - any failure is this trial's, recorded, not fatal
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        if not isinstance(exc, EdgesparseError):
            row["traceback"] = traceback.format_exc(limit=6)
    row["train_seconds"] = time.perf_counter() - t0
    _io.write_json(out / "result.json", row)
    return row


def _finished_run(out: Path, recipe: Recipe) -> dict[str, Any] | None:
    """The summary of a run directory that already finished this exact recipe (else None).

    A trial whose training and export completed but whose profiling failed is then only
    re-profiled, not retrained.
    """
    from edgesparse.recipe import dump_recipe

    lock, summary = out / "recipe.lock.yaml", out / "summary.json"
    if not (lock.exists() and summary.exists()) or lock.read_text() != dump_recipe(recipe):
        return None
    s = json.loads(summary.read_text())
    tflite = s.get("tflite", {}).get("path")
    if recipe.export is not None and not (tflite and Path(tflite).exists()):
        return None
    return s


def _row_figures(s: dict[str, Any]) -> dict[str, Any]:
    tfl = s.get("tflite", {})
    return {
        "baseline_accuracy": s["baseline"]["accuracy"],
        "keras_accuracy": s["model"]["accuracy"],
        "tflite_accuracy": tfl.get("accuracy"),
        "agreement": tfl.get("agreement"),
        "sparsity": s["model"]["sparsity"],
        "dense_tflite_bytes": s["baseline"].get("tflite_bytes"),
        "tflite_bytes": tfl.get("bytes"),
        "gzip_bytes": tfl.get("gzip_bytes"),
        "layer_sparsity": json.dumps(s.get("sparsity", {}).get("achieved", {}).get("layers", {})),
    }


def _profile_figures(model: Path, runs: int, reference: Path | None = None) -> dict[str, Any]:
    """Footprint and latency of ``model``; with ``reference`` (the dense .tflite) also the paired ratio.

    The paired ratio times both models alternately in one process (the runner's ``--paired``), so it
    holds while the machine's speed drifts; the separate medians do not.
    """
    from edgesparse.device.targets import parse_target
    from edgesparse.profile.footprint import footprint

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


def _worker_init(threads: int) -> None:
    """Give each worker process its share of the cores (set before TensorFlow starts)."""
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    os.environ["OMP_NUM_THREADS"] = str(threads)


@dataclass
class SweepResult:
    """Rows of every trial and where they were written."""

    root: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)
    dense: dict[str, Any] | None = None  # the dense float32 .tflite profiled on this machine
    seconds: float = 0.0

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("status") != "ok"]


def check_ray(address: str) -> Any:
    """Connect to a Ray cluster before anything trains.

    Raises:
        SweepError: ray is not installed or the address is unreachable.
    """
    try:
        import ray
    except ImportError:
        raise SweepError("--ray needs the ray package: pip install 'edgesparse[ray]'.") from None
    if ray.is_initialized():
        return ray
    _check_reachable(address)
    try:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, logging_level="ERROR")
    except Exception as exc:  # noqa: BLE001 - ray raises ConnectionError, RuntimeError, ValueError ...
        raise SweepError(f"cannot connect to the Ray cluster at '{address}': {str(exc).splitlines()[0]}. Start one with "
                         "`ray start --head` and pass the address it prints (e.g. 127.0.0.1:6379).") from None
    return ray


def _check_reachable(address: str, timeout: float = 3.0) -> None:
    """A TCP connect to the cluster's address first: ray.init itself waits minutes on a dead address."""
    import socket
    from urllib.parse import urlparse

    if address in ("auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    host, port = parsed.hostname, parsed.port or (10001 if parsed.scheme == "ray" else 6379)
    if not host:
        raise SweepError(f"'{address}' is not a Ray address (host:port or ray://host:port).")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise SweepError(f"cannot reach the Ray cluster at {host}:{port} ({exc.strerror or exc}). Start one with "
                         "`ray start --head` and pass the address it prints, or drop --ray to run here.") from None


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
    log: Log | None = None,
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
        log: Progress lines.

    Raises:
        SweepError / RecipeError: bad grid, workers or Ray address — before any training.
    """
    say = log or (lambda _m: None)
    if workers < 1:
        raise SweepError(f"--workers must be >= 1 (got {workers}).")
    trials = plan(base, grid, repeats)
    ray = check_ray(ray_address) if ray_address else None
    out = Path(root) if root else Path("sweeps") / base.name
    base_dump = base.model_dump(mode="json")
    base_dump.pop("sweep", None)
    fingerprint = hashlib.sha256(json.dumps(base_dump, sort_keys=True, default=str).encode()).hexdigest()[:16]
    previous = out / "sweep.json"
    if previous.exists():
        old_fp = json.loads(previous.read_text()).get("recipe_fingerprint")
        if old_fp and old_fp != fingerprint:
            raise SweepError(f"'{out}' holds a sweep of a different base recipe (it changed since); its trials cannot be "
                             "reused. Give a new -o directory, or delete the old one to start over.")
    out.mkdir(parents=True, exist_ok=True)
    _io.write_json(out / "sweep.json", {"recipe": base_dump, "recipe_fingerprint": fingerprint, "grid": grid,
                                        "repeats": repeats, "trials": [asdict(t) for t in trials]})
    t0 = time.perf_counter()
    result = SweepResult(root=out)
    done = {t.id: json.loads((out / "trials" / t.id / "result.json").read_text())
            for t in trials if (out / "trials" / t.id / "result.json").exists()}
    if retry_failed:
        done = {k: v for k, v in done.items() if v.get("status") == "ok"}
    todo = [t for t in trials if t.id not in done]
    say(f"{len(trials)} trials ({len(done)} already done), {len({t.baseline_key for t in trials})} shared baseline(s)")
    for key in dict.fromkeys(t.baseline_key for t in todo):
        _baseline(base, next(t for t in todo if t.baseline_key == key), out, say)
    base_json, base_dir = base.model_dump_json(), str(recipe_dir(base))
    args = [(base_json, base_dir, json.dumps(asdict(t)), str(out), profile_runs) for t in todo]
    rows: list[dict[str, Any]] = []
    if ray is not None:
        remote = ray.remote(num_cpus=1)(run_trial)
        rows = ray.get([remote.remote(*a) for a in args])
    elif workers > 1 and len(args) > 1:
        import concurrent.futures as cf
        import multiprocessing as mp

        threads = max(1, (os.cpu_count() or 1) // workers)
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                    initializer=_worker_init, initargs=(threads,)) as pool:
            futures = {pool.submit(run_trial, *a): a for a in args}
            for f in cf.as_completed(futures):
                row = f.result()
                say(f"trial {row['trial']}: {row['status']}")
                rows.append(row)
    else:
        for i, a in enumerate(args):
            row = run_trial(*a)
            say(f"trial {i + 1}/{len(args)} {row['trial']}: {row['status']}"
                + (f" ({row.get('error')})" if row["status"] != "ok" else
                   f", TFLite acc {row.get('tflite_accuracy', float('nan')):.2%}, {row.get('tflite_bytes')} B"))
            rows.append(row)
    if reprofile and profile_runs:
        finished = [r for r in done.values() if r.get("status") == "ok"]
        say(f"re-measuring latency of {len(finished)} finished trial(s) and the dense model, no training")
        for row in finished:
            summary = out / "trials" / row["trial"] / "summary.json"
            tflite = json.loads(summary.read_text()).get("tflite", {}).get("path") if summary.exists() else None
            if tflite and Path(tflite).exists():
                row.update(_profile_figures(Path(tflite), profile_runs, Path(tflite).with_name("dense.tflite")))
                _io.write_json(out / "trials" / row["trial"] / "result.json", row)
    by_id = {**done, **{r["trial"]: r for r in rows}}
    result.rows = [by_id[t.id] for t in trials if t.id in by_id]
    for key in {t.baseline_key for t in trials}:
        p = out / "baselines" / key / "baseline.json"
        if p.exists():
            result.baselines[key] = json.loads(p.read_text())
    ok = [r for r in result.rows if r.get("status") == "ok"]
    previous_dense = None
    if (out / "results.json").exists():
        previous_dense = json.loads((out / "results.json").read_text()).get("dense")
    if previous_dense and not rows and not reprofile:
        result.dense = previous_dense  # nothing was measured now: keep the dense figure of the same sitting
    elif ok and profile_runs:
        dense_path = out / "trials" / ok[0]["trial"] / "bundle" / "dense.tflite"
        if dense_path.exists():
            result.dense = {"path": str(dense_path), **_profile_figures(dense_path, profile_runs)}
    result.seconds = time.perf_counter() - t0
    write_results(result, list(grid))
    from edgesparse.sweep_report import write_report

    write_report(result, list(grid))
    return result


COLUMNS = ["trial", "repeat", "seed", "status", "baseline_accuracy", "keras_accuracy", "tflite_accuracy", "agreement",
           "sparsity", "dense_tflite_bytes", "tflite_bytes", "gzip_bytes", "runtime_weight_bytes", "peak_rss_bytes",
           "latency_median_ms", "latency_p90_ms", "latency_ratio", "latency_ratio_q1", "latency_ratio_q3",
           "drift_pct", "resolver", "macs_dense", "macs_nonzero", "train_seconds", "error"]


def write_results(result: SweepResult, axes: list[str]) -> None:
    """results.csv and results.json: one row per trial x repeat, every grid value as a column."""
    cols = ["trial", "repeat", "seed", *axes, *[c for c in COLUMNS if c not in ("trial", "repeat", "seed")]]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in result.rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    _io.write_text(result.root / "results.csv", buf.getvalue())
    _io.write_json(result.root / "results.json", {"axes": axes, "baselines": result.baselines, "dense": result.dense,
                                                  "seconds": result.seconds, "rows": result.rows})
