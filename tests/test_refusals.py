"""Nothing silent (issue 9): settings a recipe gives are used or refused, validate checks data and model, readable output, file modes."""

from __future__ import annotations

import io
import logging
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from edgesparse.cli import main
from edgesparse.errors import DataError, RecipeError
from edgesparse.recipe import load_recipe, validate_recipe
from tests.conftest import tiny_recipe, write_recipe


def _plan(tmp_path: Path, **sparsity: Any) -> Any:
    from edgesparse.data import load_dataset
    from edgesparse.models import build_model
    from edgesparse.train.sparsity import plan_sparsity

    recipe = validate_recipe(tiny_recipe(tmp_path, sparsity=sparsity))
    data = load_dataset(recipe.data, 0)
    return plan_sparsity(build_model(recipe.model, data.input_shape, 10), recipe.sparsity, 10)


# --- everything a recipe says is used or refused ------------------------------------------------

def test_override_matching_no_layer_lists_the_prunable_layers(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"match '\^fc_1\$' matches no prunable layer of model 'small_cnn'.*"
                                          r"Prunable layers: conv1, conv2, fc1, logits"):
        _plan(tmp_path, layers=[{"match": "^conv1$", "skip": True}, {"match": "^fc_1$", "final": 0.5}])
    # a matching override is used, as before
    plan = _plan(tmp_path, layers=[{"match": "^fc1$", "final": 0.5}])
    assert {lp.name: lp.target for lp in plan.layers}["fc1"] == 0.5


def test_block_pattern_that_does_not_divide_a_kernel_names_the_layer(tmp_path: Path) -> None:
    # small_cnn with dense 32: fc1 is 32 outputs x 128 inputs, logits 10 x 32; 4x16 blocks do not fit logits
    with pytest.raises(RecipeError, match=r"block:4x16 does not divide layer 'logits' \(Dense, 10 outputs x 32 "
                                          r"inputs; Keras kernel shape \(32, 10\)\)"):
        _plan(tmp_path, pattern="block:4x16")
    plan = _plan(tmp_path, pattern="block:4x16", layers=[{"match": "^logits$", "pattern": "unstructured"}])
    assert {lp.name: lp.pattern for lp in plan.layers}["fc1"] == "block:4x16"


def test_block_target_that_must_empty_an_output_row_is_refused(tmp_path: Path) -> None:
    """logits is 10 outputs x 32 inputs: 1x16 blocks give 2 per output, 20 in all; 60% keeps 8 < 10 outputs."""
    with pytest.raises(RecipeError, match=r"block:1x16 at 60% keeps about 8.0 of the 20 blocks of layer 'logits' "
                                          r".*at least one output would lose every weight.*final of at most 0.50"):
        _plan(tmp_path, final=0.6, layers=[{"match": "^logits$", "pattern": "block:1x16"}])
    # at 50% it keeps 10 blocks for 10 outputs, one each on average: the one ranking would empty some of them, so
    # logits is pruned unstructured, saying why; fc1 (32 x 128, 8 blocks per output) keeps about 3 per output
    plan = _plan(tmp_path, final=0.6, pattern="block:1x16", layers=[{"match": "^logits$", "final": 0.5}])
    layers = {lp.name: lp for lp in plan.layers}
    assert (layers["logits"].pattern, layers["logits"].target) == ("unstructured", 0.5)
    assert "keeps about 10.0 blocks for 10 output rows (fewer than 2 each): one ranking could take every block of a model output" in layers["logits"].note
    assert (layers["fc1"].pattern, layers["fc1"].target, layers["fc1"].note) == ("block:1x16", 0.6, "")
    # and the wrappers prune as planned: logits weight by weight, fc1 in 16-input blocks (Keras (in, out) order)
    from edgesparse.data import load_dataset
    from edgesparse.models import build_model
    from edgesparse.train.sparsity import apply_pruning

    recipe = validate_recipe(tiny_recipe(tmp_path, sparsity={"final": 0.6, "pattern": "block:1x16",
                                                             "layers": [{"match": "^logits$", "final": 0.5}]}))
    model = build_model(recipe.model, load_dataset(recipe.data, 0).input_shape, 10)
    wrapped = {w.layer.name: tuple(w.block_size) for w in apply_pruning(model, recipe.sparsity, plan).layers
               if hasattr(w, "block_size")}
    assert wrapped["logits"] == (1, 1) and wrapped["fc1"] == (16, 1), wrapped


