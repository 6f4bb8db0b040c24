"""Data source configs (the recipe's ``data:`` forms) and their loaders.

Each loader returns ``(x, y, x_test | None, y_test | None, class_names)`` with x float32 (a
channel axis for images) and y int64; splitting happens in :mod:`edgesparse.data.split`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from edgesparse._registry import Registry
from edgesparse.errors import DataError

Arrays = tuple[np.ndarray, np.ndarray, Any, Any, list[str]]
Loader = Callable[[Any, int, "Path | None"], Arrays]
LOADERS: Registry[Loader] = Registry("data source", DataError)


class SourceConfig(BaseModel):
    """Fields every data source has."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    validation_split: float = Field(0.1, ge=0.0, lt=1.0)
    test_split: float = Field(0.2, gt=0.0, lt=1.0)
    batch_size: int = Field(64, gt=0)
    limit: int | None = Field(None, gt=0, description="cap on the total number of samples (stratified)")

    @model_validator(mode="after")
    def _splits(self) -> SourceConfig:
        if self.validation_split + self.test_split >= 1.0:
            raise ValueError(
                f"validation_split + test_split = {self.validation_split + self.test_split:g} leaves no training data"
            )
        return self


ImageSize = Union[int, tuple[int, int]]


def _hw(size: ImageSize) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class DigitsConfig(SourceConfig):
    """``{builtin: digits}``: scikit-learn's bundled 8x8 handwritten digits (1,797 samples, 10 classes)."""

    builtin: Literal["digits"]


class ShapesConfig(SourceConfig):
    """``{builtin: shapes, image_size: 96, num_classes: 4, samples_per_class: 300, channels: 3, noise: 0.05}``.

    Procedurally generated images of shapes (circle, square, triangle, cross, ring, diamond,
    horizontal bar, vertical bar) with random colour, size, position, background and noise —
    deterministic by seed. A stand-in for camera inputs at MobileNet sizes.
    """

    builtin: Literal["shapes"]
    image_size: ImageSize = 32
    num_classes: int = Field(4, ge=2, le=8)
    samples_per_class: int = Field(300, ge=2)
    channels: Literal[1, 3] = 3
    noise: float = Field(0.05, ge=0.0, le=1.0)

    @field_validator("image_size")
    @classmethod
    def _size(cls, v: ImageSize) -> ImageSize:
        if min(_hw(v)) < 8:
            raise ValueError("image_size must be at least 8 pixels")
        return v


BUILTIN_CONFIGS: dict[str, type[SourceConfig]] = {"digits": DigitsConfig, "shapes": ShapesConfig}

BuiltinConfig = Annotated[
    Union[Annotated[DigitsConfig, Tag("digits")], Annotated[ShapesConfig, Tag("shapes")]],
    Discriminator(lambda v: v.get("builtin") if isinstance(v, dict) else getattr(v, "builtin", None)),
]


class NpzConfig(SourceConfig):
    """``{npz: data.npz, scale: true}``: arrays ``x``, ``y`` (and optionally ``x_test``, ``y_test``).

    Integer x (e.g. uint8 images) is scaled to [0, 1] unless ``scale: false``. A 3-D x (N, H, W)
    gets a channel axis.
    """

    npz: str
    scale: bool = True


class ImageFolderConfig(SourceConfig):
    """``{image_folder: dir, image_size: [64, 64], channels: 3}``: one sub-folder per class."""

    image_folder: str
    image_size: ImageSize = 64
    channels: Literal[1, 3] = 3


class KerasConfig(SourceConfig):
    """``{keras: mnist}``: a Keras dataset (mnist | fashion_mnist | cifar10), downloaded by Keras."""

    keras: Literal["mnist", "fashion_mnist", "cifar10"]


def _resolve(path: str, base_dir: Path | None) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() or base_dir is None else base_dir / p


# ---- digits -----------------------------------------------------------------------------------


@LOADERS.register("digits")
def load_digits(cfg: DigitsConfig, seed: int, base_dir: Path | None) -> Arrays:
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]
    return x, d.target.astype(np.int64), None, None, [str(i) for i in range(10)]


