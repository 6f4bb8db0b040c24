"""``{image_folder: photos/, image_size: [64, 64], channels: 3}``: one sub-folder of images per class."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from edgesparse.data.registry import ImageSize, Loaded, SourceConfig, data_source, hw, path_str, resolve
from edgesparse.errors import DataError

#: file name endings read as images; other files (README, .DS_Store ...) are ignored
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class ImageFolderConfig(SourceConfig):
    """``{image_folder: dir, image_size: [64, 64], channels: 3}``.

    The sorted sub-folder names are the class names. Images are read with Pillow, converted to
    grey (``channels: 1``) or RGB, resized to ``image_size`` (an int or ``[height, width]``) and
    scaled to [0, 1].
    """

    image_folder: str = Field(min_length=1, description="folder with one sub-folder per class, relative to the recipe")
    image_size: ImageSize = 64
    channels: Literal[1, 3] = 3

    _path = field_validator("image_folder", mode="before")(path_str)


@data_source("image_folder", ImageFolderConfig)
def load_image_folder(cfg: ImageFolderConfig, seed: int, base_dir: Path | None) -> Loaded:
    """Read every image below ``cfg.image_folder``.

    Raises:
        DataError: the folder is missing, has fewer than two class folders, a class folder has no
            images, or an image cannot be read.
    """
    from PIL import Image, UnidentifiedImageError

    root = resolve(cfg.image_folder, base_dir)
    if not root.is_dir():
        raise DataError(f"image folder '{root}' does not exist or is not a folder; check `data.image_folder` "
                        "in the recipe (relative paths are taken from the recipe's folder).")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"image folder '{root}' has {len(classes)} class folder(s); it needs one sub-folder per "
                        "class, at least two (e.g. cats/ and dogs/), each holding that class's images.")
    h, w = hw(cfg.image_size)
    mode = "L" if cfg.channels == 1 else "RGB"
    x = []
    y: list[int] = []
    for k, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"class folder '{root / name}' has no images ({', '.join(IMAGE_SUFFIXES)}); add "
                            "images or remove the folder.")
        for f in files:
            try:
                with Image.open(f) as im:
                    img = im.convert(mode).resize((w, h), Image.Resampling.BILINEAR)
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                raise DataError(f"cannot read image '{f}' ({exc}); remove or replace it.") from None
            x.append(np.asarray(img, dtype=np.uint8).reshape(h, w, cfg.channels))
            y.append(k)
    images = np.stack(x).astype(np.float32)
    images /= np.float32(255.0)
    return Loaded(root.name, images, np.asarray(y, dtype=np.int64), None, None, classes)
