"""Shared fixtures: tiny real recipes, data and one trained run reused by many tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]


def tiny_recipe(tmp: Path, **sections: Any) -> dict[str, Any]:
    """A recipe that trains a tiny CNN on digits in a few seconds (accuracy is not the point)."""
    recipe: dict[str, Any] = {
        "name": "tiny",
        "seed": 0,
        "output_dir": str(tmp / "run"),
        "data": {"builtin": "digits", "batch_size": 64},
        "model": {"builtin": "small_cnn", "filters": [4, 8], "dense": 32},
        "baseline": {"epochs": 3, "optimizer": {"learning_rate": 0.005}},
        # on_drop warn: a few epochs of pruning a 5k-parameter CNN lose more than the guard's 2 points
        "sparsity": {"final": 0.75, "start": 0, "end": 1, "epochs": 2, "frequency": 5, "on_drop": "warn"},
        "quantization": {"mode": "none"},
        "export": {"dir": str(tmp / "bundle")},
    }
    for key, value in sections.items():
        if value is None:
            recipe[key] = None  # `key: null`: no such phase
        elif isinstance(value, dict) and isinstance(recipe.get(key), dict) and key not in ("data", "model"):
            recipe[key] = {**recipe[key], **value}
        else:
            recipe[key] = value
    return recipe


def write_recipe(tmp: Path, recipe: dict[str, Any], name: str = "recipe.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


#: small_cnn's logits are 10 outputs x 32 inputs, two 1x16 blocks per output: 1x16 blocks above 50% would leave an
#: output with no weight, which plan_sparsity refuses.
LOGITS_HALF = {"match": "^logits$", "final": 0.5}


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One tiny end-to-end run (pruning + PQAT + sparse int8 export), shared by read-only tests."""
    from edgesparse.recipe import validate_recipe
    from edgesparse.run import train

    tmp = tmp_path_factory.mktemp("trained")
    # objective size: keep the smallest verified file (the sparse encoding, with its DENSIFY ops) whatever
    # its latency, so the read-only tests see the converter's sparse storage; tests/test_guard.py covers balanced
    recipe = validate_recipe(tiny_recipe(tmp, quantization={"mode": "pqat", "epochs": 1},
                                         sparsity={"pattern": "block:1x16", "layers": [LOGITS_HALF]},
                                         export={"objective": "size"}))
    return train(recipe)


from tests.sshd import sshd_server  # noqa: E402,F401  (fixture)


@pytest.fixture(scope="session")
def tiny_tflite(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real converted models: dense float, sparse int8 (block FC + CSR conv), and a verify batch."""
    import numpy as np

    from edgesparse import _tf
    from edgesparse.export.convert import convert

    keras = _tf.keras()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu", name="fc")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax", name="out")(x))
    rng = np.random.default_rng(0)
    for name in ("conv", "fc"):
        k = model.get_layer(name).kernel
        k.assign(k.numpy() * (rng.random(k.shape) > 0.8))
    tmp = tmp_path_factory.mktemp("tflite")
    rep = [rng.random((8, 8, 1), dtype=np.float32) for _ in range(20)]
    out = {"dense": tmp / "dense.tflite", "int8": tmp / "model int8.tflite", "batch": tmp / "batch.npy"}
    out["dense"].write_bytes(convert(model, "none"))
    out["int8"].write_bytes(convert(model, "int8", sparse_encoding=True, representative=rep))
    np.save(out["batch"], rng.random((12, 8, 8, 1), dtype=np.float32))
    return out
