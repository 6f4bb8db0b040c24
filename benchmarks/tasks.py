"""Every task kind at 80% sparsity + int8: does the primary metric hold, at <= 1/6 of the dense file? (issue 16)

For each kind a model of the shape edge teams ship is trained dense on generated data (nothing is
downloaded), pruned to 80% over its prunable kernels, quantized post-training to int8, exported with
the converter's sparse encoding allowed (``export.objective: size``, the size target) and verified on
the held-out test split, through ``edgesparse.train`` like any recipe:

* classification: a 5-class MLP on one-hot labels (as MLPerf Tiny's IC training stores them);
* binary: an MLP detector with one sigmoid unit on 0/1 labels (metric accuracy, AUC too);
* multilabel: 4 sigmoid units over multi-hot labels;
* regression: a Conv1D sensor regressor with two continuous outputs (metric mae, lower is better);
* anomaly: the shipped MLPerf-Tiny-shaped autoencoder recipe (ROC AUC of the reconstruction error);
* two outputs: a detector with `cls` (softmax over 4) and `box` (4 coordinates) heads;
* two inputs: an image and a metadata vector;
* wake_word: the shipped wake-word recipe (DS-CNN, 5k parameters, one sigmoid unit), at 80% as well: a model
  this small is mostly non-weight bytes, so the size target is out of its reach (reported, not hidden).

Targets: the final .tflite keeps the dense Keras model's primary metric within 1 point (accuracy, AUC)
or 10% relative (mae); the anomaly AUC within 0.02; model.tflite <= 1/6 of the dense float32 .tflite.

    python benchmarks/tasks.py                      # every kind, seeds 0,1,2
    python benchmarks/tasks.py --kinds anomaly,binary --seeds 0
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgesparse import _tf  # noqa: E402
from edgesparse.recipe import load_recipe, validate_recipe  # noqa: E402
from edgesparse.run import train  # noqa: E402

KINDS = ("classification", "binary", "multilabel", "regression", "anomaly", "two_outputs", "two_inputs", "wake_word")


# ---- models (factories: "benchmarks.tasks:NAME") -------------------------------------------------------------


def mlp(input_shape: tuple[int, ...] = (32,), units: int = 5, activation: str = "softmax") -> Any:
    keras = _tf.keras()
    inputs = keras.Input(input_shape, name="features")
    x = keras.layers.Dense(256, activation="relu", name="fc1")(inputs)
    x = keras.layers.Dense(256, activation="relu", name="fc2")(x)
    return keras.Model(inputs, keras.layers.Dense(units, activation=activation, name="out")(x))


def detector_binary() -> Any:
    return mlp(units=1, activation="sigmoid")


def multilabel() -> Any:
    return mlp(units=4, activation="sigmoid")


def conv1d_regressor() -> Any:
    keras = _tf.keras()
    inputs = keras.Input((64, 3), name="window")
    x = keras.layers.Conv1D(64, 5, activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv1D(64, 5, activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling1D(name="gap")(x)
    x = keras.layers.Dense(128, activation="relu", name="fc1")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="targets")(x))


def detector() -> Any:
    keras = _tf.keras()
    inputs = keras.Input((32,), name="features")
    x = keras.layers.Dense(256, activation="relu", name="fc1")(inputs)
    x = keras.layers.Dense(256, activation="relu", name="fc2")(x)
    cls = keras.layers.Dense(4, activation="softmax", name="cls")(x)
    box = keras.layers.Dense(4, name="box")(keras.layers.Dense(128, activation="relu", name="fc_box")(x))
    return keras.Model(inputs, [cls, box], name="detector")


def two_inputs() -> Any:
    keras = _tf.keras()
    img = keras.Input((16, 16, 1), name="img")
    meta = keras.Input((4,), name="meta")
    x = keras.layers.Conv2D(16, 3, activation="relu", name="conv1")(img)
    x = keras.layers.Flatten(name="flatten")(keras.layers.MaxPooling2D(name="pool")(x))
    x = keras.layers.Dense(128, activation="relu", name="fc_img")(x)
    x = keras.layers.Concatenate(name="join")([x, meta])
    x = keras.layers.Dense(128, activation="relu", name="fc1")(x)
    return keras.Model([img, meta], keras.layers.Dense(4, activation="softmax", name="probs")(x), name="two_in")


# ---- data --------------------------------------------------------------------------------------------------


def _data(kind: str, seed: int, folder: Path) -> dict[str, Any]:
    """Write the kind's generated npz and return its data section."""
    rng = np.random.default_rng(1000 + seed)
    n = 4000
    x = rng.normal(size=(n, 32)).astype(np.float32)
    hidden = np.tanh(x @ rng.normal(size=(32, 16)) / 3)
    arrays: dict[str, np.ndarray]
    if kind == "binary":
        arrays = {"x": x, "y": (hidden @ rng.normal(size=16) + 0.3 * rng.normal(size=n) > 0).astype(np.int64)}
    elif kind == "classification":
        labels = np.argmax(hidden @ rng.normal(size=(16, 5)) + 0.3 * rng.normal(size=(n, 5)), axis=1)
        arrays = {"x": x, "y": np.eye(5, dtype=np.int64)[labels]}
    elif kind == "multilabel":
        scores = hidden @ rng.normal(size=(16, 4)) + 0.3 * rng.normal(size=(n, 4))
        arrays = {"x": x, "y": (scores > 0).astype(np.int64)}
    elif kind == "regression":
        w = rng.normal(size=(n, 64, 3)).astype(np.float32)
        t = np.stack([np.tanh(w[:, :, 0].mean(axis=1) * 4), (w[:, :, 1] * w[:, :, 2]).mean(axis=1) * 4], axis=1)
        arrays = {"x": w, "y": (t + 0.05 * rng.normal(size=t.shape)).astype(np.float32)}
    elif kind == "two_outputs":
        cls = np.argmax(hidden @ rng.normal(size=(16, 4)) + 0.3 * rng.normal(size=(n, 4)), axis=1)
        box = np.tanh(hidden[:, :4]).astype(np.float32)
        arrays = {"x": x, "y_cls": cls, "y_box": box}
    else:  # two_inputs
        img = rng.random((n, 16, 16, 1)).astype(np.float32)
        meta = rng.normal(size=(n, 4)).astype(np.float32)
        quads = np.stack([img[:, :8, :8].mean((1, 2, 3)), img[:, :8, 8:].mean((1, 2, 3)),
                          img[:, 8:, :8].mean((1, 2, 3)), img[:, 8:, 8:].mean((1, 2, 3))], axis=1)
        arrays = {"x_img": img, "x_meta": meta, "y": np.argmax(meta + 20 * (quads - 0.5), axis=1)}
    path = folder / f"{kind}.npz"
    np.savez(path, **arrays)
    return {"npz": str(path), "batch_size": 64}