# ---- shapes -----------------------------------------------------------------------------------

SHAPE_NAMES = ["circle", "square", "triangle", "cross", "ring", "diamond", "horizontal_bar", "vertical_bar"]


def _shape_masks(kind: int, yy: np.ndarray, xx: np.ndarray, cy: np.ndarray, cx: np.ndarray,
                 r: np.ndarray) -> np.ndarray:
    """Boolean masks (N, H, W) of one shape kind, centres/radii (N, 1, 1) in pixels."""
    dy, dx = yy - cy, xx - cx
    ady, adx = np.abs(dy), np.abs(dx)
    name = SHAPE_NAMES[kind]
    if name == "circle":
        return dy**2 + dx**2 <= r**2
    if name == "square":
        return (ady <= r * 0.8) & (adx <= r * 0.8)
    if name == "triangle":
        # apex up: inside when below the apex and within the widening sides
        t = (dy + r) / (2 * r)
        return (t >= 0) & (t <= 1) & (adx <= t * r)
    if name == "cross":
        w = np.maximum(r * 0.3, 1.0)
        return ((ady <= w) & (adx <= r)) | ((adx <= w) & (ady <= r))
    if name == "ring":
        d2 = dy**2 + dx**2
        return (d2 <= r**2) & (d2 >= (r * 0.55) ** 2)
    if name == "diamond":
        return ady + adx <= r
    if name == "horizontal_bar":
        return (ady <= np.maximum(r * 0.3, 1.0)) & (adx <= r)
    return (adx <= np.maximum(r * 0.3, 1.0)) & (ady <= r)  # vertical bar


