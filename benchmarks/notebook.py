"""The notebook flow end to end, in the import order notebooks use (issue 32, items 1 and 8).

A fresh Python process does what a notebook's first cells do: ``import tensorflow as tf``, ``import keras`` (so
``tf.keras`` is Keras 3), builds and trains a Keras 3 CNN with ``metrics=["accuracy"]`` on digits, then calls
``edgesparse.train(recipe, model=..., data=...)``: translation to tf_keras, pruning to 80% (tfmot), int8
post-training quantization, export with verification. Prints the wall time of each part, the process's peak
resident memory, and what the run kept.

Usage::

    python benchmarks/notebook.py            # about 30 s on 2 cores
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import numpy as np
import tensorflow as tf
import keras
from sklearn.datasets import load_digits
t_import = time.perf_counter() - t0
d = load_digits()
x = (d.images / 16.0).astype("float32")[..., None]
y = d.target.astype("int64")
rng = np.random.default_rng(0)
order = rng.permutation(len(x))
x, y = x[order], y[order]
tr, va = slice(0, 1200), slice(1200, 1440)
te = slice(1440, None)
keras.utils.set_random_seed(0)
m = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(16, 3, activation="relu"),
                      keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.Flatten(),
                      keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10, activation="softmax")])
m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
t1 = time.perf_counter()
m.fit(x[tr], y[tr], epochs=15, batch_size=64, verbose=0)
t_keras = time.perf_counter() - t1
keras_acc = float(m.evaluate(x[te], y[te], verbose=0)[1])
from edgesparse import Recipe, train
out = sys.argv[1]
recipe = Recipe(name="notebook", baseline={"epochs": 0}, quantization={"mode": "int8"},
                sparsity={"final": 0.8, "epochs": 15, "frequency": 10, "on_drop": "warn"},
                export={"dir": out + "/bundle", "objective": "size"})
t2 = time.perf_counter()
res = train(recipe, model=m, data={"train": (x[tr], y[tr]), "validation": (x[va], y[va]), "test": (x[te], y[te])},
            run_dir=out + "/run", progress=False)
t_es = time.perf_counter() - t2
s = res.summary
print(json.dumps({"tf_keras_is": tf.keras.__name__, "import_s": round(t_import, 1), "keras3_fit_s": round(t_keras, 1),
                  "edgesparse_train_s": round(t_es, 1), "total_s": round(time.perf_counter() - t0, 1),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                  "keras3_test_accuracy": round(keras_acc, 4), "tflite_test_accuracy": s.tflite.accuracy,
                  "quantization": s.tflite.quantization, "sparsity": round(s.sparsity.achieved.overall, 4),
                  "tflite_bytes": s.tflite.bytes, "dense_tflite_bytes": s.baseline.tflite_bytes,
                  "agreement": s.tflite.agreement, "baseline_test_accuracy": s.baseline.accuracy,
                  "final_keras_test_accuracy": s.model.accuracy, "warnings": res.warnings}))
"""


def main() -> None:
    """Run the notebook flow in a fresh process and print its figures."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", CHILD, tmp], capture_output=True, text=True, cwd=ROOT,
                              env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"})
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"the notebook flow failed:\n{proc.stderr[-4000:]}")
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    figures["process_wall_s"] = round(wall, 1)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
