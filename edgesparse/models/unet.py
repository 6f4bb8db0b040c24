"""``model: {builtin: unet_tiny}``: a small U-Net for per-pixel classes (the generated ``shape_masks`` scenes).

Two down steps (stride-2 convolutions), a bottleneck, and two up steps (``Conv2DTranspose``) each
concatenated with the encoder map of the same size (the skips), then a 1x1 convolution to one channel per
class with a softmax: output ``mask`` ``(H, W, classes)``. Train it with ``task: segmentation`` (or ``auto``
on class-map targets). Input sides must be multiples of 4.
"""

from __future__ import annotations

from typing import Any, Literal

from edgesparse import _tf
from edgesparse.errors import ModelError
from edgesparse.models.zoo import ZooEntry, register


class UNetTinyConfig(ZooEntry):
    """``model: {builtin: unet_tiny, filters: [8, 16, 32]}``."""

    builtin: Literal["unet_tiny"]
    filters: tuple[int, int, int] = (8, 16, 32)


@register("unet_tiny", UNetTinyConfig)
def unet_tiny(cfg: UNetTinyConfig, input_shape: tuple[int, ...], num_classes: int) -> Any:
    """Build the U-Net; ``num_classes`` counts every class of the maps (background included).

    Raises:
        ModelError: the input's height or width is not a multiple of 4.
    """
    if len(input_shape) != 3 or input_shape[0] % 4 or input_shape[1] % 4:
        raise ModelError(f"unet_tiny takes images (H, W, C) with H and W multiples of 4 (two down steps), got "
                         f"{tuple(input_shape)}; resize the data (image_size).")
    keras = _tf.keras()
    layers = keras.layers
    f0, f1, f2 = cfg.filters
    inputs = keras.Input(input_shape, name="input")
    e0 = layers.Conv2D(f0, 3, padding="same", activation="relu", name="enc0")(inputs)
    e1 = layers.Conv2D(f1, 3, strides=2, padding="same", activation="relu", name="enc1")(e0)
    b = layers.Conv2D(f2, 3, strides=2, padding="same", activation="relu", name="bottleneck")(e1)
    b = layers.Conv2D(f2, 3, padding="same", activation="relu", name="bottleneck2")(b)
    u1 = layers.Conv2DTranspose(f1, 3, strides=2, padding="same", activation="relu", name="up1")(b)
    s1 = layers.Concatenate(name="skip1")([u1, e1])
    d1 = layers.Conv2D(f1, 3, padding="same", activation="relu", name="dec1")(s1)
    u0 = layers.Conv2DTranspose(f0, 3, strides=2, padding="same", activation="relu", name="up0")(d1)
    s0 = layers.Concatenate(name="skip0")([u0, e0])
    d0 = layers.Conv2D(f0, 3, padding="same", activation="relu", name="dec0")(s0)
    mask = layers.Conv2D(num_classes, 1, activation="softmax", name="mask")(d0)
    return keras.Model(inputs, mask, name="unet_tiny")


__all__ = ["UNetTinyConfig", "unet_tiny"]