def test_binary_or_non_utf8_recipe_is_a_recipe_error(tmp_path: Path) -> None:
    binary = tmp_path / "model.yaml"
    binary.write_bytes(b"TFL3\x00\x00\x1c\x00\x04\x00")
    with pytest.raises(RecipeError, match="is a binary file, not a YAML recipe"):
        load_recipe(binary)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("name: tiny\n# caf\u00e9\ndata: {builtin: digits}\n".encode("latin-1"))
    with pytest.raises(RecipeError, match=r"line 2: the file is not UTF-8 text \(byte 0xe9"):
        load_recipe(latin1)
    r = CliRunner().invoke(main, ["validate", str(binary)])
    assert r.exit_code == 1 and "binary file" in r.output and "Traceback" not in r.output


def _validate(*args: str) -> Any:
    return CliRunner().invoke(main, ["validate", *args])


def test_validate_resolves_data_and_model_without_training(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, tiny_recipe(tmp_path))
    r = _validate(str(path))
    assert r.exit_code == 0, r.output
    assert "# checked without training:" in r.output
    assert "data: digits train/val/test = " in r.output and "fits the data" in r.output
    assert "sparsity plan: 4 layers pruned: 75% unstructured: conv1, conv2, fc1, logits" in r.output
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


def test_validate_exits_1_when_the_npz_file_is_missing(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, tiny_recipe(tmp_path, data={"npz": "missing.npz"}))
    r = _validate(str(path))
    assert r.exit_code == 1
    assert f"npz file '{tmp_path / 'missing.npz'}' does not exist" in r.output and "Traceback" not in r.output


def test_validate_exits_1_on_npz_without_y_and_on_shape_mismatch(tmp_path: Path) -> None:
    np.savez(tmp_path / "nolabels.npz", x=np.zeros((20, 8, 8, 1), np.float32))
    r = _validate(str(write_recipe(tmp_path, tiny_recipe(tmp_path, data={"npz": "nolabels.npz"}))))
    assert r.exit_code == 1 and "has no array y" in r.output
    path = write_recipe(tmp_path, tiny_recipe(tmp_path, model={"factory": "tests.factories:wrong_input"}))
    r = _validate(str(path))
    assert r.exit_code == 1
    assert "the data's samples have shape (8, 8, 1) but the model" in r.output and "expects (16, 16, 1)" in r.output
    assert _validate(str(path), "--schema-only").exit_code == 0  # the text alone is fine


def test_validate_refuses_an_override_matching_nothing(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, tiny_recipe(tmp_path, sparsity={"layers": [{"match": "dense_1", "skip": True}]}))
    r = _validate(str(path))
    assert r.exit_code == 1 and "matches no prunable layer" in r.output and "conv1, conv2, fc1, logits" in r.output


def test_labels_beyond_outputs_are_a_data_error(tmp_path: Path) -> None:
    from edgesparse.check import check_recipe

    with pytest.raises(DataError, match="5 outputs"):
        check_recipe(validate_recipe(tiny_recipe(tmp_path, model={"factory": "tests.factories:five_outputs"})))


# --- artifacts and resume ----------------------------------------------------------------------

