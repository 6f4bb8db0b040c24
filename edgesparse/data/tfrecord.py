"""``{tfrecord: ...}``: ``tf.train.Example`` records in TFRecord files, streamed.

Recipe forms::

    data: {tfrecord: "data/all-*.tfrecord"}                 # one glob; validation_split/test_split carve it
    data:
      tfrecord: {train: "train-*.tfrecord", validation: "val-*.tfrecord", test: "test-*.tfrecord"}
      x: image                                             # the input feature (or {input_name: feature, ...})
      y: label                                             # the target feature (or {output_name: feature, ...})
      features: {window: {shape: [128, 9]}, raw: {shape: [32, 32, 3], dtype: uint8, scale: 0.003921568}}
    data: {tfrecord: ~/tensorflow_datasets/mnist/3.0.1}     # a TFDS folder: *-train/-validation/-test.tfrecord*

The features are read from the first record: an encoded image (PNG, JPEG, GIF, BMP bytes) is decoded to
float32 in [0, 1] (``channels`` and ``image_size`` default to the first image's); other bytes are raw
values needing a ``features.<name>.shape`` (and ``dtype``, default uint8; ``scale`` multiplies them);
int64 and float lists keep the length they have in the first record (``shape`` reshapes them). Integer
inputs stay integers (token ids); a single-value feature is a scalar. ``x`` defaults to ``image`` (the
TFDS name) or to the one feature that is not ``y``; ``y`` defaults to ``label``.

Splits: a split without its own glob is carved from the training files by ``validation_split`` and
``test_split``, record by record (a fixed, seeded assignment of each record's index: the same records on
every pass, spread evenly over the files, not stratified). The records of every file are counted once and
the counts cached (``~/.cache/edgesparse/tfrecord-counts.json``, keyed by path, size and modification time;
``EDGESPARSE_CACHE`` moves it), along with the largest integer label (the number of classes). Nothing but
the batches in flight and the training split's shuffle buffer is held in memory: that buffer holds serialized
records (:data:`RECORD_SHUFFLE_BYTES`; an encoded image is several times smaller than its decoded float32
pixels), reshuffled every pass, unless ``shuffle_buffer`` is given (then the decoded samples are shuffled).
"""

from __future__ import annotations

import glob as globlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from edgesparse import _io, _tf
from edgesparse.data.dataset import Dataset
from edgesparse.data.registry import ImageSize, SourceConfig, data_source, hw, resolve
from edgesparse.data.stream import Split
from edgesparse.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
#: Knuth's multiplicative hash: record ``i`` of a carved glob goes to a split by ``(i * K + seed) mod 2**32``
_HASH_K, _HASH_M = 2654435761, 2**32
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM")
_RAW_DTYPES = Literal["uint8", "int8", "uint16", "int16", "int32", "int64", "float16", "float32", "float64"]
#: bytes of serialized records the training split's shuffle buffer holds (see :meth:`_Reader.stream`)
RECORD_SHUFFLE_BYTES = 32 * 2**20
#: version of the count cache's entries (bump when what is counted changes)
_CACHE_VERSION = 1


