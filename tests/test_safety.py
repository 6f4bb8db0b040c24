"""Model-file and recipe safety (issue 31, items 1-2): nothing in a file runs code unless trusted, nothing hangs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import edgesparse  # noqa: F401  (before tensorflow: sets up tf_keras)
from edgesparse.errors import ModelError


def _marker_lambda(marker: Path) -> Any:
    """A lambda whose body writes ``marker`` (shows whether its code ran while loading)."""
    return eval(f"lambda t: (open({str(marker)!r}, 'w').close(), t)[1]")


def _lambda_model(marker: Path, nested: bool = False) -> Any:
    from edgesparse import _tf

    keras = _tf.keras()
    inputs = keras.Input((4,))
    x = keras.layers.Lambda(_marker_lambda(marker))(inputs)
    if nested:  # the Lambda inside a sub-model inside the model: two levels down in the config
        inner_in = keras.Input((4,))
        inner = keras.Model(inner_in, keras.layers.Lambda(_marker_lambda(marker))(inner_in), name="inner")
        x = inner(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


def _load(path: Path, **kw: Any) -> Any:
    from edgesparse.models import PathModelConfig, _load_file  # type: ignore[attr-defined]

    return _load_file(PathModelConfig(path=str(path), **kw), None)


def _rewrite_h5_config(path: Path, old: str, new: str) -> None:
    import h5py

    with h5py.File(path, "r+") as f:
        text = f.attrs["model_config"]
        text = text.decode() if isinstance(text, bytes) else text
        f.attrs["model_config"] = text.replace(old, new)


def test_h5_lambda_spelled_with_a_unicode_escape_is_refused_and_its_code_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "m.h5"
    _lambda_model(marker).save(path)
    marker.unlink(missing_ok=True)  # building the model ran it once; only loading counts
    _rewrite_h5_config(path, '"Lambda"', '"\\u004cambda"')
    with pytest.raises(ModelError, match=r"Lambda layers.*trust_code"):
        _load(path)
    assert not marker.exists()
    model = _load(path, trust_code=True)  # trusted: it loads (and the code runs, as the user allowed)
    assert marker.exists() and len(model.layers) >= 3


def test_nested_lambda_in_keras_and_savedmodel_files_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    model = _lambda_model(marker, nested=True)
    keras_path, saved = tmp_path / "m.keras", tmp_path / "saved"
    model.save(keras_path)
    model.save(saved, save_format="tf")
    marker.unlink(missing_ok=True)
    for path in (keras_path, saved):
        with pytest.raises(ModelError, match="Lambda layers"):
            _load(path)
    assert not marker.exists()


def test_a_custom_layer_class_needs_custom_objects_or_trust() -> None:
    from edgesparse.models.filecheck import check_config

    config = {"class_name": "Functional", "config": {"layers": [
        {"class_name": "InputLayer", "config": {}},
        {"class_name": "Sequential", "config": {"layers": [
            {"class_name": "EvilLayer", "module": "evil.pkg", "registered_name": "evil>EvilLayer", "config": {}}]}},
        {"class_name": "Dense", "module": "keras.layers", "registered_name": None, "config": {}}]}}
    with pytest.raises(ModelError, match=r"custom class 'EvilLayer'.*custom_objects"):
        check_config([config], Path("m.keras"), trust_code=False, custom_names=set())
    check_config([config], Path("m.keras"), trust_code=False, custom_names={"EvilLayer"})
    check_config([config], Path("m.keras"), trust_code=True, custom_names=set())
    lam = json.loads(json.dumps(config).replace("EvilLayer", "\\u004cambda"))
    with pytest.raises(ModelError, match="Lambda"):
        check_config([lam], Path("m.keras"), trust_code=False, custom_names=set())


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_and_device_model_paths_are_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "m.keras"
    os.mkfifo(fifo)
    t0 = time.perf_counter()
    with pytest.raises(ModelError, match="named pipe"):
        _load(fifo)
    with pytest.raises(ModelError, match="device"):
        _load(Path("/dev/zero"))
    assert time.perf_counter() - t0 < 5


# ---------------------------------------------------------------------------------------------------------------
# recipes (item 2)


def _bomb(depth: int) -> str:
    lines = ['name: bomb', 'a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, depth + 1):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_is_refused_quickly_naming_the_limit(tmp_path: Path) -> None:
    from edgesparse.errors import RecipeError
    from edgesparse.recipe import MAX_RECIPE_NODES, load_recipe

    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb(9))  # 9^10 nodes once expanded; before: still mapping lines at 180 s and 8.4 GB
    t0 = time.perf_counter()
    with pytest.raises(RecipeError, match=rf"more than {MAX_RECIPE_NODES:,} YAML nodes.*MAX_RECIPE_NODES"):
        load_recipe(path)
    assert time.perf_counter() - t0 < 2
    path.write_text("name: &n [*n]\n")
    with pytest.raises(RecipeError, match="recursive"):
        load_recipe(path)


def test_recipe_aliases_within_the_bound_still_load_with_line_numbers(tmp_path: Path) -> None:
    from edgesparse.errors import RecipeError
    from edgesparse.recipe import load_recipe
    from tests.conftest import tiny_recipe

    recipe = tiny_recipe(tmp_path)
    text = yaml.safe_dump(recipe, sort_keys=False)
    text = text.replace("baseline:\n", "baseline: &base\n")
    text = text.replace("quantization:\n  mode: none", "quantization: {mode: *base}")
    path = tmp_path / "r.yaml"
    path.write_text(text)  # the alias expands (parsed once), and the error names the alias's line
    line = text.splitlines().index("quantization: {mode: *base}") + 1
    with pytest.raises(RecipeError, match=rf"line {line}\b"):
        load_recipe(path)
    path.write_text(text.replace("quantization: {mode: *base}", "quantization: {mode: none}"))
    assert load_recipe(path).baseline.epochs == recipe["baseline"]["epochs"]


def test_recipe_must_be_a_small_regular_file(tmp_path: Path) -> None:
    from edgesparse.errors import RecipeError
    from edgesparse.recipe import MAX_RECIPE_BYTES, load_recipe

    with pytest.raises(RecipeError, match="device"):
        load_recipe("/dev/zero")
    big = tmp_path / "big.yaml"
    big.write_text("name: big\n" + "# padding\n" * (MAX_RECIPE_BYTES // 10 + 1))
    with pytest.raises(RecipeError, match="over the limit"):
        load_recipe(big)
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "r.yaml"
        os.mkfifo(fifo)
        with pytest.raises(RecipeError, match="named pipe"):
            load_recipe(fifo)


def test_validate_says_a_factory_recipe_runs_code(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from edgesparse.cli import main
    from tests.conftest import tiny_recipe, write_recipe

    path = write_recipe(tmp_path, tiny_recipe(tmp_path, model={"factory": "tests.factories:tiny_regressor"}))
    res = CliRunner().invoke(main, ["validate", "--schema-only", str(path)])
    assert res.exit_code == 0, res.output
    assert "runs Python code" in res.output and "model.factory: tests.factories:tiny_regressor" in res.output
    res = CliRunner().invoke(main, ["validate", "--schema-only", str(write_recipe(tmp_path, tiny_recipe(tmp_path)))])
    assert res.exit_code == 0 and "runs Python code" not in res.output
