"""Peak memory and training throughput of ``edgesparse train`` against data size (issue 17, item 7).

Every run is the whole job (dense baseline, pruning with the schedule inside one epoch, int8 post-training
quantization, export with verification), through the CLI, in a fresh process: its peak resident memory is
what the kernel recorded for that process and its children (``wait4``'s ``ru_maxrss``: the largest single
process), and the process tree's summed ``VmRSS`` polled every 0.2 s (processes alive at once); the targets
compare the larger of the two. Time per training sample is the steady state: the mean
``seconds`` of the training epochs after the first of each phase (the first traces the graph) in history.csv,
divided by the training samples (an epoch's seconds include its validation pass and its checkpoint).

Data, 4 classes (a bright quadrant on noise, computed from each sample's index, so nothing is held in memory):

- ``stream``: ``tf.data.Dataset.range(n).map(...)`` through a data factory (:func:`stream`), 64x64x3;
- ``folder``: image folders of PNGs at 96x96, generated once under ``~/.cache/edgesparse-bench`` and re-used;
- ``arrays``: the same samples as the stream, materialised by the factory as numpy arrays (:func:`arrays`),
  i.e. today's in-memory path. 100,000 of them are 4.9 GB: run only with ``--in-memory-100k``.

Splits: 80% train, 10% validation, 10% test of ``n`` samples. Targets (PASS/FAIL), on pairs at 10x the data
(stream 2k->20k, folder 600->6k) and stream 2k->100k: peak RSS ratio <= 1.2, time per training sample ratio
(larger over smaller; from the median train step, and from whole epochs) <= 1.3.

Usage::

    python benchmarks/memory.py                 # full: about 30-40 minutes on 2 cores
    python benchmarks/memory.py --quick         # stream and arrays at 500 and 5,000, folders of 300 and 3,000
    python benchmarks/memory.py --sizes stream=2000,20000 --sizes folder=600
    python benchmarks/memory.py --in-memory-100k --out /tmp/memory.json

The factories are imported by the child as ``benchmarks.memory:stream`` (the repository is put on its
PYTHONPATH); this module imports TensorFlow only inside them, through ``edgesparse._tf``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("EDGESPARSE_BENCH_CACHE", Path.home() / ".cache" / "edgesparse-bench"))
STREAM_SIZE = 64
FOLDER_SIZE = 96
CLASSES = 4
BATCH = 64
#: fractions of the samples in the validation and test splits (the rest trains)
VAL, TEST = 0.1, 0.1
#: offsets of the validation and test samples' indices (disjoint from the training indices)
_VAL_OFFSET, _TEST_OFFSET = 10**8, 2 * 10**8

FULL = {"stream": [2000, 20000, 100000], "folder": [600, 6000], "arrays": [2000, 20000, 100000]}
QUICK = {"stream": [500, 5000], "folder": [300, 3000], "arrays": [500, 5000]}
#: (kind, small, large): the pairs the targets compare (the quick sizes have their own pairs)
PAIRS = [("stream", 2000, 20000), ("folder", 600, 6000), ("stream", 2000, 100000)]
QUICK_PAIRS = [("stream", 500, 5000), ("folder", 300, 3000)]
RSS_TARGET, TIME_TARGET = 1.2, 1.3
ARRAYS_100K_FLAG = "--in-memory-100k"


# ---- data (imported by the child process) -----------------------------------------------------------------------


def _counts(n: int) -> tuple[int, int, int]:
    n_val, n_test = max(CLASSES, round(n * VAL)), max(CLASSES, round(n * TEST))
    return n - n_val - n_test, n_val, n_test


def _sample_tf(i: Any, seed: int, size: int) -> tuple[Any, Any]:
    """Sample ``i``: noise in [0, 0.5) with the quadrant of its class brightened by 0.5, in a random tint."""
    from edgesparse import _tf

    tf = _tf.tf()
    i = tf.cast(i, tf.int64)
    k = i % CLASSES
    s = tf.stack([tf.constant(seed, tf.int64), i])
    img = tf.random.stateless_uniform((size, size, 3), seed=s, maxval=0.5)
    tint = tf.random.stateless_uniform((3,), seed=s + 1, minval=0.6, maxval=1.0)
    h = size // 2
    r, c = k // 2, k % 2
    rows = tf.range(size, dtype=tf.int64)[:, None]
    cols = tf.range(size, dtype=tf.int64)[None, :]
    mask = tf.cast((rows // h == r) & (cols // h == c), tf.float32)[..., None]
    return img + 0.5 * mask * tint, k


def _stream_split(count: int, offset: int, seed: int, size: int) -> Any:
    from edgesparse import _tf

    tf = _tf.tf()
    ds = tf.data.Dataset.range(offset, offset + count)
    ds = ds.map(lambda i: _sample_tf(i, seed, size), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.apply(tf.data.experimental.assert_cardinality(count))


def stream(n: int, seed: int = 0, size: int = STREAM_SIZE) -> dict[str, Any]:
    """``n`` samples as three ``tf.data`` streams (80/10/10), each sample computed from its index."""
    n_train, n_val, n_test = _counts(n)
    return {"train": _stream_split(n_train, 0, seed, size),
            "validation": _stream_split(n_val, _VAL_OFFSET, seed, size),
            "test": _stream_split(n_test, _TEST_OFFSET, seed, size)}


def _materialise(ds: Any, count: int, size: int) -> tuple[Any, Any]:
    import numpy as np

    x = np.empty((count, size, size, 3), np.float32)
    y = np.empty((count,), np.int64)
    at = 0
    for xb, yb in ds.batch(1024).as_numpy_iterator():
        x[at:at + len(xb)], y[at:at + len(yb)] = xb, yb
        at += len(xb)
    return x, y


def arrays(n: int, seed: int = 0, size: int = STREAM_SIZE) -> dict[str, Any]:
    """The samples of :func:`stream` as ``(x, y)`` numpy arrays (everything in memory)."""
    counts = dict(zip(("train", "validation", "test"), _counts(n), strict=True))
    return {k: _materialise(ds, counts[k], size) for k, ds in stream(n, seed, size).items()}


def _folder(n: int, size: int = FOLDER_SIZE, seed: int = 0) -> Path:
    """``n`` PNGs (``n / 4`` per class folder), written once; a complete folder has a ``.complete`` marker."""
    import numpy as np
    from PIL import Image

    root = CACHE / f"quadrants-{n}-{size}px-seed{seed}"
    if (root / ".complete").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    print(f"generating {n} PNGs at {size}x{size} in {root} ...", flush=True)
    h = size // 2
    for i in range(n):
        k = i % CLASSES
        rng = np.random.default_rng([seed, i])
        img = rng.uniform(0.0, 0.5, (size, size, 3))
        r, c = divmod(k, 2)
        img[h * r:h * r + h, h * c:h * c + h] += 0.5 * rng.uniform(0.6, 1.0, 3)
        d = root / f"class{k}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray((img * 255).round().astype(np.uint8)).save(d / f"{i:06d}.png")
    (root / ".complete").write_text(f"{n}\n")
    return root


# ---- one run ------------------------------------------------------------------------------------------------------


def _recipe(kind: str, n: int, work: Path, baseline_epochs: int, sparsity_epochs: int) -> dict[str, Any]:
    if kind == "folder":
        data: dict[str, Any] = {"image_folder": str(_folder(n)), "image_size": FOLDER_SIZE, "cache": "none",
                                "validation_split": VAL, "test_split": TEST, "batch_size": BATCH}
    else:
        data = {"factory": f"benchmarks.memory:{'stream' if kind == 'stream' else 'arrays'}",
                "kwargs": {"n": n}, "batch_size": BATCH}
    return {
        "name": f"memory-{kind}-{n}",
        "seed": 0,
        "data": data,
        "model": {"builtin": "small_cnn", "filters": [8, 16], "dense": 32},
        # tiny data sets train for a few steps: report a weak baseline instead of stopping the benchmark
        "baseline": {"epochs": baseline_epochs, "optimizer": {"name": "adam", "learning_rate": 1e-3},
                     "on_broken": "warn"},
        "sparsity": {"schedule": "polynomial", "initial": 0.0, "final": 0.8, "start": 0, "end": 0.8,
                     "frequency": 10, "epochs": sparsity_epochs, "on_shortfall": "warn", "on_drop": "warn"},
        "quantization": {"mode": "int8"},
        # the pruning schedule ends inside one short epoch: the figures measured here are memory and time, so
        # keep every verified conversion, however much accuracy it lost, rather than fail the run
        "export": {"representative_samples": 200, "objective": "size", "max_accuracy_drop": 100.0,
                   "dir": str(work / "bundle")},
    }


def _tree_rss_kb(pid: int) -> int:
    """Summed VmRSS (kB) of ``pid`` and its descendants, from /proc (0 when it has gone)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            with open(f"/proc/{p}/status", encoding="ascii", errors="replace") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def run_one(kind: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    """``edgesparse train`` on ``n`` samples of ``kind`` in a fresh process: its peak RSS and timings."""
    import yaml

    work = Path(tempfile.mkdtemp(prefix=f"es-mem-{kind}-{n}-"))
    try:
        recipe = _recipe(kind, n, work, args.baseline_epochs, args.sparsity_epochs)
        (work / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(ROOT), *([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])]),
            TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
        cmd = [sys.executable, "-m", "edgesparse.cli", "train", str(work / "recipe.yaml"), "-o", str(work / "run")]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        samples: list[tuple[float, int]] = []
        lines: list[tuple[float, str]] = []
        done = threading.Event()

        def poll() -> None:
            while not done.is_set():
                samples.append((time.perf_counter() - t0, _tree_rss_kb(proc.pid)))
                done.wait(args.poll)

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append((time.perf_counter() - t0, line.rstrip()))
                if args.verbose:
                    print(f"    [{lines[-1][0]:7.1f}s {samples[-1][1] / 1024 if samples else 0:7.0f} MB] "
                          f"{lines[-1][1]}", flush=True)

        poller, reader = threading.Thread(target=poll, daemon=True), threading.Thread(target=read, daemon=True)
        poller.start()
        reader.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        done.set()
        reader.join()
        poller.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        result: dict[str, Any] = {
            "kind": kind, "n": n, "returncode": proc.returncode, "wall_seconds": round(wall, 1),
            # Linux reports ru_maxrss in kB: the largest resident set of the child or any descendant it waited for
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "tree_rss_peak_mb": round(max((s for _, s in samples), default=0) / 1024, 1),
            "phases_rss_mb": _phase_peaks(samples, lines),
        }
        if proc.returncode != 0:
            result["error"] = "\n".join(line for _, line in lines[-30:])
            return result
        result.update(_timings(work / "run"))
        return result
    finally:
        if args.keep:
            print(f"    kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


#: words that open a phase in the CLI's log lines, in the order of the run
_PHASE_WORDS = ("baseline", "sparsity", "quantiz", "export", "convert", "verif")


def _phase_peaks(samples: list[tuple[float, int]], lines: list[tuple[float, str]]) -> dict[str, float]:
    """Peak tree RSS (MB) while each phase logged: a phase runs from its first log line to the next phase's."""
    starts: list[tuple[float, str]] = [(0.0, "start")]
    for t, line in lines:
        low = line.lower().lstrip("· ").lstrip()
        for word in _PHASE_WORDS:
            if low.startswith(word) or low.startswith(f"{word}:"):
                name = {"quantiz": "quantization", "convert": "export", "verif": "export"}.get(word, word)
                if name != starts[-1][1]:
                    starts.append((t, name))
                break
    peaks: dict[str, float] = {}
    for j, (t, name) in enumerate(starts):
        end = starts[j + 1][0] if j + 1 < len(starts) else float("inf")
        inside = [s for ts, s in samples if t <= ts < end]
        if inside:
            peaks[name] = round(max(peaks.get(name, 0.0), max(inside) / 1024), 1)
    return peaks


def _timings(run_dir: Path) -> dict[str, Any]:
    """Samples and the steady-state seconds per training sample, from summary.json and history.csv."""
    summary = json.loads((run_dir / "summary.json").read_text())
    n_train = int(summary["data"]["train"])
    with (run_dir / "history.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    steady = [float(r["seconds"]) for r in rows
              if r["phase"] in ("baseline", "sparsity") and int(r["epoch"]) > 1 and r.get("seconds")]
    first = [float(r["seconds"]) for r in rows if r["phase"] in ("baseline", "sparsity") and int(r["epoch"]) == 1]
    out: dict[str, Any] = {
        "train_samples": n_train,
        "steady_epochs": len(steady),
        "us_per_sample": round(1e6 * sum(steady) / (len(steady) * n_train), 1) if steady else None,
        "first_epoch_us_per_sample": round(1e6 * sum(first) / (len(first) * n_train), 1) if first else None,
        # the median train step of the baseline (its first epoch, the tracing, excluded) per sample: training
        # throughput without the per-epoch fixed costs (validation pass, checkpoint) that weigh on small runs
        "step_us_per_sample": (round(1000 * summary["baseline"]["step_ms"] / BATCH, 1)
                               if summary["baseline"].get("step_ms") else None),
        "baseline_seconds": round(summary["baseline"]["seconds"], 1),
        "sparsity_seconds": round((summary.get("sparsity") or {}).get("seconds", 0.0), 1),
        "total_seconds": round(summary["timing"].get("total_seconds") or 0.0, 1),
        "baseline_accuracy": summary["baseline"].get("accuracy"),
        "tflite_accuracy": (summary.get("tflite") or {}).get("accuracy"),
        "tflite_quantization": (summary.get("tflite") or {}).get("quantization"),
    }
    return out


# ---- the table ----------------------------------------------------------------------------------------------------


def _bytes_in_memory(n: int) -> float:
    return n * STREAM_SIZE * STREAM_SIZE * 3 * 4 / 1e9


def _fmt(v: Any, spec: str = "") -> str:
    return "-" if v is None else format(v, spec)


def table(results: list[dict[str, Any]]) -> str:
    head = (f"{'data':<8}{'samples':>9}{'train':>8}{'peak RSS MB':>13}{'tree MB':>9}{'step us':>9}{'us/sample':>11}"
            f"{'1st epoch':>11}{'wall s':>8}{'acc':>7}{'tflite':>8}  phases peak MB")
    out = [head, "-" * len(head)]
    for r in results:
        if r.get("not_run"):
            out.append(f"{r['kind']:<8}{r['n']:>9,}  not run: {r['not_run']}")
            continue
        if r.get("returncode"):
            out.append(f"{r['kind']:<8}{r['n']:>9,}  FAILED (exit {r['returncode']}), peak {r['peak_rss_mb']:,.0f} MB")
            continue
        phases = " ".join(f"{k[:5]}={v:,.0f}" for k, v in r.get("phases_rss_mb", {}).items() if k != "start")
        out.append(f"{r['kind']:<8}{r['n']:>9,}{r['train_samples']:>8,}{r['peak_rss_mb']:>13,.0f}"
                   f"{r['tree_rss_peak_mb']:>9,.0f}{_fmt(r.get('step_us_per_sample'), ',.0f'):>9}"
                   f"{_fmt(r['us_per_sample'], ',.0f'):>11}"
                   f"{_fmt(r['first_epoch_us_per_sample'], ',.0f'):>11}{r['wall_seconds']:>8,.0f}"
                   f"{_fmt(r['baseline_accuracy'], '.2f'):>7}{_fmt(r['tflite_accuracy'], '.2f'):>8}  {phases}")
    return "\n".join(out)


def _peak(r: dict[str, Any]) -> float:
    """The larger of the kernel's per-process high-water mark and the polled sum over the process tree."""
    return max(r["peak_rss_mb"], r["tree_rss_peak_mb"])


def targets(results: list[dict[str, Any]], pairs: list[tuple[str, int, int]]) -> list[dict[str, Any]]:
    """The PASS/FAIL rows: peak RSS and time per training sample of the larger run over the smaller."""
    by = {(r["kind"], r["n"]): r for r in results if not r.get("not_run") and not r.get("returncode")}
    checks = []
    for kind, small, large in pairs:
        a, b = by.get((kind, small)), by.get((kind, large))
        if a is None or b is None:
            continue
        rss = _peak(b) / _peak(a)
        checks.append({"pair": f"{kind} {small:,} -> {large:,}", "what": "peak RSS", "ratio": round(rss, 3),
                       "target": RSS_TARGET, "pass": rss <= RSS_TARGET})
        if a.get("step_us_per_sample") and b.get("step_us_per_sample"):
            t = b["step_us_per_sample"] / a["step_us_per_sample"]
            # "within 1.3x": a training sample of the larger data costs at most 1.3x one of the smaller (median train
            # step per sample); faster per sample is not a failure: streaming must not make more data dearer
            checks.append({"pair": f"{kind} {small:,} -> {large:,}", "what": "time per training sample (train step)",
                           "ratio": round(t, 3), "target": TIME_TARGET, "pass": t <= TIME_TARGET})
        if a["us_per_sample"] and b["us_per_sample"]:
            t = b["us_per_sample"] / a["us_per_sample"]
            checks.append({"pair": f"{kind} {small:,} -> {large:,}", "what": "time per training sample (epoch)",
                           "ratio": round(t, 3), "target": TIME_TARGET, "pass": t <= TIME_TARGET})
    return checks


def _parse_sizes(values: list[str], base: dict[str, list[int]]) -> dict[str, list[int]]:
    sizes = {k: list(v) for k, v in base.items()}
    if values:
        sizes = {k: [] for k in base}
    for v in values:
        kind, _, ns = v.partition("=")
        if kind not in base or not ns:
            raise SystemExit(f"--sizes {v!r}: give KIND=N[,N...] with KIND one of {', '.join(base)}")
        sizes[kind] += [int(x.replace("_", "")) for x in ns.split(",") if x]
    return sizes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes: 500 and 5,000 (folders: 300 and 3,000)")
    p.add_argument("--sizes", action="append", default=[], metavar="KIND=N,N",
                   help="run only these sizes (KIND: stream, folder, arrays; repeatable)")
    p.add_argument(ARRAYS_100K_FLAG, dest="arrays_100k", action="store_true",
                   help="also run 100,000 in-memory samples (4.9 GB of float32 arrays)")
    p.add_argument("--baseline-epochs", type=int, default=2, help="dense epochs (>= 2: the first is not timed)")
    p.add_argument("--sparsity-epochs", type=int, default=1, help="pruning epochs (the schedule ends after one)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "memory.json")
    p.add_argument("--poll", type=float, default=0.2, help="seconds between RSS polls of the process tree")
    p.add_argument("--keep", action="store_true", help="keep the run directories")
    p.add_argument("-v", "--verbose", action="store_true", help="echo the runs' output with time and RSS")
    args = p.parse_args(argv)
    if args.baseline_epochs < 2:
        p.error("--baseline-epochs must be at least 2: the first epoch traces the graph and is not timed")
    sizes = _parse_sizes(args.sizes, QUICK if args.quick else FULL)
    pairs = QUICK_PAIRS if args.quick else PAIRS
    print(f"edgesparse train, whole job: small_cnn [8, 16] dense 32, batch {BATCH}, baseline {args.baseline_epochs} "
          f"epochs, sparsity {args.sparsity_epochs}, int8 post-training, export + verification; "
          f"splits {1 - VAL - TEST:.0%}/{VAL:.0%}/{TEST:.0%}", flush=True)
    results: list[dict[str, Any]] = []
    for kind in ("stream", "folder", "arrays"):
        for n in sizes[kind]:
            if kind == "arrays" and n >= 100_000 and not args.arrays_100k:
                results.append({"kind": kind, "n": n, "not_run": f"{_bytes_in_memory(n):.1f} GB of float32 arrays "
                                f"(pass {ARRAYS_100K_FLAG})"})
                print(f"  {kind} {n:,}: not run ({results[-1]['not_run']})", flush=True)
                continue
            print(f"  {kind} {n:,} ...", flush=True)
            r = run_one(kind, n, args)
            results.append(r)
            status = f"exit {r['returncode']}" if r["returncode"] else f"{r['us_per_sample']} us/sample"
            print(f"  {kind} {n:,}: peak RSS {r['peak_rss_mb']:,.0f} MB, {status}, {r['wall_seconds']:.0f} s",
                  flush=True)
            if r["returncode"]:
                print(r["error"], flush=True)
    checks = targets(results, pairs)
    print()
    print(table(results))
    print()
    for c in checks:
        print(f"{c['pair']:<22} {c['what']:<26} {c['ratio']:6.2f}x  (target <= {c['target']}x)  "
              f"{'PASS' if c['pass'] else 'FAIL'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"config": {"baseline_epochs": args.baseline_epochs,
                                          "sparsity_epochs": args.sparsity_epochs, "batch_size": BATCH,
                                          "stream_size": STREAM_SIZE, "folder_size": FOLDER_SIZE,
                                          "cpus": os.cpu_count(), "python": sys.version.split()[0]},
                               "results": results, "targets": checks,
                               "ru_maxrss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024},
                              indent=2))
    tmp.replace(args.out)
    print(f"\nwrote {args.out}")
    return 0 if checks and all(c["pass"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