class FeatureConfig(BaseModel):
    """How one feature becomes an array: ``{shape: [128, 9]}`` or ``{shape: [32, 32, 3], dtype: uint8}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shape: list[int] | None = Field(None, description="one sample's shape (raw bytes need it; lists are reshaped)")
    dtype: _RAW_DTYPES = Field("uint8", description="the values' type in raw bytes")
    scale: float | None = Field(None, description="multiply the values by this (the result is float32)")


class TFRecordConfig(SourceConfig):
    """``{tfrecord: glob or {train, validation, test} globs or a TFDS folder, x: image, y: label}``."""

    tfrecord: str | dict[Literal["train", "validation", "test"], str] = Field(
        description="one glob of TFRecord files (split by validation_split/test_split), a mapping of globs by "
                    "split (train required), or a TFDS folder; relative to the recipe")
    x: str | dict[str, str] | None = Field(None, description="input feature, or {model input name: feature}; "
                                                             "default: image, or the one feature besides y")
    y: str | dict[str, str] | None = Field(None, description="target feature, or {output name: feature}; "
                                                             "default: label")
    features: dict[str, FeatureConfig] = Field(default_factory=dict, description="shape/dtype/scale by feature")
    image_size: ImageSize | None = Field(None, description="resize decoded images (default: the first image's size)")
    channels: Literal[1, 3, 4] | None = Field(None, description="decoded image channels (default: the first image's)")
    compression: Literal["auto", "none", "gzip", "zlib"] = Field(
        "auto", description="auto: gzip when the first file starts like a gzip file")
    num_classes: int | None = Field(None, gt=0, description="classes of an integer label (default: largest + 1)")

    @field_validator("tfrecord", mode="before")
    @classmethod
    def _paths(cls, value: Any) -> Any:
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if isinstance(value, Mapping):
            out = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in value.items()}
            if "train" not in out:
                raise ValueError("a mapping of globs needs a train glob (validation and test may be carved from it)")
            return out
        return value


def cache_file() -> Path:
    """Where record counts are cached: ``$EDGESPARSE_CACHE/tfrecord-counts.json`` (default ``~/.cache/edgesparse``)."""
    root = os.environ.get("EDGESPARSE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "edgesparse")
    return Path(root) / "tfrecord-counts.json"


def _files(pattern: str, base_dir: Path | None, what: str) -> list[str]:
    root = resolve(pattern, base_dir)
    found = sorted(f for f in globlib.glob(str(root)) if os.path.isfile(f))
    if not found:
        raise DataError(f"data.tfrecord: the {what} glob '{root}' matches no file; check the pattern (relative "
                        "paths are taken from the recipe's folder).")
    return [os.path.abspath(f) for f in found]


def _tfds_folder(root: Path) -> dict[str, list[str]]:
    """A TFDS folder's files by split (``name-train.tfrecord-00000-of-00004``)."""
    out: dict[str, list[str]] = {}
    for split in SPLITS:
        files = sorted(str(p) for p in root.glob(f"*-{split}.tfrecord*") if p.is_file())
        if files:
            out[split] = files
    if "train" not in out:
        raise DataError(f"data.tfrecord: folder '{root}' holds no '*-train.tfrecord*' files (a TFDS folder such as "
                        "~/tensorflow_datasets/mnist/3.0.1); give a glob of the files instead.")
    return out


def split_files(cfg: TFRecordConfig, base_dir: Path | None) -> dict[str, list[str]]:
    """The files of each split given its own glob (``train`` always; the others may be carved from it).

    Raises:
        DataError: a glob matches no file, or a folder has no TFDS train files.
    """
    if isinstance(cfg.tfrecord, dict):
        return {k: _files(v, base_dir, k) for k, v in cfg.tfrecord.items()}
    root = resolve(cfg.tfrecord, base_dir)
    if root.is_dir():
        return _tfds_folder(root)
    return {"train": _files(cfg.tfrecord, base_dir, "train")}


def _compression(cfg: TFRecordConfig, first: str) -> str:
    if cfg.compression != "auto":
        return {"none": "", "gzip": "GZIP", "zlib": "ZLIB"}[cfg.compression]
    with open(first, "rb") as f:
        return "GZIP" if f.read(2) == b"\x1f\x8b" else ""


def _first_example(files: list[str], compression: str) -> Any:
    tf = _tf.tf()
    for raw in tf.data.TFRecordDataset(files[:1], compression_type=compression).take(1):
        return tf.train.Example.FromString(raw.numpy())
    raise DataError(f"data.tfrecord: '{files[0]}' holds no record; remove it or give another glob.")


