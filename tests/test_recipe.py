"""Recipe schema: every shipped recipe validates; every bad input gets a located, helpful RecipeError."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgesparse.errors import RecipeError
from edgesparse.recipe import Pattern, apply_overrides, json_schema, load_recipe, override, validate_recipe
from tests.conftest import ROOT, tiny_recipe, write_recipe

RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


def test_recipes_folder_is_not_empty() -> None:
    assert {p.name for p in RECIPES} >= {"quickstart.yaml"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_validates(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.name


@pytest.mark.slow
@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_passes_the_check_without_training(path: Path) -> None:
    """Data, model and sparsity plan (a layer override matching no prunable layer is refused there)."""
    from edgesparse.check import check_recipe

    recipe = load_recipe(path)
    report = check_recipe(recipe)
    assert recipe.sparsity is None or any(layer["prune"] for layer in report.plan)


def test_defaults_are_filled(tmp_path: Path) -> None:
    r = load_recipe(write_recipe(tmp_path, {"name": "x", "data": {"builtin": "digits"}, "model": {"builtin": "mlp"}}))
    assert r.sparsity is not None and r.sparsity.final == 0.9
    assert r.quantization.mode == "none"
    assert r.export is not None and r.export.sparse_encoding


def _error(tmp_path: Path, text: str, overrides: tuple[str, ...] = ()) -> str:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides)
    return str(info.value)


BASE = "name: x\ndata: {builtin: digits}\nmodel: {builtin: small_cnn}\n"


def test_missing_file_is_a_recipe_error(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")


def test_yaml_syntax_error_shows_line(tmp_path: Path) -> None:
    msg = _error(tmp_path, BASE + "sparsity:\n  final: [0.9\n  epochs: 3\n")
    assert "YAML syntax error" in msg and "line" in msg


def test_unknown_key_says_did_you_mean_and_line(tmp_path: Path) -> None:
    msg = _error(tmp_path, BASE + "sparsity:\n  finall: 0.9\n")
    assert "line 5" in msg
    assert "sparsity.finall" in msg
    assert "did you mean 'final'" in msg


def test_misspelt_top_level_section(tmp_path: Path) -> None:
    msg = _error(tmp_path, BASE + "quantisation: {mode: int8}\n")
    assert "did you mean 'quantization'" in msg and "line 4" in msg


def test_wrong_type_names_field_and_value(tmp_path: Path) -> None:
    msg = _error(tmp_path, BASE + "baseline: {epochs: many}\n")
    assert "baseline.epochs" in msg and "'many'" in msg


def test_sparsity_outside_unit_interval(tmp_path: Path) -> None:
    msg = _error(tmp_path, BASE + "sparsity: {final: 1.0}\n")
    assert "sparsity.final" in msg and "less than 1" in msg


def test_end_before_start(tmp_path: Path) -> None:
    msg = _error(tmp_path, BASE + "sparsity: {start: 4, end: 2, epochs: 8}\n")
    assert "end (2) must be after start (4)" in msg


def test_end_after_phase(tmp_path: Path) -> None:
    msg = _error(tmp_path, BASE + "sparsity: {end: 9, epochs: 8}\n")
    assert "after the last epoch" in msg


def test_unknown_mode_lists_allowed_and_suggests(tmp_path: Path) -> None:
    msg = _error(tmp_path, BASE + "quantization: {mode: pqta}\n")
    assert "did you mean 'pqat'" in msg and "int8" in msg and "line 4" in msg


def test_unknown_schedule(tmp_path: Path) -> None:
    msg = _error(tmp_path, BASE + "sparsity: {schedule: polinomial}\n")
    assert "did you mean 'polynomial'" in msg


def test_unknown_dataset_lists_known(tmp_path: Path) -> None:
    msg = _error(tmp_path, "name: x\ndata: {builtin: digts}\nmodel: {builtin: small_cnn}\n")
    assert "digits" in msg and "line 2" in msg


def test_unknown_model_lists_known(tmp_path: Path) -> None:
    msg = _error(tmp_path, "name: x\ndata: {builtin: digits}\nmodel: {builtin: mobilenet}\n")
    assert "mobilenet_v2" in msg and "line 3" in msg


def test_model_section_without_source(tmp_path: Path) -> None:
    msg = _error(tmp_path, "name: x\ndata: {builtin: digits}\nmodel: {alpha: 1}\n")
    assert "builtin, path or factory" in msg


@pytest.mark.parametrize(
    ("text", "kind", "shape"),
    [("unstructured", "unstructured", None), ("block:1x16", "block", (1, 16)), ("m_by_n:2x4", "m_by_n", (2, 4)),
     ({"block": [1, 4]}, "block", (1, 4)), ({"m_by_n": [2, 4]}, "m_by_n", (2, 4))],
)
def test_pattern_forms(text: object, kind: str, shape: tuple[int, int] | None) -> None:
    p = Pattern.model_validate(text)
    assert p.kind == kind and p.shape == shape


def test_unknown_pattern(tmp_path: Path) -> None:
    msg = _error(tmp_path, BASE + "sparsity: {pattern: diagonal}\n")
    assert "block:RxC" in msg and "sparsity.pattern" in msg


def test_m_by_n_needs_m_below_n() -> None:
    with pytest.raises(ValueError, match="M < N"):
        Pattern.model_validate("m_by_n:4x4")


def test_bad_layer_regex(tmp_path: Path) -> None:
    msg = _error(tmp_path, BASE + "sparsity:\n  layers:\n    - {match: 'conv[', skip: true}\n")
    assert "sparsity.layers.0.match" in msg and "regular expression" in msg


def test_set_overrides_and_validates(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, tiny_recipe(tmp_path))
    r = load_recipe(path, ["sparsity.final=0.5", "quantization.mode=int8", "sparsity.pattern=block:1x4"])
    assert r.sparsity is not None and r.sparsity.final == 0.5 and r.sparsity.pattern.shape == (1, 4)
    assert r.quantization.mode == "int8"
    with pytest.raises(RecipeError, match=r"--set: sparsity.final"):
        load_recipe(path, ["sparsity.final=2"])
    with pytest.raises(RecipeError, match="did you mean 'final'"):
        load_recipe(path, ["sparsity.fnal=0.5"])
    with pytest.raises(RecipeError, match="key.path=value"):
        load_recipe(path, ["sparsity.final"])


def test_null_removes_a_section(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, tiny_recipe(tmp_path))
    assert load_recipe(path, ["sparsity=null"]).sparsity is None


def test_override_copy_keeps_base_dir(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, tiny_recipe(tmp_path))
    base = load_recipe(path)
    new = override(base, {"sparsity.final": 0.6})
    assert new.sparsity is not None and new.sparsity.final == 0.6
    assert base.sparsity is not None and base.sparsity.final == 0.75


def test_pqat_needs_sparsity(tmp_path: Path) -> None:
    raw = tiny_recipe(tmp_path, quantization={"mode": "pqat"})
    raw["sparsity"] = None  # `sparsity: null` disables pruning (omitting it keeps the defaults)
    with pytest.raises(RecipeError, match="pqat"):
        validate_recipe(raw)


def test_apply_overrides_creates_sections() -> None:
    raw: dict = {"name": "x"}
    apply_overrides(raw, ["sparsity.regularization.l1=1e-5"])
    assert raw == {"name": "x", "sparsity": {"regularization": {"l1": 1e-5}}}


def test_json_schema_lists_sections() -> None:
    schema = json_schema()
    assert {"data", "model", "sparsity", "quantization", "export"} <= set(schema["properties"])
