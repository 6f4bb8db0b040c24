"""Built-in model zoo. Each entry documents its recipe YAML next to its code.

Every builder receives its validated config, the input shape and the number of classes and returns
an uncompiled tf_keras functional model ending in a softmax.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgesparse import _tf
from edgesparse._registry import Registry
from edgesparse.errors import ModelError

Builder = Callable[[Any, tuple[int, ...], int], Any]


class _ZooEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: the base of a built-in model's config, for zoo entries in modules of their own (models/ssd.py)
ZooEntry = _ZooEntry


#: name -> (config class, builder)
ZOO: Registry[tuple[type[_ZooEntry], Builder]] = Registry("built-in model", ModelError)


def register(name: str, config: type[_ZooEntry]) -> Callable[[Builder], Builder]:
    """Register ``builder`` as the built-in model ``name`` configured by ``config``."""

    def deco(builder: Builder) -> Builder:
        ZOO.register(name)((config, builder))
        return builder

    return deco


class SmallCNNConfig(_ZooEntry):
    """``model: {builtin: small_cnn, filters: [32, 64], dense: 128, dropout: 0.0}``.

    Two 3x3 convolutions, a 2x2 max-pool and two dense layers: for small images such as the 8x8
    ``digits``. The wide first dense layer holds most of the weights, which is what pruning and the
    converter's block-sparse encoding shrink best.
    """

    builtin: Literal["small_cnn"]
    filters: tuple[int, int] = (32, 64)
    dense: int = Field(128, gt=0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


@register("small_cnn", SmallCNNConfig)
def small_cnn(cfg: SmallCNNConfig, input_shape: tuple[int, ...], num_classes: int) -> Any:
    keras = _tf.keras()
    layers = keras.layers
    inputs = keras.Input(input_shape, name="input")
    x = layers.Conv2D(cfg.filters[0], 3, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.Conv2D(cfg.filters[1], 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(name="pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(cfg.dense, activation="relu", name="fc1")(x)
    if cfg.dropout:
        x = layers.Dropout(cfg.dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="logits")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


class MLPConfig(_ZooEntry):
    """``model: {builtin: mlp, hidden: [256, 128], dropout: 0.0}`` — flattens its input."""

    builtin: Literal["mlp"]
    hidden: tuple[int, ...] = (256, 128)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


@register("mlp", MLPConfig)
def mlp(cfg: MLPConfig, input_shape: tuple[int, ...], num_classes: int) -> Any:
    keras = _tf.keras()
    inputs = keras.Input(input_shape, name="input")
    x = keras.layers.Flatten(name="flatten")(inputs) if len(input_shape) > 1 else inputs
    for i, units in enumerate(cfg.hidden):
        x = keras.layers.Dense(units, activation="relu", name=f"fc{i + 1}")(x)
        if cfg.dropout:
            x = keras.layers.Dropout(cfg.dropout)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="logits")(x)
    return keras.Model(inputs, outputs, name="mlp")


class MobileNetV2Config(_ZooEntry):
    """``model: {builtin: mobilenet_v2, alpha: 0.35}``.

    ``keras.applications.MobileNetV2`` with ``weights=None`` (no download), input size taken from the
    data, a global-average-pool + dense head for the data's classes.
    """

    builtin: Literal["mobilenet_v2"]
    alpha: float = Field(0.35, gt=0.0, le=1.4)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    bn_momentum: float = Field(0.9, gt=0.0, lt=1.0, description="BatchNorm momentum (Keras default 0.999)")


@register("mobilenet_v2", MobileNetV2Config)
def mobilenet_v2(cfg: MobileNetV2Config, input_shape: tuple[int, ...], num_classes: int) -> Any:
    keras = _tf.keras()
    if len(input_shape) != 3 or input_shape[-1] not in (1, 3):
        raise ModelError(
            f"mobilenet_v2 needs images of shape (H, W, 3) or (H, W, 1); the data has {input_shape}. "
            "Use an image dataset (for example `data: {builtin: shapes, image_size: 96}`)."
        )
    if min(input_shape[:2]) < 32:
        raise ModelError(
            f"mobilenet_v2 needs images of at least 32x32; the data has {input_shape[:2]}. "
            "Raise the data's image_size or use small_cnn."
        )
    base = keras.applications.MobileNetV2(
        input_shape=input_shape, alpha=cfg.alpha, include_top=False, weights=None, pooling="avg"
    )
    x = base.output
    if cfg.dropout:
        x = keras.layers.Dropout(cfg.dropout)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="logits")(x)
    model = keras.Model(base.input, outputs, name=f"mobilenet_v2_{cfg.alpha:g}")
    _fast_batchnorm(model, cfg.bn_momentum)
    return model


def _fast_batchnorm(model: Any, momentum: float) -> None:
    """Let BatchNorm moving statistics converge within a few hundred steps.

    keras.applications uses momentum 0.999, tuned for ImageNet-length training; trained from
    scratch on a small data set for a few epochs, the moving statistics stay near their initial
    values and the model scores chance in inference mode (measured: 25% on 4 classes).
    """
    for layer in model.layers:
        if isinstance(layer, _tf.keras().layers.BatchNormalization):
            layer.momentum = momentum


class DSCNNConfig(_ZooEntry):
    """``model: {builtin: ds_cnn, filters: 64, blocks: 4}``.

    The keyword-spotting style depthwise-separable CNN (Zhang et al., "Hello Edge"): a strided
    conv stem, ``blocks`` x (3x3 depthwise + 1x1 pointwise, batch-norm, ReLU), global average
    pooling and a dense classifier. Works on any (H, W, C) input (MFCC maps, images).
    """

    builtin: Literal["ds_cnn"]
    bn_momentum: float = Field(0.9, gt=0.0, lt=1.0, description="BatchNorm momentum")
    filters: int = Field(64, gt=0)
    blocks: int = Field(4, ge=1, le=8)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    head: Literal["softmax", "sigmoid"] = Field(
        "softmax", description="softmax over the classes, or one sigmoid unit (binary: a wake-word detector)")


@register("ds_cnn", DSCNNConfig)
def ds_cnn(cfg: DSCNNConfig, input_shape: tuple[int, ...], num_classes: int) -> Any:
    keras = _tf.keras()
    layers = keras.layers
    if len(input_shape) != 3:
        raise ModelError(f"ds_cnn needs (H, W, C) inputs; the data has {input_shape}.")
    inputs = keras.Input(input_shape, name="input")
    stride = 2 if min(input_shape[:2]) >= 16 else 1
    x = layers.Conv2D(cfg.filters, 3, strides=stride, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for i in range(cfg.blocks):
        x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"dw{i + 1}")(x)
        x = layers.BatchNormalization(name=f"dw{i + 1}_bn")(x)
        x = layers.ReLU(name=f"dw{i + 1}_relu")(x)
        x = layers.Conv2D(cfg.filters, 1, use_bias=False, name=f"pw{i + 1}")(x)
        x = layers.BatchNormalization(name=f"pw{i + 1}_bn")(x)
        x = layers.ReLU(name=f"pw{i + 1}_relu")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    if cfg.dropout:
        x = layers.Dropout(cfg.dropout)(x)
    if cfg.head == "sigmoid":
        if num_classes > 2:
            raise ModelError(f"ds_cnn head sigmoid is one unit for two classes (0/1); the data has {num_classes} "
                             "classes. Use head softmax, or 0/1 labels.")
        outputs = layers.Dense(1, activation="sigmoid", name="logits")(x)
    else:
        outputs = layers.Dense(num_classes, activation="softmax", name="logits")(x)
    model = keras.Model(inputs, outputs, name="ds_cnn")
    _fast_batchnorm(model, cfg.bn_momentum)
    return model


class ResNetConfig(_ZooEntry):
    """``model: {builtin: resnet, width: 16, blocks: [1, 1, 1], bn_momentum: 0.9, dropout: 0.0}``.

    A small ResNet (basic blocks: conv-BN-ReLU-conv-BN plus a shortcut, joined by a residual Add):
    a 3x3 stem, one stage per entry of ``blocks`` (stage ``i`` has ``width * 2**i`` channels and,
    after the first, halves the resolution; a 1x1 conv-BN shortcut where the shape changes), global
    average pooling and a dense classifier. The shape of the functional nets with BatchNorm and
    residual Adds that users bring.
    """

    builtin: Literal["resnet"]
    width: int = Field(16, gt=0)
    blocks: tuple[int, ...] = Field((1, 1, 1), min_length=1, max_length=5)
    bn_momentum: float = Field(0.9, gt=0.0, lt=1.0, description="BatchNorm momentum")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


def _basic_block(x: Any, filters: int, stride: int, name: str) -> Any:
    """conv-BN-ReLU-conv-BN + shortcut (projected when the shape changes) -> Add -> ReLU."""
    layers = _tf.keras().layers
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = layers.BatchNormalization(name=f"{name}_bn2")(y)
    shortcut = x
    if stride != 1 or int(x.shape[-1]) != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_proj")(x)
        shortcut = layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


@register("resnet", ResNetConfig)
def resnet(cfg: ResNetConfig, input_shape: tuple[int, ...], num_classes: int) -> Any:
    keras = _tf.keras()
    layers = keras.layers
    if len(input_shape) != 3:
        raise ModelError(f"resnet needs (H, W, C) inputs; the data has {input_shape}.")
    inputs = keras.Input(input_shape, name="input")
    x = layers.Conv2D(cfg.width, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    size = min(input_shape[:2])
    for stage, count in enumerate(cfg.blocks):
        for block in range(count):
            stride = 2 if stage > 0 and block == 0 and size >= 4 else 1
            size = size // stride
            x = _basic_block(x, cfg.width * 2**stage, stride, f"s{stage + 1}b{block + 1}")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    if cfg.dropout:
        x = layers.Dropout(cfg.dropout)(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="logits")(x)
    model = keras.Model(inputs, outputs, name="resnet")
    _fast_batchnorm(model, cfg.bn_momentum)
    return model


class AutoencoderConfig(_ZooEntry):
    """``model: {builtin: autoencoder, units: 128, layers: 4, bottleneck: 8}``.

    MLPerf Tiny's anomaly-detection autoencoder (the ToyADMOS/DCASE baseline): the input flattened,
    ``layers`` x (Dense ``units``, BatchNorm, ReLU), a Dense ``bottleneck`` (BatchNorm, ReLU), ``layers``
    x (Dense ``units``, BatchNorm, ReLU) and a linear Dense back to the input's size, reshaped like the
    input. Trained to reconstruct normal samples (``task: anomaly``): a sample's score is its mean squared
    reconstruction error. The number of classes is not used.
    """

    builtin: Literal["autoencoder"]
    units: int = Field(128, gt=0)
    layers: int = Field(4, ge=1, le=8)
    bottleneck: int = Field(8, gt=0)
    bn_momentum: float = Field(0.9, gt=0.0, lt=1.0, description="BatchNorm momentum")


@register("autoencoder", AutoencoderConfig)
def autoencoder(cfg: AutoencoderConfig, input_shape: tuple[int, ...], num_classes: int) -> Any:
    keras = _tf.keras()
    layers = keras.layers
    inputs = keras.Input(input_shape, name="input")
    size = 1
    for d in input_shape:
        size *= int(d)
    x = layers.Flatten(name="flatten")(inputs) if len(input_shape) > 1 else inputs

    def block(x: Any, units: int, name: str) -> Any:
        x = layers.Dense(units, name=name)(x)
        x = layers.BatchNormalization(momentum=cfg.bn_momentum, name=f"{name}_bn")(x)
        return layers.ReLU(name=f"{name}_relu")(x)

    for i in range(cfg.layers):
        x = block(x, cfg.units, f"enc{i + 1}")
    x = block(x, cfg.bottleneck, "bottleneck")
    for i in range(cfg.layers):
        x = block(x, cfg.units, f"dec{i + 1}")
    x = layers.Dense(size, name="reconstruction")(x)
    if len(input_shape) > 1:
        x = layers.Reshape(tuple(input_shape), name="reshape")(x)
    return keras.Model(inputs, x, name="autoencoder")
