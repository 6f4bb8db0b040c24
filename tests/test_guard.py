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
    assert "sparsity.max_drop allows 2" in msg and "sparsity.final (now 0.97)" in msg
    # 97% in one epoch leaves the model at chance: the guard says so, with what it found, and what to change
    assert ("collapsed in the phase" in msg or "scores at chance" in msg) and "(1) " in msg, msg
    assert "Lower sparsity.optimizer.learning_rate" in msg and "prune more gradually" in msg
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


def _balanced_pick(cands: list[dict[str, Any]]) -> dict[str, Any]:
    """What the balanced rule must keep among export.json's candidates: the smallest not slower than dense, else
    the fastest."""
    ok = [c for c in cands if not c["rejected"]]
    fine = [c for c in ok if c["latency_ratio"] <= NOT_SLOWER]
    return min(fine, key=lambda c: c["bytes"]) if fine else min(ok, key=lambda c: c["latency_ratio"])


def test_int8_export_never_slower_than_dense_by_default(tmp_path: Path) -> None:
    """A ResNet with BatchNorm and residual Adds, 80% unstructured, int8: every candidate is listed with its
    bytes, resolver and paired latency ratio; XNNPACK refuses the int8 CSR file (so it runs slower than dense);
    the one kept follows the balanced rule exactly and is not slower than dense, and it verified."""
    recipe = _recipe(tmp_path, model={"builtin": "resnet", "width": 8, "blocks": [1, 1]},
                     sparsity={"final": 0.8, "epochs": 3, "end": 1.5, "optimizer": {"learning_rate": 0.003}},
                     quantization={"mode": "int8"})
    s = train(recipe).summary
    info = json.loads((Path(s.tflite.path).parent / "export.json").read_text())
    assert info["objective"] == "balanced" and info["requested_quantization"] == "int8"
    for c in info["candidates"]:
        assert c["bytes"] > 0 and (c["rejected"] or (c["latency_ratio"] > 0 and c["resolver"]))
    kept = next(c for c in info["candidates"] if c["chosen"])
    assert kept["bytes"] == s.tflite.bytes and s.tflite.latency_ratio == kept["latency_ratio"]
    assert kept == _balanced_pick(info["candidates"])
    csr = next(c for c in info["candidates"] if c["mode"] == "int8" and c["sparse_encoding"])
    assert csr["resolver"] == "builtin" and csr["latency_ratio"] > NOT_SLOWER and not csr["chosen"], csr
    # a float32 conversion of the pruned model runs as fast as dense, so something always qualifies
    assert s.tflite.latency_ratio is not None and s.tflite.latency_ratio <= NOT_SLOWER
    # the pruned model still knows digits (measured: dense 95%, 80% pruned in 3 epochs 72%; it fell to chance
    # with the 2 epochs at 5e-4 this test used before), and what was kept computes what it computes
    assert s.baseline.accuracy > 0.9 and s.model.accuracy > 0.5, (s.baseline, s.model)
    assert s.tflite.accuracy is not None and s.tflite.accuracy >= s.model.accuracy - 0.02, s.tflite


@pytest.fixture(scope="module")
def pruned_fc_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Any]:
    """A CNN trained briefly on digits whose FC kernel is pruned to 80% (the int8 CSR FC XNNPACK refuses), its
    recipe (int8, sparse encoding auto, objective balanced) and its data."""
    import numpy as np

    from edgesparse import _tf
    from edgesparse.data import load_dataset

    tmp = tmp_path_factory.mktemp("guard")
    recipe = _recipe(tmp, quantization={"mode": "int8"}, sparsity=None)
    data = load_dataset(recipe.data, 0)
    keras = _tf.keras()
    keras.utils.set_random_seed(0)
    inputs = keras.Input(data.input_shape)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu", name="fc")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(data.x_train, data.y_train, epochs=3, batch_size=64, verbose=0)
    k = model.get_layer("fc").kernel
    w = k.numpy()
    k.assign(np.where(np.abs(w) >= np.quantile(np.abs(w), 0.8), w, 0.0))
    return model, recipe, data


def _reference(keras: Any, input_shape: tuple[int, ...], width: int) -> Any:
    """A stand-in "dense model" of the same input and output: width 0 is far cheaper than the pruned CNN, a wide
    one far dearer, so which side of NOT_SLOWER each candidate lands is not left to noise."""
    inputs = keras.Input(input_shape)
    x = inputs
    for _ in range(2 if width else 0):
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


@pytest.mark.parametrize("width", [0, 128], ids=["every_candidate_slower", "every_candidate_faster"])
def test_balanced_keeps_the_smallest_not_slower_else_the_fastest_on_real_candidates(
        pruned_fc_model: tuple[Any, Any, Any], tmp_path: Path, width: int) -> None:
    """Real conversions, verifications and paired timings; only the reference they are timed against is chosen so
    that no candidate (width 0) or every candidate (width 128) is as fast as it."""
    from edgesparse import _tf
    from edgesparse.export import export_models

    model, recipe, data = pruned_fc_model
    dense = _reference(_tf.keras(), data.input_shape, width)
    res = export_models(model, dense, recipe=recipe, data=data, bundle=tmp_path / "bundle", float_model=model)
    cands = res.info["candidates"]
    kept = next(c for c in cands if c["chosen"])
    assert all(not c["rejected"] and c["latency_ratio"] > 0 for c in cands), cands
    assert kept == _balanced_pick(cands)
    assert res.model_path.stat().st_size == kept["bytes"]
    ratios = [c["latency_ratio"] for c in cands]
    if width == 0:  # none qualifies: the pruned float32 conversions were tried too, and the fastest was kept
        assert min(ratios) > NOT_SLOWER, cands
        assert {c["source"] for c in cands} == {"final", "float"}
        assert kept["latency_ratio"] == min(ratios) and res.info["quantization"] == kept["mode"]
    else:  # every int8 candidate qualifies: the smallest (the CSR file, XNNPACK refused or not), no float32 tried
        assert max(ratios) <= NOT_SLOWER, cands
        assert {c["source"] for c in cands} == {"final"} and len(cands) == 2
        assert kept["bytes"] == min(c["bytes"] for c in cands) and kept["sparse_encoding"] is True
        assert res.info["quantization"] == "int8"
