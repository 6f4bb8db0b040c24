"""Data sources: validation of the ``data:`` section, loaders, splits. Real (tiny) data only."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from edgesparse.data import BUILTINS, DATA_SOURCES, DataConfig, Dataset, load_dataset
from edgesparse.data import keras_datasets
from edgesparse.data.shapes import SHAPE_NAMES, ShapesConfig, generate_shapes
from edgesparse.errors import DataError

ADAPTER: TypeAdapter[Any] = TypeAdapter(DataConfig)


def validate(raw: dict[str, Any]) -> Any:
    return ADAPTER.validate_python(raw)


def error_of(raw: Any) -> dict[str, Any]:
    with pytest.raises(ValidationError) as info:
        ADAPTER.validate_python(raw)
    errors = info.value.errors(include_url=False)
    assert len(errors) == 1, errors
    return errors[0]


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset(validate({"builtin": "digits"}), seed=0)


# ---- the data section's schema --------------------------------------------------------------------


def test_registries_list_every_source_and_builtin() -> None:
    assert set(DATA_SOURCES) == {"builtin", "npz", "image_folder", "keras", "factory", "python", "tfrecord"}
    assert set(BUILTINS) == {"digits", "shapes", "wake_word", "machine_sound", "har", "keyword_tokens", "shape_boxes",
                             "shape_masks"}
    for cls in [*DATA_SOURCES.values(), *BUILTINS.values()]:
        assert issubclass(cls, BaseModel) and cls.model_config.get("extra") == "forbid"


@pytest.mark.parametrize(("raw", "cls_name"), [
    ({"builtin": "digits"}, "DigitsConfig"),
    ({"builtin": "shapes", "image_size": 96}, "ShapesConfig"),
    ({"npz": "a.npz", "scale": False}, "NpzConfig"),
    ({"image_folder": "photos", "image_size": [64, 48], "channels": 1}, "ImageFolderConfig"),
    ({"keras": "cifar10"}, "KerasConfig"),
])
def test_each_source_key_picks_its_model(raw: dict[str, Any], cls_name: str) -> None:
    cfg = validate(raw)
    assert type(cfg).__name__ == cls_name
    assert (cfg.validation_split, cfg.test_split, cfg.batch_size, cfg.limit) == (0.1, 0.2, 64, None)
    assert validate(cfg.model_dump()) == cfg  # round trip, as in recipe.lock.yaml


def test_no_source_key_lists_the_allowed_keys() -> None:
    err = error_of({"validation_split": 0.1})
    assert err["type"] == "data_source"
    assert all(k in err["msg"] for k in ("builtin", "npz", "image_folder", "keras"))
    assert error_of({"npz": "a.npz", "keras": "mnist"})["type"] == "data_source"  # two sources


def test_unknown_builtin_lists_known_names() -> None:
    err = error_of({"builtin": "digts"})
    assert err["type"] == "union_tag_invalid"
    assert err["ctx"]["tag"] == "digts" and "'digits'" in err["ctx"]["expected_tags"]
    assert "'shapes'" in err["ctx"]["expected_tags"]
    assert error_of({"builtin": None})["type"] == "union_tag_invalid"


def test_option_of_another_builtin_is_an_extra_field() -> None:
    err = error_of({"builtin": "digits", "image_size": 5})
    assert err["type"] == "extra_forbidden" and err["loc"][-1] == "image_size"
    # error locations must not contain the source key itself (it would point at the wrong field)
    assert "builtin" not in err["loc"] and "npz" not in error_of({"npz": "a", "bogus": 1})["loc"]


@pytest.mark.parametrize("bad", [
    {"validation_split": -0.1}, {"validation_split": 1.0}, {"test_split": 1.0}, {"test_split": -0.5},
    {"validation_split": 0.5, "test_split": 0.5}, {"batch_size": 0}, {"limit": 0},
])
def test_bad_common_fields_are_rejected(bad: dict[str, Any]) -> None:
    err = error_of({"builtin": "digits", **bad})
    if "validation_split" in bad and "test_split" in bad:
        assert "leaves no training data" in err["msg"]


@pytest.mark.parametrize("bad", [
    {"image_size": 4}, {"image_size": [49, 4]}, {"num_classes": 1}, {"num_classes": 9}, {"channels": 2},
    {"noise": -0.1}, {"samples_per_class": 1},
])
def test_bad_shapes_options_are_rejected(bad: dict[str, Any]) -> None:
    error_of({"builtin": "shapes", **bad})


def test_keras_names_are_checked() -> None:
    assert error_of({"keras": "imagenet"})["type"] == "literal_error"
    assert set(keras_datasets.KERAS_DATASETS) == {"mnist", "fashion_mnist", "cifar10"}


def test_load_dataset_takes_a_raw_mapping_and_explains_a_bad_one() -> None:
    ds = load_dataset({"builtin": "shapes", "image_size": 16, "samples_per_class": 10}, seed=0)
    assert ds.name == "shapes"
    with pytest.raises(DataError, match="builtins: digits, har, machine_sound, shapes"):
        load_dataset({"builtin": "digts"}, seed=0)


# ---- digits and splits ----------------------------------------------------------------------------


def test_digits_shapes_ranges_and_split_sizes(digits: Dataset) -> None:
    assert digits.input_shape == (8, 8, 1) and digits.num_classes == 10
    assert digits.class_names == [str(i) for i in range(10)]
    sizes = [len(digits.x_train), len(digits.x_val), len(digits.x_test)]
    assert sum(sizes) == 1797
    assert abs(sizes[2] / 1797 - 0.2) < 0.01 and abs(sizes[1] / 1797 - 0.1) < 0.01
    for x, y in [(digits.x_train, digits.y_train), (digits.x_val, digits.y_val), (digits.x_test, digits.y_test)]:
        assert x.dtype == np.float32 and y.dtype == np.int64 and len(x) == len(y)
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert set(np.unique(y)) == set(range(10))  # stratified: every class in every split
    desc = digits.describe()
    assert json.loads(json.dumps(desc)) == desc
    assert desc["train"] == sizes[0] and desc["input_shape"] == [8, 8, 1] and desc["num_classes"] == 10


def test_same_seed_same_splits_other_seed_other_splits(digits: Dataset) -> None:
    again = load_dataset(validate({"builtin": "digits"}), seed=0)
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        assert np.array_equal(getattr(digits, name), getattr(again, name)), name
    other = load_dataset(validate({"builtin": "digits"}), seed=1)
    assert len(other.x_test) == len(digits.x_test)
    assert not np.array_equal(np.sort(other.x_test.reshape(len(other.x_test), -1), axis=0),
                              np.sort(digits.x_test.reshape(len(digits.x_test), -1), axis=0))


def test_validation_split_does_not_change_the_test_split(digits: Dataset) -> None:
    more_val = load_dataset(validate({"builtin": "digits", "validation_split": 0.3}), seed=0)
    assert np.array_equal(more_val.x_test, digits.x_test)
    assert len(more_val.x_val) > len(digits.x_val)


def test_limit_is_stratified() -> None:
    ds = load_dataset(validate({"builtin": "digits", "limit": 200}), seed=0)
    total = len(ds.x_train) + len(ds.x_val) + len(ds.x_test)
    assert 190 <= total <= 210
    for y in (ds.y_train, ds.y_val, ds.y_test):
        assert set(np.unique(y)) == set(range(10))


def test_no_validation_split_gives_empty_validation_arrays() -> None:
    ds = load_dataset(validate({"builtin": "digits", "validation_split": 0.0}), seed=0)
    assert ds.x_val.shape == (0, 8, 8, 1) and ds.y_val.shape == (0,)


def test_zero_test_split_without_a_test_set_is_an_error() -> None:
    with pytest.raises(DataError, match="test_split"):
        load_dataset(validate({"builtin": "digits", "test_split": 0.0}), seed=0)


# ---- shapes ---------------------------------------------------------------------------------------


def test_shapes_are_balanced_in_range_and_named() -> None:
    ds = load_dataset(validate({"builtin": "shapes", "image_size": 24, "num_classes": 8, "samples_per_class": 20}),
                      seed=3)
    assert ds.input_shape == (24, 24, 3) and ds.num_classes == 8
    assert ds.class_names == list(SHAPE_NAMES) and "horizontal_bar" in ds.class_names
    y = np.concatenate([ds.y_train, ds.y_val, ds.y_test])
    assert np.array_equal(np.bincount(y), np.full(8, 20))
    assert np.array_equal(np.bincount(ds.y_test, minlength=8), np.full(8, 4))
    for x in (ds.x_train, ds.x_val, ds.x_test):
        assert x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0


def test_shapes_grey_and_rectangular() -> None:
    loaded = generate_shapes(ShapesConfig(builtin="shapes", image_size=(49, 10), channels=1, samples_per_class=5), 0)
    assert loaded.x.shape == (20, 49, 10, 1) and loaded.class_names == ["circle", "square", "triangle", "cross"]


def test_shapes_are_deterministic_by_seed() -> None:
    cfg = ShapesConfig(builtin="shapes", image_size=16, samples_per_class=10)
    a, b, c = generate_shapes(cfg, 0), generate_shapes(cfg, 0), generate_shapes(cfg, 1)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert not np.array_equal(a.x, c.x)


def test_shapes_vary_within_a_class_and_brightness_does_not_give_the_class_away() -> None:
    x = generate_shapes(ShapesConfig(builtin="shapes", image_size=32, noise=0.0, samples_per_class=50), 0).x
    per_class = x.reshape(4, 50, -1)
    assert per_class.std(axis=1).mean() > 0.1  # colour, size, position, polarity vary
    assert np.ptp(per_class.mean(axis=(1, 2))) < 0.1  # mean brightness is about the same for every class


def test_shapes_at_mobilenet_size_are_vectorised() -> None:
    # about 0.5 s on an idle 2-core machine; the bound only catches a per-pixel Python loop (minutes), not speed
    # (timings of a shared machine are no unit-test material)
    cfg = ShapesConfig(builtin="shapes", image_size=96, num_classes=4, samples_per_class=300)
    start = time.perf_counter()
    loaded = generate_shapes(cfg, 0)
    elapsed = time.perf_counter() - start
    assert loaded.x.shape == (1200, 96, 96, 3)
    assert elapsed < 20.0, f"generating 1200 images at 96x96 took {elapsed:.2f} s"


# ---- npz ------------------------------------------------------------------------------------------


def _ids(n: int, classes: int = 3, shape: tuple[int, ...] = (4, 4)) -> tuple[np.ndarray, np.ndarray]:
    """uint8 'images' whose first pixel is the sample's id, so a sample can be traced through the splits."""
    x = np.zeros((n, *shape), dtype=np.uint8)
    x.reshape(n, -1)[:, 0] = np.arange(n)
    return x, np.arange(n) % classes


