"""Flatbuffer inspection: decoded sparse weights equal the Keras weights; bad files are clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgesparse.errors import ProfileError
from edgesparse.export.inspect import inspect_tflite
from tests.conftest import ROOT


def _model(pattern: str) -> Any:
    from edgesparse import _tf

    keras = _tf.keras()
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, name="fc")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="out")(x))
    rng = np.random.default_rng(0)
    fc = model.get_layer("fc")
    k = fc.kernel.numpy()  # (in=288, out=64)
    if pattern == "random":
        k *= rng.random(k.shape) > 0.9
    else:  # TFLite 1x16 blocks: 16 consecutive inputs of one output unit
        keep = rng.random((k.shape[0] // 16, k.shape[1])) > 0.9
        k *= np.repeat(keep, 16, axis=0)
    fc.kernel.assign(k)
    return model


def _convert(model: Any, int8: bool) -> bytes:
    from edgesparse.export.convert import convert

    rep = [np.random.default_rng(i).random((8, 8, 1), dtype=np.float32) for i in range(20)] if int8 else None
    return convert(model, "int8" if int8 else "none", sparse_encoding=True, representative=rep)


@pytest.mark.parametrize("pattern", ["random", "block"])
def test_decoded_float_weights_equal_keras(pattern: str) -> None:
    model = _model(pattern)
    info = inspect_tflite(_convert(model, int8=False))
    fc = next(w for w in info.weights if w.role == "weight" and w.shape == [64, 288])
    assert fc.encoding == ("csr" if pattern == "random" else "block 1x4") or fc.encoding.startswith("block")
    # CSR weights are densified at load; block-sparse FC weights are consumed sparse by the FC kernel
    assert fc.densified == (pattern == "random") and info.densify_ops == int(fc.densified)
    assert fc.runtime_bytes == (fc.dense_bytes if fc.densified else fc.stored_bytes)
    decoded = info.decoded[fc.tensor_index]
    np.testing.assert_array_equal(decoded, model.get_layer("fc").kernel.numpy().T)
    assert fc.stored_bytes < fc.dense_bytes
    assert fc.nonzeros == int(np.count_nonzero(model.get_layer("fc").kernel.numpy()))


def test_int8_block_encoding_keeps_zero_pattern() -> None:
    model = _model("block")
    info = inspect_tflite(_convert(model, int8=True))
    fc = next(w for w in info.weights if w.role == "weight" and w.shape == [64, 288])
    assert fc.dtype == "int8" and fc.encoding == "block 1x16"
    assert not fc.densified and fc.runtime_bytes == fc.stored_bytes < fc.dense_bytes
    keras_zero = model.get_layer("fc").kernel.numpy().T == 0
    decoded = info.decoded[fc.tensor_index]
    assert np.all(decoded[keras_zero] == 0)
    assert fc.sparsity >= keras_zero.mean() - 0.001


def test_io_details(tmp_path: Path) -> None:
    info = inspect_tflite(_convert(_model("random"), int8=False))
    assert info.inputs[0]["shape"] == [1, 8, 8, 1] and info.inputs[0]["dtype"] == "float32"
    assert info.outputs[0]["shape"] == [1, 10]


def test_bad_files(tmp_path: Path) -> None:
    good = _convert(_model("random"), int8=False)
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    with pytest.raises(ProfileError, match="empty"):
        inspect_tflite(empty)
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"hello world, not a model" * 10)
    with pytest.raises(ProfileError, match="not a TFLite flatbuffer"):
        inspect_tflite(garbage)
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(good[: len(good) // 3])
    with pytest.raises(ProfileError, match="damaged or truncated"):
        inspect_tflite(truncated)
    with pytest.raises(ProfileError, match="does not exist"):
        inspect_tflite(tmp_path / "missing.tflite")


def test_inspection_does_not_import_tensorflow(tmp_path: Path) -> None:
    path = tmp_path / "m.tflite"
    path.write_bytes(_convert(_model("block"), int8=True))
    code = ("import sys\nfrom edgesparse.export.inspect import inspect_tflite\n"
            f"i = inspect_tflite({str(path)!r})\nassert i.sparse_encoded\nprint('tf' in sys.modules, 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "False"
