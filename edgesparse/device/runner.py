#!/usr/bin/env python3
"""edgesparse device runner: time a .tflite model on the machine it runs on; print one JSON object.

This file is copied alone onto devices (Raspberry Pi, Android/Termux): it imports only the
standard library, numpy and a TFLite runtime — ai_edge_litert, else tflite_runtime, else
tensorflow.lite — and keeps to Python 3.7 syntax. With tflite-runtime 2.14 (Raspberry Pi OS) use
numpy<2.

Usage::

    python3 runner.py MODEL.tflite [--threads N] [--runs N] [--warmup N] [--resolver auto|builtin]
                      [--input BATCH.npy] [--input-shape 1,96,96,3] [--save-outputs OUT.npy]

Errors are JSON too (``{"error": ..., "kind": ...}``) with exit codes: 2 bad argument or dynamic
shape, 3 no runtime, 4 the model cannot be loaded or run.
"""

import argparse
import hashlib
import json
import os
import platform
import resource
import sys
import time

EXIT_BAD_ARGUMENT = 2
EXIT_NO_RUNTIME = 3
EXIT_LOAD_FAILED = 4
NO_RUNTIME_FIX = ("pip install ai-edge-litert   (Raspberry Pi OS / older Python: "
                  "pip install tflite-runtime 'numpy<2')")


class RunnerError(Exception):
    """An error reported as JSON with a kind and an exit code."""

    def __init__(self, kind, message, code, fix=None):
        Exception.__init__(self, message)
        self.kind = kind
        self.code = code
        self.fix = fix


