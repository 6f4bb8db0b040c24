"""Model factories referenced by test recipes as ``factory: "tests.factories:NAME"``."""

from __future__ import annotations

from typing import Any

from edgesparse import _tf


def wrong_input(num_classes: int = 10) -> Any:
    keras = _tf.keras()
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))


def five_outputs() -> Any:
    keras = _tf.keras()
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, keras.layers.Dense(5, activation="softmax")(x))


def no_prunable_layer() -> Any:
    keras = _tf.keras()
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Softmax()(x)
    return keras.Model(inputs, x)


def tiny_regressor(input_shape: tuple[int, ...] = (12,)) -> Any:
    """A regressor: 12 features -> Dense(16, relu) -> one linear unit (the hidden layer is a channel group)."""
    keras = _tf.keras()
    inputs = keras.Input(input_shape, name="features")
    x = keras.layers.Dense(16, activation="relu", name="fc1")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1, name="value")(x), name="tiny_regressor")


def keras3_model() -> Any:
    keras = _tf.keras3()  # Keras 3, imported after TensorFlow got Keras 2 as tf.keras

    inputs = keras.Input((8, 8, 1))
    return keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)))


def with_lambda(path: str) -> None:
    """Save a model containing a Lambda layer (used to test trust_code)."""
    keras = _tf.keras()
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    x = keras.layers.Flatten()(x)
    keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x)).save(path)


def residual_bn(input_shape: tuple[int, ...] = (8, 8, 1), num_classes: int = 10) -> Any:
    """Functional model with BatchNorm and two residual Adds."""
    keras = _tf.keras()
    layers = keras.layers
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU()(x)
    for i in range(2):
        y = layers.Conv2D(8, 3, padding="same", name=f"res{i}_conv")(x)
        y = layers.BatchNormalization(name=f"res{i}_bn")(y)
        x = layers.Add(name=f"res{i}_add")([x, layers.ReLU()(y)])
    x = layers.Flatten()(x)
    return keras.Model(inputs, layers.Dense(num_classes, activation="softmax", name="head")(x), name="residual_bn")


def nested_backbone(input_shape: tuple[int, ...] = (8, 8, 1), num_classes: int = 10) -> Any:
    """A Sequential holding a functional backbone (itself holding a nested block) and a small classifier."""
    keras = _tf.keras()
    layers = keras.layers
    b_in = keras.Input((8, 8, 16))
    b = layers.Conv2D(16, 3, padding="same", name="conv")(b_in)
    block = keras.Model(b_in, layers.Add()([b_in, b]), name="block")
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    x = block(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    backbone = keras.Model(inputs, x, name="backbone")
    return keras.Sequential([keras.Input(input_shape), backbone, layers.GlobalAveragePooling2D(),
                             layers.Dense(num_classes, activation="softmax", name="classifier")], name="nested")


def depthwise_separable(input_shape: tuple[int, ...] = (8, 8, 1), num_classes: int = 10) -> Any:
    keras = _tf.keras()
    layers = keras.layers
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = layers.SeparableConv2D(32, 3, padding="same", activation="relu", name="sep")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(num_classes, activation="softmax", name="head")(x), name="dwsep")


def keras3_conv(input_shape: tuple[int, ...] = (8, 8, 1), num_classes: int = 10) -> Any:
    """A Keras 3 functional conv model using layers that differ between the Keras versions."""
    keras = _tf.keras3()  # Keras 3, imported after TensorFlow got Keras 2 as tf.keras

    layers = keras.layers
    inputs = keras.Input(input_shape)
    x = layers.Rescaling(2.0, offset=-1.0)(inputs)
    x = layers.Conv2D(8, 3, padding="same", name="conv1")(x)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.Activation("hard_swish")(x)
    y = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = layers.Activation("gelu")(y)
    x = layers.Add()([x, y * 0.5 + 1.0])
    x = layers.Conv2D(16, 1, activation="swish", name="pw")(x)
    x = layers.LayerNormalization()(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.1)(x)
    return keras.Model(inputs, layers.Dense(num_classes, activation="softmax", name="head")(x), name="k3conv")


def keras3_sequential_file(path: str, fmt: str = "keras") -> None:
    """Save the issue's Keras 3 Sequential conv model (.keras or .h5, written by Keras 3)."""
    keras = _tf.keras3()  # Keras 3, imported after TensorFlow got Keras 2 as tf.keras

    layers = keras.layers
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
        layers.MaxPooling2D(),
        layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2"),
        layers.Flatten(),
        layers.Dense(32, activation="relu", name="fc"),
        layers.Dense(10, activation="softmax", name="out"),
    ], name="k3seq")
    model.save(path)


