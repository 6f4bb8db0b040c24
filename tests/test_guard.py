"""Nothing silent: the accuracy guard against the dense model, run directories and bundles that are never
overwritten silently, and export candidates chosen by measured latency."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgesparse.errors import RunDirError, TrainError
from edgesparse.export.candidates import NOT_SLOWER, Candidate, choose
from edgesparse.recipe import validate_recipe
from edgesparse.run import bundle_dir, default_run_dir, export, train
from tests.conftest import tiny_recipe


def _recipe(tmp: Path, **sections: Any) -> Any:
    return validate_recipe(tiny_recipe(tmp, **sections))


def test_guard_fails_a_model_that_lost_accuracy_against_dense(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, sparsity={"final": 0.97, "epochs": 1, "end": 1, "on_drop": "fail"}, export=None)
    with pytest.raises(TrainError) as err:
        train(recipe)
    msg = str(err.value)
    assert "after sparsity the model's validation accuracy is" in msg and "below the dense baseline's" in msg
    assert "sparsity.max_drop allows 2" in msg and "sparsity.epochs" in msg and "sparsity.final (now 0.97)" in msg
    assert "on_drop: warn" in msg


def test_guard_warns_and_records_validation_accuracies(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, sparsity={"final": 0.97, "epochs": 1, "end": 1, "on_drop": "warn"}, export=None)
    s = train(recipe).summary
    assert s.baseline.validation_accuracy is not None and s.sparsity is not None
    assert s.sparsity.validation_accuracy is not None and s.model.validation_accuracy is not None
    drop = (s.baseline.validation_accuracy - s.sparsity.validation_accuracy) * 100
    assert drop > 2.0  # 97% sparsity after one epoch: the guard's case
    assert any("below the dense baseline's" in w for w in s.warnings)


def test_guard_passes_a_gentle_run(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, sparsity={"final": 0.3, "epochs": 2, "on_drop": "fail", "max_drop": 5.0},
                     export=None)
    s = train(recipe).summary
    assert not any("below the dense baseline" in w for w in s.warnings)


def test_a_second_run_does_not_overwrite_the_first(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, baseline={"epochs": 1}, sparsity=None, export=None)
    first = train(recipe)
    with pytest.raises(RunDirError, match=r"already holds a finished run.*-o DIR.*--resume.*--force"):
        train(recipe)
    assert json.loads((first.run_dir / "summary.json").read_text())["name"] == "tiny"
    again = train(recipe, force=True)
    assert again.run_dir == first.run_dir and (again.run_dir / "summary.json").exists()
    train(recipe, resume=True)  # resuming the same recipe is allowed


def test_runs_moved_with_o_get_their_own_bundles(tmp_path: Path) -> None:
    base = tiny_recipe(tmp_path, baseline={"epochs": 1}, sparsity=None)
    base["export"] = {"objective": "size"}
    base.pop("output_dir")
    recipe = validate_recipe(base)
    assert bundle_dir(recipe, default_run_dir(recipe)) == Path("export") / "tiny"
    a = train(recipe, run_dir=tmp_path / "a")
    b = train(recipe, run_dir=tmp_path / "b")
    assert a.summary.tflite is not None and b.summary.tflite is not None
    assert Path(a.summary.tflite.bundle) == tmp_path / "a" / "bundle"
    assert Path(b.summary.tflite.bundle) == tmp_path / "b" / "bundle"
    # exporting run b into run a's bundle is refused, unless forced
    with pytest.raises(RunDirError, match="holds the export of the run in"):
        export(tmp_path / "b", tmp_path / "a" / "bundle")
    export(tmp_path / "a", tmp_path / "a" / "bundle")  # its own bundle: fine
    export(tmp_path / "b", tmp_path / "a" / "bundle", force=True)
    owner = json.loads((tmp_path / "a" / "bundle" / "export.json").read_text())["run_dir"]
    assert owner == str((tmp_path / "b").resolve())


def _c(nbytes: int, ratio: float | None, rejected: str | None = None) -> Candidate:
    return Candidate(mode="int8", sparse_encoding=True, data=b"x" * nbytes, latency_ratio=ratio, rejected=rejected)


def test_objectives_choose_by_size_latency_or_both() -> None:
    small_slow, big_fast, mid_ok = _c(10, 2.5), _c(40, 0.6), _c(20, 0.95)
    cands = [small_slow, big_fast, mid_ok, _c(5, 0.1, rejected="verification failed")]
    assert choose(cands, "size") is small_slow
    assert choose(cands, "latency") is big_fast
    assert choose(cands, "balanced") is mid_ok  # the smallest that is not slower than dense
    assert choose([_c(10, 2.5), _c(30, 1.4)], "balanced").latency_ratio == 1.4  # none qualifies: the fastest
    assert choose([_c(5, 0.1, rejected="x")], "balanced") is None


def test_int8_export_never_slower_than_dense_by_default(tmp_path: Path) -> None:
    """A ResNet with BatchNorm and residual Adds, 80% unstructured, int8: every candidate is listed with its
    bytes, resolver and paired latency ratio, and the one kept follows the balanced rule."""
    recipe = _recipe(tmp_path, model={"builtin": "resnet", "width": 8, "blocks": [1, 1]},
                     sparsity={"final": 0.8, "epochs": 2}, quantization={"mode": "int8"})
    s = train(recipe).summary
    info = json.loads((Path(s.tflite.path).parent / "export.json").read_text())
    assert info["objective"] == "balanced" and info["requested_quantization"] == "int8"
    for c in info["candidates"]:
        assert c["bytes"] > 0 and (c["rejected"] or (c["latency_ratio"] > 0 and c["resolver"]))
    kept = next(c for c in info["candidates"] if c["chosen"])
    assert kept["bytes"] == s.tflite.bytes and s.tflite.latency_ratio == kept["latency_ratio"]
    fine = [c for c in info["candidates"] if not c["rejected"] and c["latency_ratio"] <= NOT_SLOWER]
    assert kept in fine or not fine