def test_npz_round_trip_scales_uint8_and_adds_a_channel(tmp_path: Path) -> None:
    x, y = _ids(60)
    x[:, 1, 1] = 255
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_dataset(validate({"npz": "d.npz"}), seed=0, base_dir=tmp_path)
    assert ds.name == "d" and ds.input_shape == (4, 4, 1) and ds.num_classes == 3
    assert ds.x_train.dtype == np.float32 and ds.x_train[:, 1, 1, 0].min() == 1.0
    ids = np.concatenate([ds.x_train, ds.x_val, ds.x_test])[:, 0, 0, 0] * 255
    assert sorted(np.rint(ids).astype(int)) == list(range(60))
    raw = load_dataset(validate({"npz": str(tmp_path / "d.npz"), "scale": False}), seed=0)
    assert raw.x_train.max() == 255.0


def test_npz_with_its_own_test_set_and_class_names(tmp_path: Path) -> None:
    x, y = _ids(40)
    xt, yt = _ids(9)
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=xt + 100, y_test=yt, class_names=np.array(["a", "b", "c"]))
    ds = load_dataset(validate({"npz": tmp_path / "d.npz", "test_split": 0.0}), seed=0)  # a Path is accepted
    assert sorted(np.rint(ds.x_test[:, 0, 0, 0] * 255).astype(int)) == list(range(100, 109))
    assert len(ds.x_train) + len(ds.x_val) == 40 and ds.class_names == ["a", "b", "c"]


