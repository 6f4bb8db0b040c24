"""Streams that lie and data that breaks (issue 31, items 6-7; edgesparse/data/checks.py, export.min_agreement)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgesparse  # noqa: F401  (before tensorflow)
from edgesparse import _tf
from edgesparse.data.checks import check_stable, find_nonfinite
from edgesparse.data.stream import Split
from edgesparse.errors import AccuracyDropError, DataError


def _xy(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = (rng.normal(size=(n, 8)) + y[:, None]).astype(np.float32)
    return x, y


def _stream(x: Any, y: Any, reshuffle: bool = False) -> Any:
    tf = _tf.tf()
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    return ds.shuffle(len(x), seed=1, reshuffle_each_iteration=True) if reshuffle else ds


def test_a_reshuffling_stream_is_unstable_and_a_fixed_one_is_not() -> None:
    x, y = _xy(300)
    check_stable(Split(stream=_stream(x, y), name="test"))
    with pytest.raises(DataError, match=r"test split yields different samples.*two passes"):
        check_stable(Split(stream=_stream(x, y, reshuffle=True), name="test"))
    tf = _tf.tf()  # a fixed order but random augmentation (a generator whose RNG goes on): other values each pass
    rng = np.random.default_rng()

    def augmented() -> Any:
        for a, b in zip(x, y):
            yield a + rng.normal(size=a.shape).astype(np.float32), b

    noisy = tf.data.Dataset.from_generator(augmented, output_signature=(
        tf.TensorSpec((8,), tf.float32), tf.TensorSpec((), tf.int64)))
    with pytest.raises(DataError, match="validation split yields different"):
        check_stable(Split(stream=noisy, name="validation"))


def test_nonfinite_values_are_found_by_split_batch_and_part() -> None:
    x, y = _xy(100)
    yf = y.astype(np.float32)
    yf[70] = np.nan
    assert find_nonfinite(Split(stream=_stream(x, yf), name="train"), 32) == (
        "batch 2 (samples 64-95, first at sample 70): the targets hold 1 NaN")
    x2 = x.copy()
    x2[5, 3] = np.inf
    assert find_nonfinite(Split(x2, y, name="train"), 32) == (
        "batch 0 (samples 0-31, first at sample 5): the inputs hold 1 Inf")
    assert find_nonfinite(Split(stream=_stream(x, y), name="train"), 32) is None


def _model() -> Any:
    keras = _tf.keras()
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu", name="fc1"),
                             keras.layers.Dense(4, activation="softmax", name="out")])


def test_nan_inputs_in_a_stream_are_named_before_any_learning_rate_advice(tmp_path: Path) -> None:
    from edgesparse import Recipe, train

    x, y = _xy(300)
    x[150, 2] = np.nan  # targets are probed when the data is bound to the task; inputs are read only by training
    recipe = Recipe(name="nan", data={"python": "d", "batch_size": 32}, baseline={"epochs": 1}, sparsity=None,
                    export=None)
    data = {"train": _stream(x, y), "validation": _stream(*_xy(50, 1)), "test": _stream(*_xy(50, 2))}
    with pytest.raises(DataError, match=r"diverged.*train split's batch 4 \(samples 128-159, first at sample 150\): "
                                        r"the inputs hold 1 NaN") as err:
        train(recipe, model=_model(), data=data, run_dir=tmp_path / "run")
    assert "learning rate" not in str(err.value)


def test_a_reshuffled_test_stream_stops_the_run_before_training(tmp_path: Path) -> None:
    from edgesparse import Recipe, train

    recipe = Recipe(name="shuf", data={"python": "d", "batch_size": 32}, baseline={"epochs": 1}, sparsity=None)
    xt, yt = _xy(200, 2)
    data = {"train": _stream(*_xy(300)), "validation": _stream(*_xy(50, 1)), "test": _stream(xt, yt, reshuffle=True)}
    with pytest.raises(DataError, match="test split yields different samples"):  # before: exit 0, agreement 20.40%
        train(recipe, model=_model(), data=data, run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "state.json").exists()


def test_export_fails_below_min_agreement() -> None:
    from edgesparse.export import _check_agreement  # type: ignore[attr-defined]
    from edgesparse.export.candidates import Candidate
    from edgesparse.export.convert import convert
    from edgesparse.export.verify import verify

    model = _model()
    x, y = _xy(200, 3)
    keras_out = model.predict(x, verbose=0)
    tfl = convert(model, "none")
    good = Candidate(mode="none", sparse_encoding=False, data=tfl,
                     verification=verify(tfl, x, y, keras_out))
    _check_agreement(good, 0.9)  # the same model: agreement 100%
    assert good.verification is not None and good.verification.agreement == 1.0
    # Keras outputs of other samples (what a reshuffled test split gives): the comparison is meaningless
    shuffled = keras_out[np.random.default_rng(0).permutation(len(keras_out))]
    bad = Candidate(mode="none", sparse_encoding=False, data=tfl, verification=verify(tfl, x, y, shuffled))
    assert bad.verification is not None
    agreement = bad.verification.agreement
    assert agreement is not None and agreement < 0.9
    with pytest.raises(AccuracyDropError, match=rf"agrees with the Keras model on {agreement:.2%}.*min_agreement 90%"):
        _check_agreement(bad, 0.9)
    _check_agreement(bad, None)  # no threshold: nothing checked