def _subclassed(keras: Any, num_classes: int) -> Any:
    """Flatten -> Dense in a subclassed Model of ``keras`` (tf_keras or Keras 3)."""

    class Net(keras.Model):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.flat = keras.layers.Flatten()
            self.fc = keras.layers.Dense(num_classes, activation="softmax")

        def call(self, x: Any) -> Any:
            return self.fc(self.flat(x))

    return Net()


def subclassed(num_classes: int = 10) -> Any:
    return _subclassed(_tf.keras(), num_classes)


def keras3_subclassed(num_classes: int = 10) -> Any:
    return _subclassed(_tf.keras3(), num_classes)  # Keras 3, imported after TensorFlow got Keras 2 as tf.keras


# ---- models of every task kind (tests/test_task.py) -------------------------------------------


def five_class(input_shape: tuple[int, ...] = (12,)) -> Any:
    keras = _tf.keras()
    inputs = keras.Input(input_shape, name="features")
    x = keras.layers.Dense(32, activation="relu", name="fc1")(inputs)
    return keras.Model(inputs, keras.layers.Dense(5, activation="softmax", name="probs")(x))


def multilabel_sigmoid(input_shape: tuple[int, ...] = (12,)) -> Any:
    keras = _tf.keras()
    inputs = keras.Input(input_shape, name="features")
    x = keras.layers.Dense(32, activation="relu", name="fc1")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, activation="sigmoid", name="tags")(x))


def conv1d_regressor() -> Any:
    """A sensor regressor: Conv1D over a window of 32 steps x 3 channels, two continuous outputs.

    Its input is fixed, like a pretrained model's: the npz's (N, 32, 3) arrays are read with a channel axis
    (as grey images would be), which binding the data to this model removes again.
    """
    keras = _tf.keras()
    inputs = keras.Input((32, 3), name="window")
    x = keras.layers.Conv1D(16, 5, activation="relu", name="conv1")(inputs)
    x = keras.layers.GlobalAveragePooling1D(name="gap")(x)
    x = keras.layers.Dense(32, activation="relu", name="fc1")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="targets")(x))


def two_in_two_out() -> Any:
    """An image and a metadata vector in (Keras order img, meta), `cls` softmax-4 and `box` linear-4 out."""
    keras = _tf.keras()
    img = keras.Input((8, 8, 1), name="img")
    meta = keras.Input((3,), name="meta")
    x = keras.layers.Flatten(name="flatten")(keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(img))
    x = keras.layers.Concatenate(name="join")([keras.layers.Dense(32, activation="relu", name="fc_img")(x), meta])
    x = keras.layers.Dense(48, activation="relu", name="fc1")(x)
    cls = keras.layers.Dense(4, activation="softmax", name="cls")(x)
    box = keras.layers.Dense(4, name="box")(x)
    return keras.Model([img, meta], [cls, box], name="two_in_two_out")


def keras3_binary(input_shape: tuple[int, ...] = (12,)) -> Any:
    """A Keras 3 detector ending in Dense(1, sigmoid) (the visual-wake-words shape, small)."""
    keras = _tf.keras3()
    inputs = keras.Input(input_shape, name="features")
    x = keras.layers.Dense(32, activation="relu", name="fc1")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="score")(x))


def xnnpack_mobile(input_shape: tuple[int, ...] = (16, 16, 3), num_classes: int = 4) -> Any:
    """What tfmot's PruneForLatencyOnXNNPack accepts: a 3x3 stride-2 stem on RGB (valid padding after
    ZeroPadding2D(1)), 1x1 convolutions around a depthwise one, global average pooling."""
    keras = _tf.keras()
    layers = keras.layers
    inputs = keras.Input(input_shape)
    x = layers.ZeroPadding2D(1)(inputs)
    x = layers.Conv2D(8, 3, strides=2, activation="relu", name="stem")(x)
    y = layers.Conv2D(32, 1, activation="relu", name="expand")(x)
    z = layers.DepthwiseConv2D(3, padding="same", activation="relu", name="depthwise")(y)
    z = layers.Conv2D(32, 1, name="project")(z)
    x = layers.Add()([y, z])
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(num_classes, activation="softmax", name="logits")(x))


# ---------------------------------------------------------------------------------------------- data factories
# ``data: {factory: "tests.factories:NAME"}`` and train(data=...) return {"train", "validation", "test"} splits.