def test_representative_draws_from_train_only(tmp_path: Path) -> None:
    x, y = _ids(100, shape=(3,))
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_dataset(validate({"npz": "d.npz"}), seed=0, base_dir=tmp_path)
    train_ids = set(np.rint(ds.x_train[:, 0] * 255).astype(int))
    rep = ds.representative(20, seed=5)
    assert rep.shape == (20, 3) and set(np.rint(rep[:, 0] * 255).astype(int)) <= train_ids
    assert np.array_equal(rep, ds.representative(20, seed=5))
    assert len(ds.representative(10_000)) == len(ds.x_train)
    with pytest.raises(DataError, match="at least 1"):
        ds.representative(0)


def _save(path: Path, **arrays: Any) -> None:
    np.savez(path, **arrays)


X = np.random.default_rng(0).random((12, 5)).astype(np.float32)
Y = np.arange(12) % 2


@pytest.mark.parametrize(("arrays", "match"), [
    ({"x": X}, "no array y"),
    ({"x": X, "y": Y[:10]}, r"different numbers of samples \(x 12, y 10\)"),
    ({"x": X, "y": np.array(["cat", "dog"] * 6)}, "fits no task"),
    ({"x": X, "y": np.where(Y > 0, np.nan, 0.5)}, "NaN or infinite"),
    ({"x_a": X, "x": X, "y": Y}, "not both"),
    ({"x": X, "y": Y, "x_test": X}, "no y_test"),
    ({"x": np.where(X > 0.5, np.nan, X), "y": Y}, "NaN"),
    ({"x": X, "y": Y, "x_test": X[:, :3], "y_test": Y}, "must match"),
    ({"x": X, "y": Y + 1, "class_names": np.array(["a", "b"])}, "class names"),
    ({"x": (X * 10).astype(np.int16) - 5, "y": Y}, "scale: false"),
])
def test_bad_npz_contents_are_explained(tmp_path: Path, arrays: dict[str, Any], match: str) -> None:
    _save(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=match) as info:
        load_dataset(validate({"npz": "bad.npz"}), seed=0, base_dir=tmp_path)
    assert "bad" in str(info.value)