def rss_bytes():
    """Peak resident set size of this process so far (bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)


def import_runtime():
    """Return (name, version, Interpreter class, OpResolverType or None)."""
    try:
        import numpy  # noqa: F401  (every TFLite runtime needs it)
    except ImportError:
        raise RunnerError("no_runtime", "numpy is not importable with " + sys.executable, EXIT_NO_RUNTIME,
                          "pip install numpy ai-edge-litert   (Raspberry Pi OS / older Python: "
                          "pip install tflite-runtime 'numpy<2')")
    errors = []
    try:
        from ai_edge_litert import interpreter as mod
        try:
            from importlib.metadata import version
            ver = version("ai-edge-litert")
        except Exception:  # noqa: BLE001
            ver = "unknown"
        return "ai_edge_litert", ver, mod.Interpreter, getattr(mod, "OpResolverType", None)
    except ImportError as exc:
        errors.append(str(exc))
    try:
        from tflite_runtime import interpreter as mod  # type: ignore
        import tflite_runtime  # type: ignore
        return "tflite_runtime", getattr(tflite_runtime, "__version__", "unknown"), mod.Interpreter, getattr(
            mod, "OpResolverType", None)
    except ImportError as exc:
        errors.append(str(exc))
    try:
        import tensorflow as tf  # type: ignore
        return "tensorflow", tf.__version__, tf.lite.Interpreter, getattr(tf.lite.experimental, "OpResolverType", None)
    except ImportError as exc:
        errors.append(str(exc))
    raise RunnerError("no_runtime", "no TFLite runtime is importable with " + sys.executable + " ("
                      + "; ".join(errors) + ")", EXIT_NO_RUNTIME, NO_RUNTIME_FIX)


def _prepare(interp, input_shape):
    """Resize a dynamic input (before the first allocation, which would fail on -1 dims), then allocate."""
    if input_shape:
        interp.resize_tensor_input(interp.get_input_details()[0]["index"], list(input_shape))
    interp.allocate_tensors()


def make_interpreter(runtime, model_path, threads, resolver, input_shape=None):
    """Create and allocate an interpreter; 'auto' falls back from XNNPACK to the builtin resolver.

    Returns (interpreter, resolver_used, fallback_reason, init_ms).
    """
    _name, _ver, interpreter_cls, resolver_type = runtime
    reason = None
    if resolver == "auto":
        t0 = time.perf_counter()
        try:
            interp = interpreter_cls(model_path=model_path, num_threads=threads)
            _prepare(interp, input_shape)
            init_ms = (time.perf_counter() - t0) * 1000.0
            invoke_once(interp)
            return interp, "xnnpack", None, init_ms
        except (RuntimeError, ValueError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if resolver_type is None:
        raise RunnerError("load_failed", "this runtime has no builtin resolver option and the default one failed: "
                          + str(reason), EXIT_LOAD_FAILED)
    t0 = time.perf_counter()
    try:
        interp = interpreter_cls(model_path=model_path, num_threads=threads,
                                 experimental_op_resolver_type=resolver_type.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        _prepare(interp, input_shape)
    except (RuntimeError, ValueError) as exc:
        raise RunnerError("load_failed", "the runtime cannot load the model: " + str(exc).strip(), EXIT_LOAD_FAILED)
    return interp, "builtin", reason, (time.perf_counter() - t0) * 1000.0


def invoke_once(interp):
    import numpy as np

    for d in interp.get_input_details():
        interp.set_tensor(d["index"], np.zeros(d["shape"], dtype=d["dtype"]))
    interp.invoke()


def random_input(detail, rng):
    import numpy as np

    dtype = np.dtype(detail["dtype"])
    shape = tuple(int(s) for s in detail["shape"])
    if dtype.kind == "f":
        return rng.random(shape).astype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -128), min(info.max, 127) + 1, size=shape).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) > 0.5
    raise RunnerError("bad_argument", "cannot generate inputs of dtype " + str(dtype), EXIT_BAD_ARGUMENT)


def quantize(x, detail):
    import numpy as np

    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return x.astype(dtype)
    scale, zero = detail["quantization"]
    if not scale:
        return x.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def dequantize(y, detail):
    import numpy as np

    if np.dtype(detail["dtype"]).kind == "f":
        return y.astype(np.float32)
    scale, zero = detail["quantization"]
    if not scale:
        return y.astype(np.float32)
    return (y.astype(np.float32) - zero) * scale


def summarize(samples_ms):
    import numpy as np

    a = np.asarray(samples_ms, dtype=np.float64)
    return {"mean": float(a.mean()), "median": float(np.median(a)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "min": float(a.min()), "max": float(a.max()),
            "std": float(a.std())}


def run_batch(interp, batch):
    """Run every sample of ``batch`` (one invoke per model batch); return float outputs."""
    import numpy as np

    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    per = int(inp["shape"][0]) or 1
    results = []
    for start in range(0, len(batch), per):
        chunk = batch[start:start + per]
        n = len(chunk)
        if n < per:
            chunk = np.concatenate([chunk, np.zeros((per - n,) + chunk.shape[1:], dtype=chunk.dtype)])
        interp.set_tensor(inp["index"], quantize(chunk.reshape(tuple(inp["shape"])), inp))
        interp.invoke()
        results.append(dequantize(interp.get_tensor(out["index"]), out)[:n])
    return np.concatenate(results) if results else np.zeros((0,), dtype=np.float32)


def output_summary(outputs):
    import numpy as np

    rounded = np.round(outputs.astype(np.float32), 4) + 0.0  # +0.0 folds -0.0 into 0.0
    return {"count": int(len(outputs)), "checksum": hashlib.sha256(rounded.tobytes()).hexdigest(),
            "argmax": [int(i) for i in np.argmax(outputs.reshape(len(outputs), -1), axis=-1)],
            "sum": float(outputs.sum())}


def run(args):
    if args.threads < 1:
        raise RunnerError("bad_argument", "--threads must be >= 1", EXIT_BAD_ARGUMENT)
    if args.runs < 1:
        raise RunnerError("bad_argument", "--runs must be >= 1", EXIT_BAD_ARGUMENT)
    if args.warmup < 0:
        raise RunnerError("bad_argument", "--warmup must be >= 0", EXIT_BAD_ARGUMENT)
    if not os.path.isfile(args.model):
        raise RunnerError("load_failed", "model file not found: " + args.model, EXIT_LOAD_FAILED)
    baseline_rss = rss_bytes()
    runtime = import_runtime()
    import numpy as np

    rss_after_import = rss_bytes()
    shape = [int(s) for s in args.input_shape.split(",")] if args.input_shape else None
    interp, resolver, reason, init_ms = make_interpreter(runtime, args.model, args.threads, args.resolver, shape)
    inp = interp.get_input_details()[0]
    signature = [int(d) for d in inp.get("shape_signature", inp["shape"])]
    if shape is None and any(d < 0 for d in signature[1:]):
        raise RunnerError("dynamic_shape", "the model's input " + str(inp["name"]) + " has dynamic dimensions "
                          + str(signature) + "; give --input-shape", EXIT_BAD_ARGUMENT)
    rng = np.random.default_rng(0)
    details = interp.get_input_details()
    feeds = [(d["index"], random_input(d, rng)) for d in details]
    for _ in range(args.warmup):
        for idx, value in feeds:
            interp.set_tensor(idx, value)
        interp.invoke()
    samples = []
    for _ in range(args.runs):
        for idx, value in feeds:
            interp.set_tensor(idx, value)
        t0 = time.perf_counter()
        interp.invoke()
        samples.append((time.perf_counter() - t0) * 1000.0)
    outputs = None
    if args.input:
        batch = np.load(args.input, allow_pickle=False).astype(np.float32)
        result = run_batch(interp, batch)
        outputs = output_summary(result)
        if args.save_outputs:
            np.save(args.save_outputs, result)
    return {
        "runtime": {"name": runtime[0], "version": runtime[1]},
        "python": platform.python_version(),
        "machine": platform.machine(),
        "numpy": np.__version__,
        "resolver": resolver,
        "delegate_fallback_reason": reason,
        "threads": args.threads,
        "init_ms": init_ms,
        "runs": args.runs,
        "warmup": args.warmup,
        "latency_ms": summarize(samples),
        "samples_ms": samples,
        "baseline_rss_bytes": baseline_rss,
        "runtime_rss_bytes": rss_after_import,
        "peak_rss_bytes": rss_bytes(),
        "input": {"shape": [int(s) for s in inp["shape"]], "dtype": str(np.dtype(inp["dtype"]))},
        "outputs": outputs,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description="Time a .tflite model; print one JSON object.")
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--resolver", choices=["auto", "builtin"], default="auto")
    parser.add_argument("--input", help="a .npy batch of float inputs to run and checksum")
    parser.add_argument("--input-shape", help="concrete input shape for dynamic models, e.g. 1,96,96,3")
    parser.add_argument("--save-outputs", help="write the batch's outputs to this .npy")
    args = parser.parse_args(argv)
    try:
        result = run(args)
    except RunnerError as exc:
        out = {"error": str(exc), "kind": exc.kind}
        if exc.fix:
            out["fix"] = exc.fix
        print(json.dumps(out))
        return exc.code
    except Exception as exc:  # noqa: BLE001 - anything else: report as a load/run failure, as JSON
        print(json.dumps({"error": type(exc).__name__ + ": " + str(exc), "kind": "load_failed"}))
        return EXIT_LOAD_FAILED
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