def _two_in_two_out_arrays(n: int, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    cls = rng.integers(0, 4, n)
    img = rng.normal(0.0, 0.3, (n, 8, 8, 1)).astype(np.float32)
    for k in range(4):  # class k: a bright 4x4 quadrant
        r, c = divmod(k, 2)
        img[cls == k, 4 * r:4 * r + 4, 4 * c:4 * c + 4, 0] += 1.0
    meta = rng.normal(0.0, 1.0, (n, 3)).astype(np.float32)
    box = np.stack([meta[:, 0], meta[:, 1], meta[:, 0] - meta[:, 2], cls / 3.0], axis=1).astype(np.float32)
    return {"img": img, "meta": meta}, {"cls": cls.astype(np.int64), "box": box}


def stream_two_in_two_out(n: int = 600, seed: int = 0) -> dict[str, Any]:
    """tf.data splits (60/20/20) of dict elements: x {img, meta}, y {cls, box} (the two_in_two_out model's)."""
    tf = _tf.tf()
    x, y = _two_in_two_out_arrays(n, seed)
    cut = [int(n * 0.6), int(n * 0.8)]

    def part(a: int, b: int) -> Any:
        return tf.data.Dataset.from_tensor_slices(({k: v[a:b] for k, v in x.items()}, {k: v[a:b] for k, v in y.items()}))

    return {"train": part(0, cut[0]), "validation": part(cut[0], cut[1]), "test": part(cut[1], n)}


def generated_stream(n: int = 600, seed: int = 0, image_size: int = 8) -> dict[str, Any]:
    """A generator-backed stream (unknown length, nothing in memory) of 4-class images, one channel."""
    import numpy as np

    tf = _tf.tf()

    def split(count: int, offset: int) -> Any:
        def gen() -> Any:
            for i in range(offset, offset + count):
                rng = np.random.default_rng([seed, i])
                k = i % 4
                img = rng.normal(0.0, 0.3, (image_size, image_size, 1)).astype(np.float32)
                h = image_size // 2
                r, c = divmod(k, 2)
                img[h * r:h * r + h, h * c:h * c + h, 0] += 1.0
                yield img, np.int64(k)

        spec = (tf.TensorSpec((image_size, image_size, 1), tf.float32), tf.TensorSpec((), tf.int64))
        return tf.data.Dataset.from_generator(gen, output_signature=spec)

    n_val = n_test = max(4, n // 5)
    return {"train": split(n - n_val - n_test, 0), "validation": split(n_val, 10**6), "test": split(n_test, 2 * 10**6)}


def digits_arrays(limit: int | None = None) -> dict[str, Any]:
    """scikit-learn's digits as (x, y) array tuples, 70/15/15."""
    import numpy as np
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images[..., None] / 16.0).astype(np.float32)[:limit]
    y = d.target.astype(np.int64)[:limit]
    n = len(x)
    a, b = int(n * 0.7), int(n * 0.85)
    return {"train": (x[:a], y[:a]), "validation": (x[a:b], y[a:b]), "test": (x[b:], y[b:])}


def not_a_mapping() -> Any:
    return [1, 2, 3]


def no_validation() -> dict[str, Any]:
    d = digits_arrays(200)
    return {"train": d["train"], "test": d["test"]}


def batched_stream() -> dict[str, Any]:
    d = generated_stream(60)
    return {**d, "train": d["train"].batch(8)}


def wrong_shape_stream() -> dict[str, Any]:
    return generated_stream(60, image_size=6)


def empty_test() -> dict[str, Any]:
    tf = _tf.tf()
    d = digits_arrays(200)
    x, y = d["test"]
    return {**d, "test": tf.data.Dataset.from_tensor_slices((x[:0], y[:0]))}


NOT_CALLABLE = 3


def scaled_input_mlp(features: int = 16, classes: int = 4) -> Any:
    """A sensor-fusion MLP (issue 19): Dense 64 -> Dense 64 -> logits, for inputs whose last feature is a raw reading
    about 1000x the others' scale. Its first kernel row for that feature starts 1000x smaller, so the few training
    epochs of a test reach float accuracy; the scale problem int8 has is the input tensor's, not the weights'."""
    keras = _tf.keras()
    inputs = keras.Input((features,), name="sensors")
    x = keras.layers.Dense(64, activation="relu", name="fc1")(inputs)
    x = keras.layers.Dense(64, activation="relu", name="fc2")(x)
    model = keras.Model(inputs, keras.layers.Dense(classes, name="logits")(x), name="scaled_input_mlp")
    kernel = model.get_layer("fc1").kernel
    kernel.assign(kernel.numpy() * _row_scale(features))
    return model


def _row_scale(features: int) -> Any:
    import numpy as np

    scale = np.ones((features, 1), dtype=np.float32)
    scale[-1] = 1e-3
    return scale