def test_artifacts_are_written_0644(tmp_path: Path) -> None:
    from edgesparse import _io

    old = os.umask(0o022)
    try:
        p = _io.write_json(tmp_path / "a" / "summary.json", {"x": 1})
        with _io.atomic_path(tmp_path / "model.tflite") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    for f in (p, tmp_path / "model.tflite"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, oct(f.stat().st_mode)


def test_trained_run_artifacts_are_readable_by_others(trained_run: Any) -> None:
    run = trained_run.run_dir
    bundle = Path(trained_run.summary.tflite.path).parent
    umask = os.umask(0o022)
    os.umask(umask)
    for f in [run / "summary.json", run / "history.csv", run / "baseline.keras", run / "final.weights.h5",
              bundle / "model.tflite", bundle / "export.json"]:
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, (f, oct(f.stat().st_mode))


def test_resume_says_which_phase_and_epoch_it_continues_from(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from edgesparse import _tf
    from edgesparse.data import load_dataset
    from edgesparse.models import build_model
    from edgesparse.recipe import OptimizerConfig
    from edgesparse.train import fit

    recipe = validate_recipe(tiny_recipe(tmp_path))
    data = load_dataset(recipe.data, 0)
    keras = _tf.keras()

    class StopAfterTwo(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            if epoch == 1:
                fit._STOP.set()  # what the first Ctrl-C does

    def phase(resume: bool, cbs: list[Any]) -> Any:
        model = build_model(recipe.model, data.input_shape, 10)
        return fit.run_phase("baseline", model, data, epochs=4, optimizer=OptimizerConfig(), batch_size=64, seed=0,
                             run_dir=tmp_path, history=fit.History(tmp_path / "history.csv"), resume=resume,
                             extra_callbacks=cbs)

    with pytest.raises(KeyboardInterrupt):
        phase(False, [StopAfterTwo()])
    fit._STOP.clear()
    with caplog.at_level(logging.INFO, logger="edgesparse"):
        r = phase(True, [])
    assert "resume: baseline phase continues from epoch 3 of 4 (2 completed" in caplog.text
    assert [int(h["epoch"]) for h in r.history] == [1, 2, 3, 4]


# --- readable output ---------------------------------------------------------------------------

def _long_named_models(tiny_tflite: dict[str, Path], tmp_path: Path) -> list[Path]:
    dense = tmp_path / "mobilenet_v2_shapes_96px_dense_float32_baseline.tflite"
    sparse = tmp_path / "mobilenet_v2_shapes_96px_sparse90_block1x16_pqat_int8.tflite"
    dense.write_bytes(tiny_tflite["dense"].read_bytes())
    sparse.write_bytes(tiny_tflite["int8"].read_bytes())
    return [dense, sparse]


def test_profile_fits_100_columns_with_full_names_and_wide_shows_all(tiny_tflite: dict[str, Path],
                                                                     tmp_path: Path) -> None:
    models = [str(p) for p in _long_named_models(tiny_tflite, tmp_path)]
    args = ["profile", *models, "--threads", "1,2", "--runs", "10", "--warmup", "1", "--json", str(tmp_path / "p.json")]
    r = CliRunner().invoke(main, args, env={"COLUMNS": "100"})
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert max(len(line) for line in lines) <= 100, "\n".join(lines)
    assert "…" not in r.output
    for m in models:
        assert f"] {Path(m).name}" in r.output  # each full name, once, in the legend
    for header in ("file bytes", "size ratio", "gzip bytes", "non-zero", "runtime weights", "median ms", "p90 ms",
                   "init ms", "model RSS", "drift", "resolver", "XNNPACK ops"):
        assert header in r.output, header
    assert "paired" in r.output  # the paired ratio against the first model is kept

    wide = CliRunner().invoke(main, args + ["--wide"], env={"COLUMNS": "100"})
    assert wide.exit_code == 0, wide.output
    assert "…" not in wide.output and "peak RSS" in wide.output
    assert sum(Path(m).name in wide.output for m in models) == 2
    assert max(len(line) for line in wide.output.splitlines()) > 100  # one table, as wide as it needs


def test_profile_tables_render_without_ellipsis_at_width_100(tiny_tflite: dict[str, Path], tmp_path: Path) -> None:
    from rich.console import Console

    from edgesparse.profile import report as rep
    from edgesparse.profile.measure import profile

    result = profile(_long_named_models(tiny_tflite, tmp_path), threads=[1], runs=5, warmup=1)
    console = Console(width=100, record=True, file=io.StringIO())
    for part in rep.console_tables(result, console.width):
        console.print(part)
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 100
    assert "mobilenet_v2_shapes_96px_sparse90_block1x16_pqat_int8.tflite" in text
    # the full table is chosen when it fits
    assert len(rep.console_tables(result, 400)) == 1


def test_latency_plot_keeps_medians_readable_with_a_100x_outlier(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from edgesparse.profile.report import _plot_latency, latency_plot_limit

    rng = np.random.default_rng(0)
    calm = list(rng.normal(1.0, 0.02, 300))
    spiky = calm[:-1] + [100.0]  # one run in 300 took 100x the median
    assert latency_plot_limit([calm, calm]) is None  # nothing far: the whole data on a plain axis
    top = latency_plot_limit([calm, spiky])
    assert top is not None and 1.05 < top < 1.5  # the axis ends just above the whiskers, not at 100 ms
    rows = [{"path": "dense.tflite", "threads": 1, "samples_ms": calm},
            {"path": "model.tflite", "threads": 1, "samples_ms": spiky}]
    _plot_latency(SimpleNamespace(rows=lambda: rows), tmp_path / "lat.png")
    assert (tmp_path / "lat.png").stat().st_size > 1000


def test_readme_recipe_block_validates() -> None:
    """The recipe guide's annotated recipe (docs/recipes.md), distillation section included, is a valid recipe."""
    import re

    import yaml

    from tests.conftest import ROOT

    guide = (ROOT / "docs" / "recipes.md").read_text()
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", guide, re.DOTALL) if "distillation:" in b)
    recipe = validate_recipe(yaml.safe_load(block))
    assert recipe.distillation is not None and recipe.distillation.temperature == 4.0