def test_npz_targets_of_any_task_load_and_wait_for_the_model(tmp_path: Path) -> None:
    """Float, one-hot, negative and multi-output targets load; which task they fit is decided with the model."""
    _save(tmp_path / "reg.npz", x=X, y=(Y + 0.5).astype(np.float32))
    assert load_dataset(validate({"npz": "reg.npz"}), seed=0, base_dir=tmp_path).y_train.dtype == np.float32
    _save(tmp_path / "onehot.npz", x=X, y=np.eye(2, dtype=int)[Y])
    ds = load_dataset(validate({"npz": "onehot.npz"}), seed=0, base_dir=tmp_path)
    assert ds.y_train.shape[1:] == (2,) and ds.num_classes == 2  # stratified by the rows' classes
    _save(tmp_path / "heads.npz", x=X, y_cls=Y, y_box=np.ones((12, 4), np.float32))
    heads = load_dataset(validate({"npz": "heads.npz"}), seed=0, base_dir=tmp_path)
    assert set(heads.y_train) == {"cls", "box"} and heads.sizes()[0] == len(heads.y_train["box"])


def test_labels_a_classifier_cannot_take_are_refused_with_the_model(tmp_path: Path) -> None:
    from edgesparse.check import check_recipe
    from edgesparse.errors import ModelError
    from edgesparse.recipe import validate_recipe
    from tests.conftest import tiny_recipe

    x = np.random.default_rng(0).random((60, 8, 8, 1)).astype(np.float32)
    _save(tmp_path / "neg.npz", x=x, y=(np.arange(60) % 10) - 1)
    recipe = validate_recipe(tiny_recipe(tmp_path, data={"npz": str(tmp_path / "neg.npz")}, task="classification"))
    with pytest.raises(DataError, match=r"range over \[-1, 8\]"):
        check_recipe(recipe)
    _save(tmp_path / "frac.npz", x=x, y=(np.arange(60) % 10) + 0.5)
    recipe = validate_recipe(tiny_recipe(tmp_path, data={"npz": str(tmp_path / "frac.npz")}, task="classification"))
    with pytest.raises(ModelError, match="not class labels"):
        check_recipe(recipe)