class _Feature:
    """One feature as the first record has it, and how each record's value becomes an array."""

    def __init__(self, name: str, example: Any, cfg: TFRecordConfig) -> None:
        self.name = name
        feats = example.features.feature
        if name not in feats:
            raise DataError(f"data.tfrecord: the records have no feature '{name}'; they have "
                            f"{', '.join(sorted(feats))}. Name the input and target features with data.x and data.y.")
        f = feats[name]
        self.kind = f.WhichOneof("kind")
        self.opts = cfg.features.get(name, FeatureConfig())
        values = getattr(f, self.kind).value if self.kind else []
        self.length = len(values)
        self.image = self.kind == "bytes_list" and self.length == 1 and values[0].startswith(_IMAGE_MAGIC)
        if self.image:
            self._image_shape(values[0], cfg)
        elif self.kind == "bytes_list":
            if self.opts.shape is None:
                size = len(values[0]) if values else 0
                raise DataError(f"data.tfrecord: feature '{name}' holds {size} raw bytes (not an encoded image); give "
                                f"its shape and type, e.g. data.features.{name}: {{shape: [...], dtype: uint8}}.")
            self.shape = list(self.opts.shape)
        elif self.kind in ("int64_list", "float_list"):
            natural = [] if self.length == 1 else [self.length]
            self.shape = list(self.opts.shape) if self.opts.shape is not None else natural
            if int(np.prod(self.shape)) != self.length:
                raise DataError(f"data.tfrecord: feature '{name}' has {self.length} values in the first record, "
                                f"which shape {self.shape} cannot hold; fix data.features.{name}.shape.")
        else:
            raise DataError(f"data.tfrecord: feature '{name}' is empty in the first record; give another feature.")

    def _image_shape(self, encoded: bytes, cfg: TFRecordConfig) -> None:
        tf = _tf.tf()
        img = tf.io.decode_image(encoded, channels=cfg.channels or 0, expand_animations=False)
        h, w, c = (int(d) for d in img.shape)
        self.channels = cfg.channels or c
        self.size = hw(cfg.image_size) if cfg.image_size is not None else (h, w)
        self.resize = cfg.image_size is not None
        self.shape = [*self.size, self.channels]

    def spec(self) -> Any:
        tf = _tf.tf()
        if self.kind == "bytes_list":
            return tf.io.FixedLenFeature([], tf.string)
        dtype = tf.int64 if self.kind == "int64_list" else tf.float32
        return tf.io.FixedLenFeature([self.length] if self.length != 1 else [], dtype)

    def convert(self, value: Any) -> Any:
        """One record's parsed value -> the sample's tensor (tf ops)."""
        tf = _tf.tf()
        if self.image:
            img = tf.io.decode_image(value, channels=self.channels, expand_animations=False)
            img = tf.image.resize(img, self.size) if self.resize else tf.cast(img, tf.float32)
            return tf.ensure_shape(img / 255.0, self.shape)
        if self.kind == "bytes_list":
            v = tf.io.decode_raw(value, getattr(tf, self.opts.dtype))
            v = tf.reshape(v, self.shape)
        else:
            v = tf.reshape(value, self.shape)
        if self.opts.scale is not None:
            return tf.cast(v, tf.float32) * self.opts.scale
        if v.dtype.is_floating and v.dtype != tf.float32:
            return tf.cast(v, tf.float32)
        return v

    def describe(self) -> dict[str, Any]:
        kind = "image" if self.image else {"bytes_list": "raw bytes", "int64_list": "int64",
                                           "float_list": "float"}[str(self.kind)]
        return {"kind": kind, "shape": self.shape}


def _names(value: str | dict[str, str] | None, default: str | None, example: Any, what: str,
           other: set[str]) -> str | dict[str, str]:
    if value is not None:
        return value
    feats = set(example.features.feature)
    if default is not None and default in feats:
        return default
    rest = sorted(feats - other)
    if what == "x" and len(rest) == 1:
        return rest[0]
    raise DataError(f"data.tfrecord: cannot tell which feature is the {'input' if what == 'x' else 'target'}; the "
                    f"records have {', '.join(sorted(feats))}. Name it with data.{what}: <feature> (or a mapping "
                    f"{{model {'input' if what == 'x' else 'output'} name: feature}}).")


def _as_map(names: str | dict[str, str]) -> dict[str, str]:
    return {"": names} if isinstance(names, str) else dict(names)


def _file_key(path: str) -> str:
    st = os.stat(path)
    return f"{path}|{st.st_size}|{st.st_mtime_ns}"


def _load_cache() -> dict[str, Any]:
    try:
        data = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and data.get("version") == _CACHE_VERSION else {}


