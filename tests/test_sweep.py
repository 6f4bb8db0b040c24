"""edgesparse sweep: grid expansion, shared baselines, independent failures, resume, workers, Ray."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edgesparse.cli import main
from edgesparse.errors import RecipeError
from edgesparse.recipe import validate_recipe
from edgesparse.sweep import SweepError, parse_grid, plan, sweep
from tests.conftest import ROOT, tiny_recipe, write_recipe


def _base(tmp: Path) -> Any:
    return validate_recipe(tiny_recipe(tmp, sparsity={"epochs": 2, "end": 1}))


def test_parse_grid_keeps_brackets_and_types() -> None:
    grid = parse_grid(["sparsity.final=0,0.5,0.9", "sparsity.pattern=unstructured,block:1x16,{m_by_n: [2, 4]}",
                       "sparsity.regularization.l1=0,1e-5"])
    assert grid["sparsity.final"] == [0, 0.5, 0.9]
    assert grid["sparsity.pattern"] == ["unstructured", "block:1x16", {"m_by_n": [2, 4]}]
    assert grid["sparsity.regularization.l1"] == [0, 1e-5]


def test_bad_grids_fail_before_training(tmp_path: Path) -> None:
    base = _base(tmp_path)
    with pytest.raises(RecipeError, match="did you mean 'final'"):
        plan(base, {"sparsity.fnal": [0.5]}, 1)
    with pytest.raises(RecipeError, match=r"trial \[sparsity.final=1.5\].*less than 1"):
        plan(base, {"sparsity.final": [0.5, 1.5]}, 1)
    with pytest.raises(SweepError, match="grid is empty"):
        plan(base, {}, 1)
    with pytest.raises(SweepError, match="repeats"):
        plan(base, {"sparsity.final": [0.5]}, 0)
    with pytest.raises(SweepError, match="path=value"):
        parse_grid(["sparsity.final"])


def test_cli_rejects_workers_zero_and_dead_ray(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, tiny_recipe(tmp_path))
    out = ["-o", str(tmp_path / "sw")]
    r = CliRunner().invoke(main, ["sweep", str(path), "--grid", "sparsity.final=0.5", "--workers", "0", *out])
    assert r.exit_code == 1 and "--workers must be >= 1" in r.output
    r = CliRunner().invoke(main, ["sweep", str(path), "--grid", "sparsity.final=0.5", "--ray", "127.0.0.1:1", *out])
    assert r.exit_code == 1 and "cannot reach the Ray cluster" in r.output
    r = CliRunner().invoke(main, ["sweep", str(path), *out])
    assert r.exit_code == 1 and "grid is empty" in r.output
    assert not (tmp_path / "sw").exists()  # nothing started


def test_sweep_shares_baseline_records_failures_and_resumes(tmp_path: Path) -> None:
    base = _base(tmp_path)
    grid = {"sparsity.final": [0.5, 0.8], "sparsity.policy": ["all", "xnnpack"]}  # xnnpack: not for this CNN
    res = sweep(base, grid, repeats=1, root=tmp_path / "sw", profile_runs=5)
    assert len(res.rows) == 4
    assert len(list((tmp_path / "sw" / "baselines").iterdir())) == 1  # one dense baseline for every trial
    ok = [r for r in res.rows if r["status"] == "ok"]
    failed = res.failed
    assert len(ok) == 2 and len(failed) == 2
    assert all("xnnpack" in r["error"] for r in failed)
    assert {r["baseline_accuracy"] for r in ok} == {res.baselines[next(iter(res.baselines))]["accuracy"]}
    for r in ok:
        assert r["sparsity"] > 0 and r["tflite_bytes"] and r["latency_median_ms"] > 0 and r["runtime_weight_bytes"]
        assert 0 < r["latency_ratio_q1"] <= r["latency_ratio"] <= r["latency_ratio_q3"]  # paired with dense.tflite
    with open(tmp_path / "sw" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"sparsity.final", "sparsity.policy", "tflite_accuracy", "keras_accuracy", "sparsity", "tflite_bytes",
            "gzip_bytes", "runtime_weight_bytes", "peak_rss_bytes", "latency_median_ms", "latency_p90_ms",
            "train_seconds", "error"} <= set(rows[0])
    report = (tmp_path / "sw" / "report.md").read_text()
    assert "## Summary" in report and "## Failed trials" in report and "At 80% sparsity" in report
    assert "latency vs dense" in report and "x dense float32 on this CPU (timed alternately" in report
    for png in ("accuracy_vs_sparsity", "accuracy_vs_size", "latency_vs_accuracy", "layer_sparsity"):
        assert (tmp_path / "sw" / f"{png}.png").stat().st_size > 1000
    # Re-running the same sweep redoes nothing.
    stamps = {p: p.stat().st_mtime for p in (tmp_path / "sw" / "trials").glob("*/result.json")}
    again = sweep(base, grid, repeats=1, root=tmp_path / "sw", profile_runs=5)
    assert len(again.rows) == 4
    assert stamps == {p: p.stat().st_mtime for p in (tmp_path / "sw" / "trials").glob("*/result.json")}
    assert again.dense == res.dense  # nothing was measured: the dense figure of the same sitting is kept
    # --retry-failed runs the failed ones again (they fail again: the policy is still wrong for this CNN)
    history = {p: p.stat().st_mtime for p in (tmp_path / "sw" / "trials").glob("*/history.csv")}
    retried = sweep(base, grid, repeats=1, root=tmp_path / "sw", profile_runs=5, retry_failed=True)
    assert len(retried.failed) == 2
    assert history == {p: p.stat().st_mtime for p in (tmp_path / "sw" / "trials").glob("*/history.csv")}
    # --reprofile measures every finished trial and the dense model again, without training
    ok_results = [tmp_path / "sw" / "trials" / r["trial"] / "result.json" for r in ok]
    before = {p: p.stat().st_mtime_ns for p in ok_results}
    again = sweep(base, grid, repeats=1, root=tmp_path / "sw", profile_runs=5, reprofile=True)
    assert all(p.stat().st_mtime_ns > before[p] for p in ok_results)
    assert history == {p: p.stat().st_mtime for p in (tmp_path / "sw" / "trials").glob("*/history.csv")}
    assert again.dense["latency_median_ms"] > 0 and again.dense["path"] == res.dense["path"]
    assert all(r["latency_median_ms"] > 0 for r in again.rows if r["status"] == "ok")
    # A changed base recipe cannot silently reuse the old trials.
    from edgesparse.recipe import override

    with pytest.raises(SweepError, match="different base recipe"):
        sweep(override(base, {"sparsity.epochs": 3}), grid, root=tmp_path / "sw", profile_runs=0)


def test_sweep_with_two_workers(tmp_path: Path) -> None:
    res = sweep(_base(tmp_path), {"sparsity.final": [0.5, 0.8]}, root=tmp_path / "sw", workers=2, profile_runs=0)
    assert [r["status"] for r in res.rows] == ["ok", "ok"]


def test_sweep_on_a_local_ray_instance_with_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """As users run it: the recipe, its data and -o given relative to the current directory (Ray's workers run
    elsewhere), the cluster checked for the shared folders, and one line per finished trial."""
    import logging

    import numpy as np
    from sklearn.datasets import load_digits

    from edgesparse.recipe import load_recipe

    ray = pytest.importorskip("ray")
    digits = load_digits()
    np.savez(tmp_path / "digits.npz", x=(digits.images / 16.0).astype(np.float32)[..., None], y=digits.target)
    raw = tiny_recipe(tmp_path, sparsity={"epochs": 2, "end": 1}, data={"npz": "digits.npz", "batch_size": 64})
    raw.pop("output_dir")
    raw["export"] = {"objective": "size"}
    write_recipe(tmp_path, raw)
    monkeypatch.chdir(tmp_path)
    base = load_recipe("recipe.yaml")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             logging_level="ERROR", runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    try:
        address = ray.get_runtime_context().gcs_address
        with caplog.at_level(logging.INFO, logger="edgesparse.sweep"):
            res = sweep(base, {"sparsity.final": [0.5, 0.8]}, root="sw", ray_address=address, profile_runs=0)
    finally:
        ray.shutdown()
    assert [r["status"] for r in res.rows] == ["ok", "ok"], res.rows
    assert res.root == tmp_path / "sw" and len(list((tmp_path / "sw" / "trials").glob("*/result.json"))) == 2
    lines = sorted(r.getMessage() for r in caplog.records if r.getMessage().startswith("trial "))
    assert [line[:10] for line in lines] == ["trial 1/2 ", "trial 2/2 "] and all(": ok, TFLite" in x for x in lines)
    assert not list(tmp_path.glob("sw/.edgesparse-ray-check-*"))  # the markers of the shared-folder check are gone


def test_ray_connection_errors_name_the_cause() -> None:
    ray = pytest.importorskip("ray")
    from edgesparse.sweep.cluster import connect_error

    try:
        try:
            raise ray.exceptions.AuthenticationError("Token authentication is enabled but no authentication token "
                                                     "was found")
        except Exception as inner:
            raise ConnectionError("Failed to connect to GCS") from inner
    except ConnectionError as exc:
        err = str(connect_error("10.0.0.5:6379", exc))
    assert "requires token authentication" in err and "no authentication token was found" in err
    assert "RAY_AUTH_TOKEN" in err and "ray get-auth-token" in err and "ray start --head" not in err
    err = str(connect_error("10.0.0.5:6379", ConnectionError("Could not find any running Ray instance")))
    assert "ConnectionError: Could not find any running Ray instance" in err and "--ray local" in err


def test_mirrored_with_one_device_says_so(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from edgesparse import _tf
    from edgesparse.run import _log_replicas

    with caplog.at_level(logging.INFO, logger="edgesparse"), _tf.strategy_scope("mirrored"):
        _log_replicas("mirrored")
    [info, warning] = [r for r in caplog.records if "training.distribution" in r.getMessage()]
    assert info.getMessage().startswith("training.distribution mirrored: 1 replica(s) on ")
    assert warning.levelno == logging.WARNING and "EDGESPARSE_CPU_DEVICES" in warning.getMessage()


def _history(run_dir: Path, phase: str) -> list[dict[str, float]]:
    with open(run_dir / "history.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items() if k not in ("phase", "sparsity") and v}
                for row in csv.DictReader(f) if row["phase"] == phase]


def test_mirrored_strategy_prunes_and_learns_what_one_device_learns(tmp_path: Path) -> None:
    """A run trains under MirroredStrategy on two logical CPU devices: pruning still works, and the same recipe on
    one device learns the same (the global batch is split in two and the gradients averaged, so the losses
    follow each other; summed or dropped replica gradients would not)."""
    runs = {}
    for name, devices in (("mirrored", "2"), ("single", None)):
        recipe = tiny_recipe(tmp_path / name, export=None)
        if devices:
            recipe["training"] = {"distribution": "mirrored"}
        path = write_recipe(tmp_path, recipe, f"{name}.yaml")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("EDGESPARSE_CPU_DEVICES", None)
        if devices:
            env["EDGESPARSE_CPU_DEVICES"] = devices
        proc = subprocess.run([sys.executable, "-m", "edgesparse.cli", "train", str(path)], capture_output=True,
                              text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        if devices:
            assert "training.distribution mirrored: 2 replica(s) on " in proc.stdout + proc.stderr
        runs[name] = tmp_path / name / "run"
    s = json.loads((runs["mirrored"] / "summary.json").read_text())
    one = json.loads((runs["single"] / "summary.json").read_text())
    assert s["training"] == {"distribution": "mirrored", "replicas": 2}
    assert one["training"]["replicas"] == 1
    assert all(v >= 0.74 for v in s["sparsity"]["achieved"]["layers"].values())
    # measured: baseline losses equal to 0.1% (same seed, same batches, only the reduction order differs), pruning
    # losses to 3% (the masks' ties); twice the learning rate from summed gradients moves epoch 1 by far more
    for phase, tolerance in (("baseline", 0.02), ("sparsity", 0.10)):
        m, o = _history(runs["mirrored"], phase), _history(runs["single"], phase)
        assert len(m) == len(o) > 0
        for a, b in zip(m, o, strict=True):
            assert abs(a["loss"] - b["loss"]) <= tolerance * b["loss"], (phase, m, o)
    for key in ("baseline", "sparsity", "model"):  # 179 validation samples: 0.05 is 9 of them
        assert abs(s[key]["validation_accuracy"] - one[key]["validation_accuracy"]) <= 0.05, (key, s[key], one[key])
    assert s["baseline"]["validation_accuracy"] > 0.8  # it learned digits


def test_sweep_section_in_the_recipe(tmp_path: Path) -> None:
    from edgesparse.recipe import load_recipe

    raw = tiny_recipe(tmp_path)
    raw["sweep"] = {"sparsity.final": [0.5, 0.9], "quantization.mode": ["none", "int8"]}
    base = load_recipe(write_recipe(tmp_path, raw))
    trials = plan(base, {**(base.sweep or {}), **parse_grid(["sparsity.final=0.8"])}, repeats=2)
    assert len(trials) == 1 * 2 * 2  # the command line axis replaced the recipe's sparsity.final
    assert {t.recipe(base).quantization.mode for t in trials} == {"none", "int8"}
    assert {t.seed for t in trials} == {0, 1} and len({t.baseline_key for t in trials}) == 2


def test_strategy_labels_read_alone() -> None:
    from edgesparse.sweep.report import strategy

    axes = ["sparsity.final", "sparsity.pattern", "quantization.mode", "sparsity.regularization.l1"]
    point = {"sparsity.final": 0.9, "sparsity.pattern": "block:1x16", "quantization.mode": "none",
             "sparsity.regularization.l1": 1e-05}
    assert strategy(point, axes) == "block:1x16 + float32 + l1=1e-05"
    assert strategy({**point, "quantization.mode": "pqat"}, axes[:3]) == "block:1x16 + pqat"
    assert strategy({"sparsity.final": 0.5}, ["sparsity.final"]) == "default"