def test_bad_npz_files_are_explained(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(validate({"npz": "missing.npz"}), seed=0, base_dir=tmp_path)
    (tmp_path / "text.npz").write_text("not numpy")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_dataset(validate({"npz": "text.npz"}), seed=0, base_dir=tmp_path)
    np.save(tmp_path / "single.npy", X)
    with pytest.raises(DataError, match="single array"):
        load_dataset(validate({"npz": "single.npy"}), seed=0, base_dir=tmp_path)
    np.savez(tmp_path / "objects.npz", x=X, y=np.array([{"a": 1}] * 12, dtype=object))
    with pytest.raises(DataError, match="without pickle"):
        load_dataset(validate({"npz": "objects.npz"}), seed=0, base_dir=tmp_path)


# ---- image folder ---------------------------------------------------------------------------------


def _image_folder(root: Path, per_class: int = 4) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, mode in (("cat", "RGB"), ("dog", "RGBA"), ("eel", "L")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            size = (10 + i, 7 + 2 * i)  # different sizes: all get resized
            channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
            arr = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
            Image.fromarray(arr.squeeze(-1) if channels == 1 else arr, mode).save(root / name / f"{i}.png")
    (root / "cat" / "notes.txt").write_text("not an image, ignored")
    return root


def test_image_folder_reads_resizes_and_names_classes(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "photos")
    ds = load_dataset(validate({"image_folder": "photos", "image_size": [6, 5], "test_split": 0.25}), seed=0,
                      base_dir=tmp_path)
    assert ds.name == "photos" and ds.class_names == ["cat", "dog", "eel"] and ds.input_shape == (6, 5, 3)
    assert ds.streamed and sum(ds.sizes()) == 12
    assert set(np.unique(ds.test.head()[1])) == {0, 1, 2}
    x_train, _ = ds.train.head()
    assert x_train.shape[1:] == (6, 5, 3) and x_train.dtype == np.float32
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    grey = load_dataset(validate({"image_folder": str(root), "image_size": 4, "channels": 1}), seed=0)
    assert grey.input_shape == (4, 4, 1) and grey.train.head(2)[0].shape == (2, 4, 4, 1)


def test_bad_image_folders_are_explained(tmp_path: Path) -> None:
    def load(folder: str) -> Dataset:
        return load_dataset(validate({"image_folder": folder}), seed=0, base_dir=tmp_path)

    with pytest.raises(DataError, match="does not exist"):
        load("missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="0 class folder"):
        load("empty")
    root = _image_folder(tmp_path / "photos", per_class=2)
    (root / "fox").mkdir()
    with pytest.raises(DataError, match="fox' has no images"):
        load("photos")
    (root / "fox" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="fox' has no readable images"):
        load("photos")


def test_corrupt_images_are_skipped_counted_and_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _image_folder(tmp_path / "photos", per_class=3)
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    good = (root / "cat" / "0.png").read_bytes()
    (root / "eel" / "truncated.png").write_bytes(good[: len(good) // 2])
    with caplog.at_level("WARNING", logger="edgesparse.data.image_folder"):
        ds = load_dataset(validate({"image_folder": "photos", "image_size": 4}), seed=0, base_dir=tmp_path)
    assert sum(ds.sizes()) == 9
    skipped = ds.source["skipped_images"]
    assert sorted(Path(s["file"]).name for s in skipped) == ["broken.png", "truncated.png"]
    assert "skipped 2 unreadable image(s)" in caplog.text and "broken.png" in caplog.text


def test_image_folder_with_one_class_is_explained(tmp_path: Path) -> None:
    _image_folder(tmp_path / "photos", per_class=1)
    for extra in ("dog", "eel"):
        for f in (tmp_path / "photos" / extra).iterdir():
            f.unlink()
        (tmp_path / "photos" / extra).rmdir()
    with pytest.raises(DataError, match="at least two"):
        load_dataset(validate({"image_folder": "photos"}), seed=0, base_dir=tmp_path)


# ---- keras (offline) ------------------------------------------------------------------------------


def test_keras_download_failure_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one stand-in allowed here: the download itself, which must never happen in tests.

    The message is the one tf_keras raises offline (checked by hand: it fails within 0.1 s
    when there is no network, after the ~5 s TensorFlow import).
    """

    def offline(name: str) -> Any:
        raise Exception(  # noqa: TRY002 - tf_keras raises a bare Exception for failed downloads
            f"URL fetch failure on https://storage.googleapis.com/tensorflow/tf-keras-datasets/{name}.npz: None -- "
            "[Errno -2] Name or service not known"
        )

    monkeypatch.setattr(keras_datasets, "keras_load_data", offline)
    with pytest.raises(DataError) as info:
        load_dataset(validate({"keras": "mnist"}), seed=0)
    msg = str(info.value)
    assert "internet" in msg and str(Path("~/.keras/datasets/mnist.npz").expanduser()) in msg
    assert "npz" in msg and "builtin" in msg and "Name or service not known" in msg