def file_stats(files: list[str], compression: str, label: str | None, split: str = "") -> dict[str, dict[str, int]]:
    """Records of each file, and the largest value of the int64 ``label`` feature, read once and cached.

    Args:
        files: Absolute paths.
        compression: ``""``, ``"GZIP"`` or ``"ZLIB"``.
        label: A scalar int64 feature whose largest value is wanted (the classes), or None.
        split: The split the files belong to (named when one is corrupt).

    Returns:
        ``{path: {"records": n, "label_max": m}}`` (``label_max`` -1 without a label).

    Raises:
        DataError: a file is corrupt (named, with its split).
    """
    tf = _tf.tf()
    cache = _load_cache()
    entries: dict[str, Any] = cache.get("files", {})
    out: dict[str, dict[str, int]] = {}
    for path in files:
        key = f"{_file_key(path)}|{compression}|{label or ''}"
        if key not in entries:
            log.info("data: counting the records of '%s' (once: the count is cached in %s)", path, cache_file())
            ds = tf.data.TFRecordDataset([path], compression_type=compression).batch(1024)
            n, top = 0, -1
            try:
                for raw in ds:
                    n += int(raw.shape[0])
                    if label is not None:
                        parsed = tf.io.parse_example(raw, {label: tf.io.FixedLenFeature([], tf.int64)})[label]
                        top = max(top, int(tf.reduce_max(parsed)))
            except tf.errors.DataLossError as exc:  # a damaged shard: name it (and its split) before any training
                first = (exc.message or str(exc)).strip().splitlines()[0]
                raise DataError(f"data.tfrecord: '{path}'{f' ({split} split)' if split else ''} is corrupt after "
                                f"{n} readable records ({first}); re-copy or re-create the file, or leave it out of "
                                "the glob.") from None
            entries[key] = {"records": n, "label_max": top}
        out[path] = entries[key]
    try:
        _io.write_json(cache_file(), {"version": _CACHE_VERSION, "files": entries})
    except OSError as exc:  # an unwritable home: counting again next time is all it costs
        log.debug("tfrecord count cache not written: %s", exc)
    return out


def carve(count: int, seed: int, validation: float, test: float) -> np.ndarray:
    """Which split (0 train, 1 validation, 2 test) each of ``count`` records of a carved glob belongs to."""
    h = (np.arange(count, dtype=np.uint64) * np.uint64(_HASH_K) + np.uint64(seed % _HASH_M)) % np.uint64(_HASH_M)
    return _bucket(h, validation, test)


def _thresholds(validation: float, test: float) -> tuple[int, int]:
    return int(test * _HASH_M), int((test + validation) * _HASH_M)


def _bucket(h: Any, validation: float, test: float) -> Any:
    t_test, t_val = _thresholds(validation, test)
    return np.where(h < t_test, 2, np.where(h < t_val, 1, 0))


