"""Attention models and integer token inputs: translation, pruning, unscaled int32 ids, the shipped recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgesparse  # noqa: F401  - before tensorflow (tf_keras as tf.keras)
from edgesparse.errors import DataError

T, V, D = 12, 40, 16


def _k3_transformer(cross: bool = False) -> Any:
    """A Keras 3 text transformer as users write it: Embedding + a numpy positional table, 2 MHA blocks."""
    from edgesparse import _tf

    k3 = _tf.keras3()
    layers = k3.layers
    pos = np.sin(np.arange(T)[:, None] / (100 ** (np.arange(D)[None] / D))).astype("float32")
    tokens = k3.Input((T,), dtype="int32", name="tokens")
    x = layers.Embedding(V, D, name="emb")(tokens) + pos
    for i in range(2):
        a = layers.MultiHeadAttention(num_heads=2, key_dim=8, name=f"mha{i}")(x, x)
        x = layers.LayerNormalization(name=f"ln{i}a")(x + a)
        f = layers.Dense(2 * D, activation="relu", name=f"ffn{i}a")(x)
        x = layers.LayerNormalization(name=f"ln{i}b")(x + layers.Dense(D, name=f"ffn{i}b")(f))
    inputs: Any = tokens
    if cross:
        ctx = k3.Input((5, 6), name="ctx")
        x = layers.MultiHeadAttention(num_heads=2, key_dim=4, value_dim=6, name="cross")(x, ctx, ctx)
        inputs = [tokens, ctx]
    x = layers.GlobalAveragePooling1D()(x)
    return k3.Model(inputs, layers.Dense(3, activation="softmax", name="out")(x))


@pytest.mark.parametrize("cross", [False, True], ids=["self", "cross"])
def test_keras3_transformer_translates_both_ways_within_1e5(tmp_path: Path, cross: bool) -> None:
    from edgesparse.models.keras3 import from_keras3, max_output_diff, to_keras3

    k3_model = _k3_transformer(cross)
    tfk = from_keras3(k3_model)
    assert type(tfk).__module__.startswith("tf_keras")
    kinds = {type(layer).__name__ for layer in tfk.layers}
    assert {"MultiHeadAttention", "Embedding", "LayerNormalization", "GlobalAveragePooling1D"} <= kinds
    assert max_output_diff(k3_model, tfk) <= 1e-5
    # the positional constant is part of the translated model: zeroing it changes the outputs
    mha = tfk.get_layer("mha0")
    assert [tuple(w.shape) for w in mha.get_weights()][::2] == [(D, 2, 8)] * 3 + [(2, 8, D)]
    back = to_keras3(tfk, tmp_path / "back.keras")
    assert back["max_abs_diff"] <= 1e-5


def test_int32_token_ids_in_an_npz_stay_integers_unscaled(tmp_path: Path) -> None:
    from edgesparse.data import load_dataset
    from edgesparse.export.modes import _calibration

    rng = np.random.default_rng(0)
    ids = rng.integers(0, 30_000, size=(60, T)).astype(np.int32)
    np.savez(tmp_path / "tok.npz", x=ids, y=np.arange(60) % 3)
    for scale in (True, False):
        ds = load_dataset({"npz": "tok.npz", "scale": scale}, seed=0, base_dir=tmp_path)
        got = np.concatenate([ds.x_train, ds.x_val, ds.x_test])
        assert got.dtype == np.int32 and got.shape[1:] == (T,)
        assert sorted(map(tuple, got)) == sorted(map(tuple, ids))  # every id as stored: not divided by 2**31-1
        fed = next(iter(_calibration(ds.x_train)()))[0]
        assert fed.dtype == np.int32 and np.array_equal(fed[0], ds.x_train[0])
    # pixels are still scaled as before
    np.savez(tmp_path / "px.npz", x=np.full((30, 4, 4), 255, np.uint8), y=np.arange(30) % 3)
    assert load_dataset({"npz": "px.npz"}, seed=0, base_dir=tmp_path).x_train.max() == 1.0


def _id_model(vocab: int) -> Any:
    """A tf_keras model whose output is the mean token id: Embedding row i holds i (no scaling hides)."""
    from edgesparse import _tf

    k = _tf.keras()
    tokens = k.Input((T,), dtype="int32", name="tokens")
    emb = k.layers.Embedding(vocab, 1, name="emb")
    x = k.layers.GlobalAveragePooling1D()(emb(tokens))
    model = k.Model(tokens, x)
    emb.set_weights([np.arange(vocab, dtype=np.float32)[:, None]])
    return model


def test_int32_token_input_reaches_keras_and_tflite_unscaled() -> None:
    from edgesparse.export.convert import convert
    from edgesparse.export.litert import load_interpreter, predict

    vocab = 5000
    model = _id_model(vocab)
    ids = np.random.default_rng(1).integers(0, vocab, size=(8, T)).astype(np.int32)
    want = ids.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(model.predict(ids, verbose=0), want, rtol=1e-5)
    tfl = convert(model, "none")
    loaded = load_interpreter(tfl)
    assert loaded.interpreter.get_input_details()[0]["dtype"] == np.int32
    np.testing.assert_allclose(predict(loaded, ids), want, rtol=1e-5)
    # int8 calibration feeds int32 ids too, and the int8 model still reads them as ids
    tfl8 = convert(model, "int8", representative=list(ids))
    out8 = predict(load_interpreter(tfl8), ids)
    np.testing.assert_allclose(out8, want, rtol=0.02)


def test_token_ids_beyond_the_embedding_are_a_clear_error(tmp_path: Path) -> None:
    from edgesparse.check import check_model_fits_data
    from edgesparse.data import load_dataset

    ids = np.random.default_rng(0).integers(0, 50, size=(40, T)).astype(np.int64)
    np.savez(tmp_path / "tok.npz", x=ids, y=np.arange(40) % 2)
    ds = load_dataset({"npz": "tok.npz"}, seed=0, base_dir=tmp_path)
    check_model_fits_data(_id_model(50), ds)  # ids 0..49 fit input_dim 50
    with pytest.raises(DataError, match=r"Embedding 'emb'.*input_dim 30.*input_dim >= 50"):
        check_model_fits_data(_id_model(30), ds)
    np.savez(tmp_path / "f.npz", x=ids.astype(np.float32), y=np.arange(40) % 2)
    floats = load_dataset({"npz": "f.npz"}, seed=0, base_dir=tmp_path)
    with pytest.raises(DataError, match="takes integers"):
        check_model_fits_data(_id_model(50), floats)
