"""``data: {tfrecord: ...}``: tf.train.Example files read as streams (features from the first record, counts
cached, splits carved record by record), a TFDS folder with only its path given, and a run trained on them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgesparse.data import load_dataset
from edgesparse.errors import DataError


def _feature(value: Any) -> Any:
    from edgesparse import _tf

    tf = _tf.tf()
    if isinstance(value, bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    arr = np.asarray(value).reshape(-1)
    if arr.dtype.kind == "f":
        return tf.train.Feature(float_list=tf.train.FloatList(value=arr.tolist()))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=arr.tolist()))


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    from edgesparse import _tf

    tf = _tf.tf()
    with tf.io.TFRecordWriter(str(path)) as w:
        for row in rows:
            w.write(tf.train.Example(features=tf.train.Features(
                feature={k: _feature(v) for k, v in row.items()})).SerializeToString())


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images * 255 / 16).round().astype(np.uint8)[..., None], d.target.astype(np.int64)


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory, digits: tuple[np.ndarray, np.ndarray]
            ) -> Iterator[dict[str, Path]]:
    """A TFDS-style folder (PNG ``image``, int64 ``label``, label.labels.txt; two train shards) and a folder of
    records with raw bytes, a float list and an ``id``, written from scikit-learn's digits."""
    from edgesparse import _tf

    tf = _tf.tf()
    root = tmp_path_factory.mktemp("tfrecord")
    x, y = digits
    tfds = root / "digits" / "1.0.0"
    tfds.mkdir(parents=True)
    png = [tf.io.encode_png(img).numpy() for img in x]
    rows = [{"image": p, "label": int(c)} for p, c in zip(png, y, strict=True)]
    _write(tfds / "digits-train.tfrecord-00000-of-00002", rows[:700])
    _write(tfds / "digits-train.tfrecord-00001-of-00002", rows[700:1400])
    _write(tfds / "digits-test.tfrecord-00000-of-00001", rows[1400:])
    (tfds / "label.labels.txt").write_text("\n".join(f"digit {i}" for i in range(10)) + "\n")

    raw = root / "raw"
    raw.mkdir()
    rows = [{"pixels": img.tobytes(), "meta": np.array([i, 0.5, -1], np.float32), "id": i, "digit": int(c)}
            for i, (img, c) in enumerate(zip(x, y, strict=True))]
    _write(raw / "part-0.tfrecord", rows[:900])
    _write(raw / "part-1.tfrecord", rows[900:])
    cache = root / "cache"
    mp = pytest.MonkeyPatch()
    mp.setenv("EDGESPARSE_CACHE", str(cache))
    yield {"tfds": tfds, "raw": raw, "cache": cache}
    mp.undo()