class _Reader:
    """Builds the stream of one split: records -> parsed features -> ``(x, y)``."""

    def __init__(self, cfg: TFRecordConfig, files: dict[str, list[str]], seed: int) -> None:
        self.cfg, self.files, self.seed = cfg, files, seed
        self.compression = _compression(cfg, files["train"][0])
        example = _first_example(files["train"], self.compression)
        y_names = _names(cfg.y, "label", example, "y", set())
        x_names = _names(cfg.x, "image", example, "x", set(_as_map(y_names).values()))
        self.x_map, self.y_map = _as_map(x_names), _as_map(y_names)
        used = dict.fromkeys([*self.x_map.values(), *self.y_map.values()])
        self.features = {n: _Feature(n, example, cfg) for n in used}
        self.spec = {n: f.spec() for n, f in self.features.items()}
        # carve the splits that have no glob of their own from the train files
        self.carved = [s for s in ("validation", "test") if s not in files]
        self.val_frac = cfg.validation_split if "validation" in self.carved else 0.0
        self.test_frac = cfg.test_split if "test" in self.carved else 0.0

    def label(self) -> str | None:
        """The one scalar int64 target feature (its largest value gives the classes), or None."""
        if len(self.y_map) != 1:
            return None
        f = self.features[next(iter(self.y_map.values()))]
        return f.name if f.kind == "int64_list" and f.shape == [] else None

    def _records(self, files: list[str]) -> Any:
        tf = _tf.tf()
        return tf.data.TFRecordDataset(files, compression_type=self.compression, num_parallel_reads=None)

    def _parse(self, raw: Any) -> tuple[Any, Any]:
        tf = _tf.tf()
        parsed = tf.io.parse_single_example(raw, self.spec)
        conv = {n: f.convert(parsed[n]) for n, f in self.features.items()}

        def pick(m: dict[str, str]) -> Any:
            return conv[m[""]] if list(m) == [""] else {k: conv[v] for k, v in m.items()}

        return pick(self.x_map), pick(self.y_map)

    def stream(self, split: str, count: int, record_bytes: float = 0.0) -> Split:
        """The split's stream; the training split reshuffles its serialized records every pass (a buffer of
        :data:`RECORD_SHUFFLE_BYTES` of records, which are far smaller than decoded samples), so its decoded
        samples need no second large buffer."""
        tf = _tf.tf()
        source = "train" if split in self.carved else split
        ds = self._records(self.files[source])
        if source == "train" and self.carved:
            want = {"train": 0, "validation": 1, "test": 2}[split]
            t_test, t_val = _thresholds(self.val_frac, self.test_frac)
            seed = self.seed % _HASH_M

            def keep(i: Any, raw: Any) -> Any:
                h = tf.math.floormod(i * _HASH_K + seed, _HASH_M)
                b = tf.where(h < t_test, 2, tf.where(h < t_val, 1, 0))
                return tf.equal(b, want)

            ds = ds.enumerate().filter(keep).map(lambda i, raw: raw)
        shuffled = split == "train" and self.cfg.shuffle_buffer is None
        if shuffled:
            buffer = int(min(count, max(1024, RECORD_SHUFFLE_BYTES // max(1.0, record_bytes))))
            ds = ds.shuffle(buffer, seed=self.seed, reshuffle_each_iteration=True)
        ds = ds.map(self._parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.apply(tf.data.experimental.assert_cardinality(count))
        return Split(stream=ds, count=count, name=split, shuffled_upstream=shuffled)


@data_source("tfrecord", TFRecordConfig)
def load_tfrecord(cfg: TFRecordConfig, seed: int, base_dir: Path | None) -> Dataset:
    """Read the features of the first record, count the records (cached) and stream the three splits.

    Raises:
        DataError: a glob matches nothing, a named feature is missing, raw bytes have no shape, a split is empty.
    """
    if cfg.limit is not None:
        raise DataError("data.limit does not apply to a tfrecord source; give a glob of fewer files instead.")
    files = split_files(cfg, base_dir)
    reader = _Reader(cfg, files, seed)
    label = reader.label()
    stats = {s: file_stats(fs, reader.compression, label, s) for s, fs in files.items()}
    counts = {s: sum(v["records"] for v in st.values()) for s, st in stats.items()}
    if reader.carved:
        buckets = np.bincount(carve(counts["train"], seed, reader.val_frac, reader.test_frac), minlength=3)
        counts["train"] = int(buckets[0])
        counts.update({s: int(buckets[SPLITS.index(s)]) for s in reader.carved})
    for split in SPLITS:
        if not counts.get(split):
            raise DataError(f"data.tfrecord: the {split} split has no record; give it a glob of its own or raise "
                            f"data.{'validation' if split == 'validation' else 'test'}_split.")
    num_classes = cfg.num_classes or 0
    if not num_classes and label is not None:
        num_classes = 1 + max(v["label_max"] for st in stats.values() for v in st.values())
    names = _class_names(files["train"][0], label, num_classes)
    first = Path(files["train"][0])
    source: dict[str, Any] = {"tfrecord": {s: (fs[0] if len(fs) == 1 else f"{len(fs)} files from {fs[0]}")
                                           for s, fs in files.items()},
                              "features": {n: f.describe() for n, f in reader.features.items()},
                              "x": reader.x_map.get("", reader.x_map), "y": reader.y_map.get("", reader.y_map),
                              "carved": reader.carved, "compression": reader.compression or "none"}
    train_files = files["train"]
    record_bytes = sum(os.path.getsize(f) for f in train_files) / max(1, sum(stats["train"][f]["records"]
                                                                              for f in train_files))
    return Dataset(name=first.name.split("-")[0].split(".")[0] or "tfrecord",
                   train=reader.stream("train", counts["train"], record_bytes),
                   val=reader.stream("validation", counts["validation"]),
                   test=reader.stream("test", counts["test"]), num_classes=num_classes, class_names=names,
                   source=source)


def _class_names(first: str, label: str | None, num_classes: int) -> list[str]:
    """TFDS writes ``<feature>.labels.txt`` beside the records; else the classes are numbered."""
    if label is not None:
        names_file = Path(first).parent / f"{label}.labels.txt"
        if names_file.is_file():
            names = [n for n in names_file.read_text().splitlines() if n]
            if len(names) >= num_classes:
                return names
    return [str(i) for i in range(num_classes)]


__all__ = ["FeatureConfig", "TFRecordConfig", "cache_file", "carve", "file_stats", "load_tfrecord", "split_files"]
