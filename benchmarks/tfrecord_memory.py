"""Peak memory of a run reading ``data: {tfrecord: ...}`` against data size (issue 32, items 3 and 8).

Two record sets of 32x32x3 PNG images (4 classes: a bright quadrant on noise) with an int64 ``label``, in
TFDS layout (``bench-train.tfrecord-0000i-of-0000k`` shards and one test shard), generated once under
``~/.cache/edgesparse-bench/tfrecord-<n>`` and re-used. Each size runs the whole job through the CLI in a fresh
process (dense baseline 1 epoch, pruning 1 epoch, int8 export with verification; validation carved from the
train shards): its peak resident memory is ``wait4``'s ``ru_maxrss`` (the largest process of the tree).
Target (PASS/FAIL): peak RSS of the larger run / the smaller <= 1.2.

Usage::

    python benchmarks/tfrecord_memory.py                  # 5,000 and 50,000 samples (about 5-8 minutes on 2 cores)
    python benchmarks/tfrecord_memory.py --sizes 500,5000 --out /tmp/tfrecord_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("EDGESPARSE_BENCH_CACHE", Path.home() / ".cache" / "edgesparse-bench"))
SIZE, CLASSES, SHARD = 32, 4, 10_000
TARGET = 1.2


def _images(start: int, n: int) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(start)
    labels = (np.arange(start, start + n) * 7919) % CLASSES
    x = rng.integers(0, 96, (n, SIZE, SIZE, 3), dtype=np.uint8)
    h = SIZE // 2
    for k in range(CLASSES):
        r, c = divmod(k, 2)
        x[labels == k, r * h:(r + 1) * h, c * h:(c + 1) * h] += 128
    return x, labels


def generate(n: int) -> Path:
    """The record set of ``n`` samples (90% train shards, 10% test shard), written once."""
    from edgesparse import _tf

    folder = CACHE / f"tfrecord-{n}"
    done = folder / ".complete"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    tf = _tf.tf()
    n_test = n // 10
    parts = [("train", s, min(SHARD, n - n_test - s)) for s in range(0, n - n_test, SHARD)]
    parts.append(("test", n - n_test, n_test))
    shards = {"train": sum(p[0] == "train" for p in parts), "test": 1}
    seen = {"train": 0, "test": 0}
    for split, start, count in parts:
        name = f"bench-{split}.tfrecord-{seen[split]:05d}-of-{shards[split]:05d}"
        seen[split] += 1
        x, y = _images(start, count)
        with tf.io.TFRecordWriter(str(folder / name)) as w:
            for img, label in zip(x, y, strict=True):
                png = tf.io.encode_png(img).numpy()
                feats = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
                         "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))}
                w.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())
    done.write_text("ok")
    return folder


def run_one(n: int, work: Path) -> dict[str, Any]:
    import yaml

    folder = generate(n)
    recipe = {"name": f"tfrecord{n}", "seed": 0,
              "data": {"tfrecord": str(folder), "batch_size": 64, "validation_split": 0.1},
              "model": {"builtin": "small_cnn", "filters": [8, 16], "dense": 32},
              "baseline": {"epochs": 1}, "sparsity": {"final": 0.75, "epochs": 1, "start": 0, "end": 1,
                                                      "on_drop": "warn"},
              "quantization": {"mode": "int8"}, "export": {"objective": "size", "dir": str(work / f"bundle{n}")}}
    path = work / f"recipe{n}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    env = {**os.environ, "EDGESPARSE_CACHE": str(work / "cache")}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "edgesparse.cli", "train", str(path), "-o", str(work / f"run{n}"),
                             "--force"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"run of {n} samples failed:\n{out[-3000:]}")
    summary = json.loads((work / f"run{n}" / "summary.json").read_text())
    return {"samples": n, "train": summary["data"]["train"], "validation": summary["data"]["validation"],
            "test": summary["data"]["test"], "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "seconds": round(time.perf_counter() - t0, 1), "tflite_accuracy": summary["tflite"]["accuracy"],
            "quantization": summary["tflite"]["quantization"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="5000,50000", help="comma-separated sample counts; the last two are compared")
    p.add_argument("--out", type=Path, help="write the results as JSON")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="edgesparse-tfrecord-bench-") as tmp:
        results = [run_one(n, Path(tmp)) for n in sizes]
    print(f"{'samples':>8} {'train':>7} {'val':>6} {'test':>6} {'peak RSS MB':>12} {'seconds':>8} {'TFLite acc.':>11}")
    for r in results:
        print(f"{r['samples']:>8} {r['train']:>7} {r['validation']:>6} {r['test']:>6} {r['peak_rss_mb']:>12} "
              f"{r['seconds']:>8} {r['tflite_accuracy']:>11.4f} {r['quantization']}")
    ratio = results[-1]["peak_rss_mb"] / results[-2]["peak_rss_mb"] if len(results) > 1 else None
    ok = ratio is not None and ratio <= TARGET
    if ratio is not None:
        print(f"peak RSS ratio {results[-1]['samples']}/{results[-2]['samples']}: {ratio:.3f} "
              f"(target <= {TARGET}): {'PASS' if ok else 'FAIL'}")
    if args.out:
        args.out.write_text(json.dumps({"results": results, "ratio": ratio, "pass": ok}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