_FACTORY = {"classification": "benchmarks.tasks:mlp", "multilabel": "benchmarks.tasks:multilabel",
            "binary": "benchmarks.tasks:detector_binary",
            "regression": "benchmarks.tasks:conv1d_regressor", "two_outputs": "benchmarks.tasks:detector",
            "two_inputs": "benchmarks.tasks:two_inputs"}


def recipe_for(kind: str, seed: int, folder: Path) -> Any:
    """The recipe of one kind and seed (the shipped recipes for binary and anomaly)."""
    common = {"sparsity.final": 0.8, "quantization.mode": "int8", "export.objective": "size",
              "export.dir": str(folder / f"{kind}-{seed}-bundle"), "output_dir": str(folder / f"{kind}-{seed}"),
              "seed": seed, "sparsity.on_drop": "warn"}  # measured, not refused: the table shows every loss
    if kind in ("wake_word", "anomaly"):
        path = ROOT / "recipes" / ("wake_word.yaml" if kind == "wake_word" else "anomaly_autoencoder.yaml")
        sets = [f"{k}={v}" for k, v in common.items()]
        if kind == "wake_word":  # 80% instead of the recipe's 75%: a longer fine-tune, taught by the dense model
            sets += ["sparsity.epochs=12", "sparsity.optimizer.learning_rate=2e-3",
                     "sparsity.optimizer.schedule=cosine", "distillation={weight: 0.5, temperature: 4.0}"]
        return load_recipe(path, sets)
    raw: dict[str, Any] = {
        "name": f"tasks-{kind}", "data": _data(kind, seed, folder), "model": {"factory": _FACTORY[kind]},
        "baseline": {"epochs": 20, "optimizer": {"learning_rate": 1e-3, "schedule": "cosine"}},
        # 1x16 blocks on the Dense kernels: int8 stores them far more compactly than CSR and the FC kernel reads
        # them without DENSIFY (convolutions in the same model are pruned unstructured)
        "sparsity": {"final": 0.8, "end": 6, "epochs": 10, "frequency": 10, "pattern": "block:1x16",
                     "optimizer": {"learning_rate": 5e-4, "schedule": "cosine"}, "on_drop": "warn"},
        "quantization": {"mode": "int8"},
        "export": {"objective": "size", "dir": common["export.dir"]},
        "output_dir": common["output_dir"], "seed": seed,
    }
    # fc1's rows are 2-4 blocks of 16 wide (32 or 64 inputs; 132 joined features in two_inputs): 1x16 blocks at
    # 80% would empty some of its outputs, which the plan refuses, so fc1 is pruned unstructured
    raw["sparsity"]["layers"] = [{"match": "^fc1$", "pattern": "unstructured"}]
    if kind == "two_inputs":  # same for its 144-weight image stem (80% with it: -9 to -11 points, seeds 0 and 1)
        raw["sparsity"]["layers"].append({"match": "^conv1$", "skip": True})
        raw["sparsity"].update(epochs=15, optimizer={"learning_rate": 2e-3, "schedule": "cosine"})
    if kind == "regression":
        # the 960-weight stem is left dense (the common practice): pruned too, the 80% model lost 99% in mae on
        # validation (0.129 -> 0.258, seed 0) and did not recover in 10 epochs; the rest recovers with a higher rate
        raw["sparsity"]["layers"].append({"match": "^conv1$", "skip": True})
        raw["sparsity"].update(epochs=15, optimizer={"learning_rate": 2e-3, "schedule": "cosine"})
    if kind == "two_outputs":
        # 10 epochs at 5e-4 left the worst seed 1.75 points down (pruning, not int8: the Keras model lost as much)
        raw["sparsity"].update(epochs=15, optimizer={"learning_rate": 2e-3, "schedule": "cosine"})
        raw["distillation"] = {"weight": 0.5, "temperature": 4.0}  # per head: KL on cls, MSE on box
        raw["task"] = {"outputs": {"cls": {"kind": "classification"}, "box": {"kind": "regression"}},
                       "primary": "cls"}
    return validate_recipe(raw)


