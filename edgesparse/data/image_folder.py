"""``{image_folder: photos/, image_size: [64, 64], channels: 3}``: one sub-folder of images per class, streamed.

Only the file list is held in memory: the splits (stratified, seeded, as for arrays) are lists of files, and each
split is a stream that reads and decodes its images batch by batch, in parallel. ``cache: memory`` keeps the
decoded images after the first epoch (memory grows with the data); ``cache: <file path>`` keeps them in files on
disk (``<path>.train``, ``.validation``, ``.test``), which bounds memory and saves decoding on later epochs.

Corrupt images: every file is checked when the folder is listed (Pillow's header and integrity check, without
decoding); one that fails is **skipped**, and one warning counts and names the skipped files (summary.json lists
them under ``data.source.skipped_images``). A file that passes the check but fails to decode later fails the run
with an error naming the file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from edgesparse import _tf
from edgesparse.data.dataset import Dataset
from edgesparse.data.registry import ImageSize, Loaded, SourceConfig, data_source, hw, path_str, resolve
from edgesparse.data.stream import Split
from edgesparse.errors import DataError

log = logging.getLogger(__name__)

#: file name endings read as images; other files (README, .DS_Store ...) are ignored
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
#: skipped files named in the warning (all of them are in summary.json)
_NAMED = 5


class ImageFolderConfig(SourceConfig):
    """``{image_folder: dir, image_size: [64, 64], channels: 3, cache: none}``.

    The sorted sub-folder names are the class names. Images are read with Pillow, converted to
    grey (``channels: 1``) or RGB, resized to ``image_size`` (an int or ``[height, width]``) and
    scaled to [0, 1], batch by batch as training reads them.
    """

    image_folder: str = Field(min_length=1, description="folder with one sub-folder per class, relative to the recipe")
    image_size: ImageSize = 64
    channels: Literal[1, 3] = 3
    cache: str = Field("none", min_length=1, description="none; memory (decoded images kept after the first epoch); "
                                                         "or a file path prefix (kept on disk)")

    _path = field_validator("image_folder", mode="before")(path_str)


def _readable(path: Path) -> str | None:
    """Why Pillow cannot read ``path`` (None when it passes the header and integrity check)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
    except Exception as exc:  # noqa: BLE001 - any failure of a user's file is a reason to skip it
        return f"{type(exc).__name__}: {exc}"
    return None


def list_images(root: Path) -> tuple[list[str], np.ndarray, list[str], list[dict[str, str]]]:
    """The readable image files below ``root``, their class indices, the class names and the skipped files.

    Raises:
        DataError: the folder is missing, has fewer than two class folders, or a class folder has no images.
    """
    if not root.is_dir():
        raise DataError(f"image folder '{root}' does not exist or is not a folder; check `data.image_folder` "
                        "in the recipe (relative paths are taken from the recipe's folder).")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"image folder '{root}' has {len(classes)} class folder(s); it needs one sub-folder per "
                        "class, at least two (e.g. cats/ and dogs/), each holding that class's images.")
    files: list[str] = []
    labels: list[int] = []
    skipped: list[dict[str, str]] = []
    for k, name in enumerate(classes):
        found = sorted(p for p in (root / name).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        good = []
        for f in found:
            why = _readable(f)
            if why is None:
                good.append(f)
            else:
                skipped.append({"file": str(f), "reason": why})
        if not good:
            what = "no readable images" if found else f"no images ({', '.join(IMAGE_SUFFIXES)})"
            raise DataError(f"class folder '{root / name}' has {what}; add images or remove the folder.")
        files += [str(f) for f in good]
        labels += [k] * len(good)
    if skipped:
        named = ", ".join(f"'{s['file']}' ({s['reason']})" for s in skipped[:_NAMED])
        more = f" and {len(skipped) - _NAMED} more" if len(skipped) > _NAMED else ""
        log.warning("image folder '%s': skipped %d unreadable image(s): %s%s", root, len(skipped), named, more)
    return files, np.asarray(labels, dtype=np.int64), classes, skipped


def _decoder(h: int, w: int, channels: int) -> Any:
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"

    def decode(path: bytes) -> np.ndarray:
        name = path.decode("utf-8", "replace")
        try:
            with Image.open(name) as im:
                img = im.convert(mode).resize((w, h), Image.Resampling.BILINEAR)
        except Exception as exc:  # noqa: BLE001 - name the file, whatever Pillow raised
            raise DataError(f"cannot read image '{name}' ({exc}); remove or replace it.") from None
        return (np.asarray(img, dtype=np.float32).reshape(h, w, channels) / np.float32(255.0)).astype(np.float32)

    return decode


def _stream(split: Split, cfg: ImageFolderConfig, seed: int) -> Split:
    """A split of file paths -> the stream of decoded ``(image, label)`` samples."""
    tf = _tf.tf()
    h, w = hw(cfg.image_size)
    decode = _decoder(h, w, cfg.channels)
    paths, labels = split.x, split.y
    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    if split.name == "train":  # file order reshuffled every epoch: a full shuffle for the price of paths
        ds = ds.shuffle(max(1, len(paths)), seed=seed, reshuffle_each_iteration=True)

    def load(p: Any, y: Any) -> tuple[Any, Any]:
        img = tf.numpy_function(decode, [p], tf.float32, stateful=False)
        return tf.ensure_shape(img, (h, w, cfg.channels)), y

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cfg.cache == "memory":
        ds = ds.cache()
    elif cfg.cache != "none":
        ds = ds.cache(f"{cfg.cache}.{split.name}")
    ds = ds.apply(tf.data.experimental.assert_cardinality(len(paths)))
    return Split(stream=ds, count=len(paths), name=split.name)


@data_source("image_folder", ImageFolderConfig)
def load_image_folder(cfg: ImageFolderConfig, seed: int, base_dir: Path | None) -> Dataset:
    """List the images below ``cfg.image_folder``, split the list, and stream each split from disk.

    Raises:
        DataError: the folder is missing, has fewer than two class folders, or a class folder has no
            readable images.
    """
    from edgesparse.data.split import split_dataset

    root = resolve(cfg.image_folder, base_dir)
    files, labels, classes, skipped = list_images(root)
    listed = split_dataset(Loaded(root.name, np.asarray(files), labels, None, None, classes), cfg, seed)
    h, w = hw(cfg.image_size)
    source: dict[str, Any] = {"image_folder": str(root), "files": len(files), "image_size": [h, w],
                              "channels": cfg.channels, "cache": cfg.cache}
    if skipped:
        source["skipped_images"] = skipped
    return Dataset(name=listed.name, train=_stream(listed.train, cfg, seed), val=_stream(listed.val, cfg, seed),
                   test=_stream(listed.test, cfg, seed), num_classes=listed.num_classes,
                   class_names=listed.class_names, source=source)
