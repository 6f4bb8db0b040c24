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


def _builtin_transformer() -> Any:
    from edgesparse.models import build_model
    from edgesparse.models.attention import KeywordTransformerConfig

    cfg = KeywordTransformerConfig(builtin="keyword_transformer", vocab=V, dim=D, heads=2, ffn=2 * D)
    return build_model(cfg, (T,), 3)


def test_attention_projections_embedding_and_ffn_are_pruned_and_counted() -> None:
    from edgesparse import _tf
    from edgesparse.recipe import SparsityConfig
    from edgesparse.train import sparsity
    from edgesparse.train.coverage import parameter_stats

    model = _builtin_transformer()
    cfg = SparsityConfig(final=0.8, start=0, end=1, epochs=2, frequency=2)
    plan = sparsity.plan_sparsity(model, cfg, steps_per_epoch=8)
    by = {lp.name: lp for lp in plan.layers}
    assert {"embedding", "mha0", "mha1", "ffn0_up", "ffn1_down", "classifier"} <= {lp.name for lp in plan.pruned}
    assert "every head kept" in by["mha0"].note
    assert by["mha0"].weights == 4 * D * D  # query, key, value (d x heads x key_dim) and output projections
    assert not by["ln0a"].prune and "LayerNormalization" in by["ln0a"].note
    wrapped = sparsity.apply_pruning(model, cfg, plan)
    wrapped.compile("adam", "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, V, size=(128, T)).astype(np.int32), rng.integers(0, 3, size=128)
    wrapped.fit(x, y, batch_size=16, epochs=2, verbose=0,
                callbacks=[_tf.tfmot().sparsity.keras.UpdatePruningStep()])
    stripped = sparsity.strip(wrapped)
    mha = stripped.get_layer("mha0")
    assert type(mha).__name__ == "MultiHeadAttention"  # stripped back to the plain layer (export, PQAT, Keras 3)
    for sub in ("_query_dense", "_key_dense", "_value_dense", "_output_dense"):
        zeros = float(np.mean(getattr(mha, sub).kernel.numpy() == 0))
        assert zeros == pytest.approx(0.8, abs=0.02), (sub, zeros)
    assert float(np.mean(stripped.get_layer("embedding").get_weights()[0] == 0)) == pytest.approx(0.8, abs=0.02)
    measured = sparsity.measure_sparsity(stripped, [lp.name for lp in plan.pruned])
    assert measured["layers"]["mha1"] == pytest.approx(0.8, abs=0.02)
    stats = parameter_stats(stripped, measured)
    assert stats["coverage"] >= 0.9, stats
    # the dense model was not touched (tfmot's wrappers share layers: cloned first)
    assert float(np.mean(model.get_layer("mha0")._query_dense.kernel.numpy() == 0)) < 0.01


def test_attention_plans_with_overrides_allocations_and_rigl() -> None:
    from edgesparse.recipe import SparsityConfig
    from edgesparse.train import sparsity

    model = _builtin_transformer()
    skip = SparsityConfig(final=0.8, start=0, end=1, epochs=2, layers=[{"match": "^mha", "skip": True}])
    by = {lp.name: lp for lp in sparsity.plan_sparsity(model, skip, steps_per_epoch=8).layers}
    assert not by["mha0"].prune and "skipped by override" in by["mha0"].note and by["ffn0_up"].prune
    erk = SparsityConfig(final=0.8, start=0, end=1, epochs=2, allocation="erk")
    plan = sparsity.plan_sparsity(model, erk, steps_per_epoch=8)
    assert plan.planned == pytest.approx(0.8, abs=0.01)
    assert all(0.0 <= lp.target < 1.0 for lp in plan.pruned)
    block = SparsityConfig(final=0.5, start=0, end=1, epochs=2, pattern="block:1x4")
    by = {lp.name: lp for lp in sparsity.plan_sparsity(model, block, steps_per_epoch=8).layers}
    assert by["mha0"].prune and by["mha0"].pattern == "unstructured" and "2-D" in by["mha0"].note
    rigl = SparsityConfig(final=0.8, epochs=2, method="rigl")
    assert "mha0" in {lp.name for lp in sparsity.plan_sparsity(model, rigl, steps_per_epoch=8).pruned}


@pytest.mark.slow
def test_keyword_transformer_recipe_end_to_end(tmp_path: Path) -> None:
    """The shipped recipe, shrunk: int32 ids -> train -> prune 80% -> int8 -> export -> verify -> deploy locally."""
    import json

    from edgesparse.recipe import load_recipe
    from edgesparse.run import train
    from tests.conftest import ROOT
    from tests.test_task import _deploy_locally

    r = load_recipe(ROOT / "recipes" / "keyword_transformer.yaml", [
        "baseline.epochs=12", "sparsity.epochs=8", "sparsity.end=4", "sparsity.on_drop=warn",
        f"output_dir={tmp_path / 'run'}", f"export.dir={tmp_path / 'bundle'}"])
    result = train(r)
    s = result.summary
    exported = json.loads((tmp_path / "bundle" / "export.json").read_text())
    assert s.tflite is not None and s.tflite.quantization == "int8", exported["candidates"]
    assert s.baseline.metric is not None and s.baseline.metric > 0.8  # 4 classes: chance 1/4
    assert s.model.coverage is not None and s.model.coverage >= 0.9, s.model
    assert s.sparsity is not None
    plan = {lp["name"]: lp for lp in s.sparsity.plan["layers"]}
    assert plan["mha0"]["prune"] and "every head kept" in plan["mha0"]["note"]
    assert s.sparsity.achieved.layers["mha1"] == pytest.approx(0.8, abs=0.02)
    v = exported["verification"]
    assert v["agreement"] >= 0.95 and v["accuracy"] >= s.baseline.metric - 0.05, v
    with np.load(tmp_path / "bundle" / "verify.npz") as z:
        xs = [z[k] for k in z.files if k.startswith("x")]
    assert xs and all(a.dtype == np.int32 and a.max() > 1 for a in xs)  # ids, not ids / 2**31
    _deploy_locally(result)