def measure(kind: str, seed: int, folder: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    res = train(recipe_for(kind, seed, folder), force=True)
    s = res.summary
    assert s.tflite is not None and s.task is not None
    bundle = Path(s.tflite.bundle or "")
    info = json.loads((bundle / "export.json").read_text())
    v = info["verification"]
    unit = v["unit"]
    dense, final = s.baseline.metric, s.tflite.metric
    assert dense is not None and final is not None
    sign = 1.0 if s.task["direction"] == "higher" else -1.0
    loss = sign * (dense - final) * (100 if unit == "points" else 100 / abs(dense))
    return {"kind": kind, "seed": seed, "metric": s.task["metric"], "unit": unit, "dense": dense, "final": final,
            "loss": loss, "bytes": s.tflite.bytes, "dense_bytes": s.baseline.tflite_bytes,
            "ratio": (s.baseline.tflite_bytes or 0) / s.tflite.bytes, "agreement": s.tflite.agreement,
            "max_abs_diff": s.tflite.max_abs_diff, "sparsity": s.model.sparsity_pruned_kernels if s.model else None,
            "latency_ratio": s.tflite.latency_ratio, "sparse_encoding": info.get("sparse_encoding"),
            "resolver": v.get("resolver"),
            "seconds": time.perf_counter() - t0, "metrics": s.tflite.metrics}


def _fmt(v: float, unit: str) -> str:
    return f"{100 * v:.2f}%" if unit == "points" else f"{v:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default=None, help="folder for runs and bundles (default: a temporary one)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = ap.parse_args()
    folder = Path(args.out or tempfile.mkdtemp(prefix="edgesparse-tasks-"))
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for kind in args.kinds.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            try:
                r = measure(kind, seed, folder)
            except Exception as exc:  # noqa: BLE001 - one failed run is a row, not the end of the study
                print(f"{kind:15s} seed {seed}: FAILED {type(exc).__name__}: {exc}", flush=True)
                continue
            rows.append(r)
            print(f"{kind:15s} seed {seed}: {r['metric']} dense {_fmt(r['dense'], r['unit'])} -> "
                  f"int8 80% {_fmt(r['final'], r['unit'])} (loss {r['loss']:+.2f} {r['unit']}), {r['bytes']:,} B = "
                  f"1/{r['ratio']:.1f} of dense (sparse encoding {r['sparse_encoding']}), "
                  f"sparsity {r['sparsity']:.1%}, "
                  f"latency {r['latency_ratio'] or float('nan'):.2f}x dense, {r['seconds']:.0f} s", flush=True)
    print("\n| kind | metric | dense (mean) | 80% + int8 (mean) | worst loss | target | file vs dense (worst) | met |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in dict.fromkeys(r["kind"] for r in rows):
        mine = [r for r in rows if r["kind"] == kind]
        unit = mine[0]["unit"]
        worst = max(r["loss"] for r in mine)
        target = 2.0 if kind == "anomaly" else (1.0 if unit == "points" else 10.0)
        worst_ratio = min(r["ratio"] for r in mine)
        met = worst <= target and worst_ratio >= 6.0
        print(f"| {kind} | {mine[0]['metric']} | {_fmt(float(np.mean([r['dense'] for r in mine])), unit)} | "
              f"{_fmt(float(np.mean([r['final'] for r in mine])), unit)} | {worst:+.2f} {unit} | "
              f"<= {target:g} {unit} | 1/{worst_ratio:.1f} | {'yes' if met else 'NO'} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