def generate_shapes(cfg: ShapesConfig, seed: int) -> Arrays:
    """Generate the shapes data set, vectorised (one batch of masks per class)."""
    h, w = _hw(cfg.image_size)
    rng = np.random.default_rng(seed)
    n = cfg.samples_per_class
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = yy[None], xx[None]
    images, labels = [], []
    short = min(h, w)
    for k in range(cfg.num_classes):
        r = rng.uniform(0.18, 0.38, n).astype(np.float32) * short
        cy = rng.uniform(0, 1, n).astype(np.float32) * (h - 2 * r) + r
        cx = rng.uniform(0, 1, n).astype(np.float32) * (w - 2 * r) + r
        mask = _shape_masks(k, yy, xx, cy[:, None, None], cx[:, None, None], r[:, None, None])
        bg = rng.uniform(0.0, 0.5, (n, 1, 1, cfg.channels)).astype(np.float32)
        fg = rng.uniform(0.5, 1.0, (n, 1, 1, cfg.channels)).astype(np.float32)
        # Half of the samples use a dark shape on a light background: colour is not the class.
        flip = rng.random(n) < 0.5
        bg[flip], fg[flip] = 1.0 - bg[flip], 1.0 - fg[flip]
        img = np.where(mask[..., None], fg, bg)
        img += rng.normal(0.0, cfg.noise, img.shape).astype(np.float32)
        images.append(np.clip(img, 0.0, 1.0, out=img))
        labels.append(np.full(n, k, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels), None, None, SHAPE_NAMES[: cfg.num_classes]


LOADERS.register("shapes")(lambda cfg, seed, base_dir: generate_shapes(cfg, seed))


# ---- npz ----------------------------------------------------------------------------------------


def _labels(y: np.ndarray, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{where}: labels must be a 1-D array of class indices, got shape {y.shape}.")
    if y.dtype.kind == "f":
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise DataError(f"{where}: labels must be whole class indices (0, 1, 2 ...), found fractional values.")
    elif y.dtype.kind not in "iu":
        raise DataError(f"{where}: labels must be integers, got dtype {y.dtype}.")
    if len(y) and y.min() < 0:
        raise DataError(f"{where}: labels must be >= 0, found {int(y.min())}.")
    return y.astype(np.int64)


def _images(x: np.ndarray, scale: bool) -> np.ndarray:
    x = np.asarray(x)
    integer = x.dtype.kind in "iu"
    x = x.astype(np.float32)
    if integer and scale:
        x = x / 255.0 if x.max(initial=0) > 1 else x
    if x.ndim == 3:
        x = x[..., None]
    return x


@LOADERS.register("npz")
def load_npz(cfg: NpzConfig, seed: int, base_dir: Path | None) -> Arrays:
    path = _resolve(cfg.npz, base_dir)
    if not path.exists():
        raise DataError(f"npz file '{path}' does not exist. Check `data.npz` in the recipe.")
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"'{path}' is not a readable .npz file ({exc}); save it with numpy.savez(path, x=..., y=...).") from None
    with z:
        missing = [k for k in ("x", "y") if k not in z.files]
        if missing:
            raise DataError(f"'{path}' has no array(s) {', '.join(missing)} (found: {', '.join(z.files) or 'none'}); "
                            "save it with numpy.savez(path, x=inputs, y=labels).")
        x, y = _images(z["x"], cfg.scale), _labels(z["y"], str(path))
        if len(x) != len(y):
            raise DataError(f"'{path}': x has {len(x)} samples but y has {len(y)}; they must match.")
        x_test = y_test = None
        if "x_test" in z.files and "y_test" in z.files:
            x_test, y_test = _images(z["x_test"], cfg.scale), _labels(z["y_test"], f"{path} (y_test)")
            if len(x_test) != len(y_test):
                raise DataError(f"'{path}': x_test has {len(x_test)} samples but y_test has {len(y_test)}.")
    n = int(max(y.max(initial=0), y_test.max(initial=0) if y_test is not None else 0)) + 1
    return x, y, x_test, y_test, [str(i) for i in range(n)]


# ---- image folder -------------------------------------------------------------------------------

_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


@LOADERS.register("image_folder")
def load_image_folder(cfg: ImageFolderConfig, seed: int, base_dir: Path | None) -> Arrays:
    from PIL import Image, UnidentifiedImageError

    root = _resolve(cfg.image_folder, base_dir)
    if not root.is_dir():
        raise DataError(f"image folder '{root}' does not exist or is not a folder.")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(f"'{root}' needs one sub-folder per class (at least 2); found {len(classes)}.")
    h, w = _hw(cfg.image_size)
    mode = "L" if cfg.channels == 1 else "RGB"
    xs, ys = [], []
    for k, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in _IMAGE_EXT)
        if not files:
            raise DataError(f"class folder '{root / name}' has no images ({', '.join(sorted(_IMAGE_EXT))}).")
        for f in files:
            try:
                with Image.open(f) as im:
                    arr = np.asarray(im.convert(mode).resize((w, h), Image.BILINEAR), dtype=np.float32) / 255.0
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(f"cannot read image '{f}': {exc}. Remove or replace it.") from None
            xs.append(arr if arr.ndim == 3 else arr[..., None])
            ys.append(k)
    return np.stack(xs), np.asarray(ys, dtype=np.int64), None, None, classes


# ---- keras datasets ---------------------------------------------------------------------------


@LOADERS.register("keras")
def load_keras(cfg: KerasConfig, seed: int, base_dir: Path | None) -> Arrays:
    from edgesparse import _tf

    module = getattr(_tf.keras().datasets, cfg.keras)
    try:
        (x, y), (x_test, y_test) = module.load_data()
    except Exception as exc:  # noqa: BLE001 - urllib/socket/ssl errors differ by platform
        raise DataError(
            f"the Keras dataset '{cfg.keras}' could not be loaded ({type(exc).__name__}: {str(exc)[:120]}). "
            "Keras downloads it on first use, which needs internet access; on an offline machine place the file "
            "in ~/.keras/datasets/, or use `data: {npz: file.npz}` or a builtin (digits, shapes)."
        ) from None
    names = [str(i) for i in range(10)]
    return _images(x, True), _labels(y, cfg.keras), _images(x_test, True), _labels(y_test, cfg.keras), names