def test_a_tfds_folder_needs_only_its_path(records: dict[str, Path], digits: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = digits
    ds = load_dataset({"tfrecord": str(records["tfds"]), "validation_split": 0.1}, seed=3)
    assert ds.streamed and ds.num_classes == 10 and ds.class_names[3] == "digit 3"
    assert ds.input_shape == (8, 8, 1)
    train, val, test = ds.sizes()
    assert test == len(y) - 1400 and train + val == 1400 and abs(val - 140) <= 3  # validation carved from train
    xt, yt = ds.test.head(5)
    assert xt.dtype == np.float32 and np.allclose(xt, x[1400:1405] / 255.0) and (yt == y[1400:1405]).all()
    assert ds.describe()["source"]["features"]["image"] == {"kind": "image", "shape": [8, 8, 1]}
    first = np.concatenate([b[1] for b in ds.train.batches(512)])
    second = np.concatenate([b[1] for b in ds.train.batches(512)])
    assert len(first) == train  # the count (cached) agrees with the stream
    # training reshuffles the serialized records every pass; its decoded samples need a batch-sized buffer only
    assert ds.train.shuffled_upstream and ds.train.shuffle_buffer(64) == 64 and not ds.val.shuffled_upstream
    assert sorted(first) == sorted(second) and list(first) != list(second)
    assert [b[1].tolist() for b in ds.val.batches(64)] == [b[1].tolist() for b in ds.val.batches(64)]


def test_one_glob_is_carved_record_by_record_with_named_features(records: dict[str, Path],
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    cfg = {"tfrecord": str(records["raw"] / "part-*.tfrecord"), "x": {"img": "pixels", "meta": "meta"}, "y": "id",
           "features": {"pixels": {"shape": [8, 8, 1], "scale": 1 / 255}}, "validation_split": 0.1,
           "test_split": 0.2}
    with caplog.at_level(logging.INFO, logger="edgesparse"):
        ds = load_dataset(cfg, seed=7)
    ids = {name: np.concatenate([b[1] for b in split.batches(256)])
           for name, split in (("train", ds.train), ("validation", ds.val), ("test", ds.test))}
    assert sorted(np.concatenate(list(ids.values())).tolist()) == list(range(1797))  # every record once
    assert [len(ids[s]) for s in ids] == list(ds.sizes())
    assert abs(len(ids["test"]) - 0.2 * 1797) < 10 and abs(len(ids["validation"]) - 0.1 * 1797) < 10
    assert abs(np.mean(ids["test"]) - 898) < 60  # spread over both files, not the tail of the glob
    xb, _ = ds.val.head(4)
    assert set(xb) == {"img", "meta"} and xb["img"].shape == (4, 8, 8, 1) and xb["img"].max() <= 1
    assert xb["meta"].shape == (4, 3) and (xb["meta"][:, 0] == ids["validation"][:4]).all()
    counted = [r for r in caplog.records if "counting the records" in r.getMessage()]
    assert len(counted) == 2  # one per file

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edgesparse"):
        again = load_dataset(cfg, seed=7)
    assert again.sizes() == ds.sizes() and not [r for r in caplog.records if "counting" in r.getMessage()]
    assert (records["cache"] / "tfrecord-counts.json").is_file()


@pytest.mark.parametrize(("extra", "says"), [
    ({"x": "pixels", "y": "digit"}, "data.features.pixels: {shape: [...], dtype: uint8}"),
    ({"x": "pixel", "y": "digit"}, "no feature 'pixel'; they have digit, id, meta, pixels"),
    ({}, "cannot tell which feature is the target"),
    ({"x": "meta", "y": "digit", "features": {"meta": {"shape": [2, 2]}}}, "has 3 values in the first record"),
])
def test_what_cannot_be_read_says_what_to_give(records: dict[str, Path], extra: dict[str, Any], says: str) -> None:
    with pytest.raises(DataError) as err:
        load_dataset({"tfrecord": str(records["raw"] / "*.tfrecord"), **extra}, seed=0)
    assert says in str(err.value)


def test_a_missing_glob_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="matches no file"):
        load_dataset({"tfrecord": {"train": str(tmp_path / "none-*.tfrecord")}}, seed=0)


@pytest.mark.slow
def test_a_recipe_trains_and_exports_int8_from_tfrecords(records: dict[str, Path], tmp_path: Path) -> None:
    from edgesparse.recipe import validate_recipe
    from edgesparse.run import train
    from tests.conftest import tiny_recipe

    recipe = validate_recipe(tiny_recipe(tmp_path, data={"tfrecord": str(records["tfds"]), "batch_size": 64},
                                         baseline={"epochs": 2}, sparsity=None, quantization={"mode": "int8"},
                                         export={"objective": "size"}))
    res = train(recipe, progress=False)
    s = res.summary
    assert s.data.train + s.data.validation == 1400 and s.data.test == 397
    assert s.baseline.metric is not None and s.baseline.metric > 0.5  # it learned from the streamed records
    assert s.tflite is not None and s.tflite.quantization == "int8" and s.tflite.metric is not None
