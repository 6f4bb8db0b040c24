#!/usr/bin/env python3
"""edgesparse device runner: time a .tflite model on the machine it runs on; print one JSON object.

This file is copied alone onto devices (Raspberry Pi, Android/Termux, any Linux board), so it
imports nothing from edgesparse: only the standard library, numpy and a TFLite runtime —
``ai_edge_litert``, else ``tflite_runtime``, else ``tensorflow.lite`` — and it keeps to Python 3.7
syntax (annotations are never evaluated thanks to the ``__future__`` import). With tflite-runtime
2.14, the Raspberry Pi OS runtime, numpy must be < 2.

Usage::

    python3 runner.py MODEL.tflite [--threads N] [--runs N] [--min-seconds S] [--warmup N]
                      [--resolver auto|builtin] [--api interpreter|compiled]
                      [--paired REF.tflite] [--input BATCH.npy|BATCH.npz] [--input-shape 1,96,96,3]
                      [--save-outputs OUT.npy|OUT.npz] [--return-outputs]
    python3 runner.py --describe

What is measured:

* ``init_ms``: interpreter creation + ``allocate_tensors`` (model load and delegate preparation).
* ``first_invoke_ms``: the first invocation, which also checks that the resolver can run the model.
* ``latency_ms`` / ``samples_ms``: ``--runs`` invocations after ``--warmup`` untimed ones (more if
  ``--min-seconds`` asks for a longer measurement, as TFLite's benchmark_model ``--min_secs`` does),
  each timed with ``time.perf_counter`` around ``invoke()`` only (inputs are set outside the timer).
* ``paired`` (with ``--paired REF``): MODEL and REF timed in alternating blocks in this process,
  the median and quartiles of the per-block ratio MODEL/REF — a comparison that holds while the
  machine's own speed drifts.
* ``stability``: the samples cut into 5 consecutive chunks; ``drift_pct`` is the spread of the
  chunk medians relative to the overall median. A machine whose speed changes during the
  measurement (another load, frequency scaling, a shared virtual host) shows here, and a median
  measured on it is not repeatable to better than this.
* Memory, from ``getrusage(RUSAGE_SELF).ru_maxrss`` (a high-water mark):
  ``baseline_rss_bytes`` before the runtime is imported, ``runtime_rss_bytes`` after it is imported
  but before the model is loaded, ``peak_rss_bytes`` at the end; ``model_rss_bytes`` is
  ``peak - runtime``, the model's own cost.
* ``ops`` (``--api interpreter``): ``total`` operators of the model's main graph, how many a delegate
  (XNNPACK) ``delegated`` in how many ``partitions``, and the ``builtin`` op types (with counts) left
  to LiteRT's builtin kernels; ``{"unavailable": reason}`` where the runtime does not list its nodes.
  ``resolver`` "xnnpack" means the default resolver ran, not that XNNPACK took every op (the x86-64
  tflite-runtime 2.14 wheel's XNNPACK takes no int8 op, measured).

Inputs and outputs: the converter orders a model's tensors by their signature names (the Keras
names), not in the Keras order, so inputs are fed and outputs read by name (the signature runner's
details, in tflite-runtime 2.14 and ai-edge-litert alike; tensor names where a model has no
signature). Timing feeds every input random values. ``inputs`` lists each input's ``name``, ``shape``
and ``dtype`` (``input`` is the first, as before); ``output_names`` the outputs.

With ``--input`` (a .npy array for one input, or a .npz archive with an array per input named after
it — ``img`` or ``x_img`` as verify.npz stores it) every sample is run and ``outputs`` reports::

    {"count": N, "checksum": ..., "sum": ..., "names": [...],
     "by_name": {NAME: {"shape": [N, ...], "count": N, "checksum": ..., "sum": ...,
                        ["float32_base64": ... with --return-outputs]}},
     ["argmax": [...] for a single output]}

``checksum`` is the sha256 of the float32 outputs rounded to 4 decimals (for several outputs, of the
``name:checksum`` lines in name order). ``argmax`` is kept for single-output models (a class only
for a classifier: what to compare is the host's decision, which knows the task).

Where it ran (every result, ``--describe`` too): ``machine``, ``cpu_model`` (Raspberry Pi's board
and core from /proc/cpuinfo), ``cpu_features`` (the SIMD features that pick int8 and float kernels),
``python``, ``numpy``, ``runtime`` {name, version}, and ``emulated`` with its ``emulation`` evidence:
under qemu-user the process's real memory map names qemu and /proc/cpuinfo (the host kernel's)
describes another architecture than Python runs as. An emulated result carries ``latency_label``
"emulated — not representative of hardware".

API ``interpreter`` (default) drives the classic ``Interpreter``, the API every runtime has;
``compiled`` drives ai-edge-litert's ``CompiledModel`` (LiteRT 2.x, the API its
``litert-benchmark`` times) on its CPU accelerator, timing ``run_by_index`` with input and output
buffers created once.

Resolver ``auto`` tries the runtime's default resolver (XNNPACK) first and, if creating,
allocating or invoking fails (XNNPACK refuses some sparse int8 FULLY_CONNECTED layers with
"failed to delegate"), retries with ``BUILTIN_WITHOUT_DEFAULT_DELEGATES`` and records why in
``delegate_fallback_reason``.

Errors are JSON too, ``{"error": ..., "kind": ..., ["fix": ...]}``, with exit codes: 2 for
``bad_argument`` and ``dynamic_shape``, 3 for ``no_runtime``, 4 for ``load_failed``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import sys
import time
from typing import Any

try:  # Unix only; the runner still works (without memory figures) where it is missing
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

EXIT_OK = 0
EXIT_BAD_ARGUMENT = 2
EXIT_NO_RUNTIME = 3
EXIT_LOAD_FAILED = 4
MAX_RUNS = 1000000  # --min-seconds never collects more samples than this
PAIRED_BLOCKS = 20  # --paired: alternating blocks per model
NO_RUNTIME_FIX = "pip install ai-edge-litert  (or on Raspberry Pi OS: pip install tflite-runtime 'numpy<2')"


class RunnerError(Exception):
    """An error reported as one JSON object with a ``kind`` and an exit code."""

    def __init__(self, kind: str, message: str, code: int, fix: str | None = None) -> None:
        Exception.__init__(self, message)
        self.kind = kind
        self.code = code
        self.fix = fix
        self.details: dict[str, Any] = {}  # more JSON fields: missing, runtime, wrong_architecture ...

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": str(self), "kind": self.kind}
        if self.fix:
            out["fix"] = self.fix
        out.update(self.details)
        # which device answered: the host names it in its message
        out.setdefault("machine", platform.machine())
        out.setdefault("python", platform.python_version())
        return out


def bad_argument(message: str) -> RunnerError:
    return RunnerError("bad_argument", message, EXIT_BAD_ARGUMENT)


def load_failed(message: str) -> RunnerError:
    return RunnerError("load_failed", message, EXIT_LOAD_FAILED)


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as RunnerError (JSON on stdout) instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise bad_argument(message)


def rss_bytes() -> int | None:
    """Peak resident set size of this process so far, in bytes (None where unsupported)."""
    if resource is None:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)  # macOS: bytes, Linux: KiB


class Runtime:
    """The TFLite runtime found on this machine."""

    def __init__(self, name: str, version: str, interpreter_cls: Any, resolver_type: Any) -> None:
        self.name = name
        self.version = version
        self.interpreter_cls = interpreter_cls
        self.resolver_type = resolver_type  # OpResolverType enum, or None on very old runtimes


def _version(module: object, dist: str) -> str:
    version = getattr(module, "__version__", None)
    if version:
        return str(version)
    try:
        from importlib.metadata import version as dist_version  # Python >= 3.8

        return dist_version(dist)
    except Exception:
        return "unknown"


def import_runtime() -> Runtime:
    """Import the first available TFLite runtime.

    Raises:
        RunnerError: (no_runtime) neither numpy nor a runtime is importable.
    """
    try:
        import numpy  # noqa: F401  (every TFLite runtime needs it)
    except ImportError as exc:
        error = RunnerError("no_runtime", "numpy is not importable by " + sys.executable + " ("
                            + _import_reason(exc) + ")", EXIT_NO_RUNTIME, NO_RUNTIME_FIX)
        error.details = {"missing": "numpy", "wrong_architecture": _wrong_architecture(str(exc))}
        raise error
    failures = []
    try:
        import ai_edge_litert
        from ai_edge_litert import interpreter as litert

        return Runtime("ai_edge_litert", _version(ai_edge_litert, "ai-edge-litert"), litert.Interpreter,
                       getattr(litert, "OpResolverType", None))
    except Exception as exc:
        failures.append("ai_edge_litert: " + _first_line(exc))
    try:
        import tflite_runtime
        from tflite_runtime import interpreter as tflr

        return Runtime("tflite_runtime", _version(tflite_runtime, "tflite-runtime"), tflr.Interpreter,
                       getattr(tflr, "OpResolverType", None))
    except Exception as exc:
        failures.append("tflite_runtime: " + _first_line(exc))
    try:
        import tensorflow as tf

        return Runtime("tensorflow", tf.__version__, tf.lite.Interpreter,
                       getattr(tf.lite.experimental, "OpResolverType", None))
    except Exception as exc:
        failures.append("tensorflow: " + _first_line(exc))
    error = RunnerError("no_runtime", "no TFLite runtime is importable by " + sys.executable + " ("
                        + "; ".join(failures) + ")", EXIT_NO_RUNTIME, NO_RUNTIME_FIX)
    error.details = {"missing": "runtime", "wrong_architecture": any(_wrong_architecture(f) for f in failures)}
    raise error


#: the machine part of CPython's extension-module tags (``cpython-311-x86_64-linux-gnu.so``)
_SO_ARCH = {"x86_64": "x86_64", "aarch64": "aarch64", "arm": "armv7l", "i386": "i686", "riscv64": "riscv64"}


def _wrong_architecture(message: str) -> bool:
    """An import failed because a compiled module was built for another CPU (a copied venv, a wrong wheel).

    Python skips an extension module whose file name carries another machine's tag (numpy then
    lists ``_multiarray_umath.cpython-311-x86_64-linux-gnu.so`` as "incompatible"); a module without
    a tag fails in the dynamic loader (wrong ELF class, invalid ELF header...).
    """
    if any(s in message for s in ("wrong ELF class", "invalid ELF header", "Exec format error", "ELF load command",
                                  "incompatible architecture", "wrong machine")):
        return True
    mine = platform.machine()
    for tag in re.findall(r"cpython-\d+-([a-z0-9_]+?)-linux-gnu", message):
        if _SO_ARCH.get(tag, tag) != mine and not (tag == "arm" and mine.startswith("arm")):
            return True
    return False


def _import_reason(exc: BaseException) -> str:
    """One line for an ImportError; numpy's own page-long advice is cut to the modules and the cause."""
    text = str(exc)
    if "Original error was" not in text:
        return _first_line(exc)
    keep = [ln.strip(" *") for ln in text.splitlines()
            if ".so" in ln or "Original error was" in ln or "NumPy version is" in ln]
    return " ".join(" ".join(keep).split())


def _first_line(exc: BaseException) -> str:
    """A one-line reason; LiteRT glues its messages together ("...#5Node number 9 ...")."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return re.sub(r"(?<=[^\s;.])(Node number \d)", r"; \1", text)


def check_static_shapes(interp: Any, input_shape: list | None) -> None:
    """Refuse dynamic non-batch dimensions unless --input-shape gives them.

    A dynamic batch dimension (-1 first, as every Keras export has) runs with batch 1.

    Raises:
        RunnerError: (dynamic_shape) a dynamic dimension without --input-shape.
    """
    details = interp.get_input_details()
    for i, d in enumerate(details):
        signature = [int(s) for s in d.get("shape_signature", d["shape"])]
        dynamic = any(s < 0 for s in signature[1:])
        if not dynamic:
            continue
        if input_shape is not None and i == 0:
            if len(input_shape) != len(signature) or any(s >= 0 and s != g for s, g in zip(signature, input_shape)):
                raise bad_argument("--input-shape " + ",".join(str(s) for s in input_shape) + " does not fit input "
                                   + str(d["name"]) + " of signature " + str(signature))
            continue
        if i > 0:  # --input-shape sets the first input only
            raise RunnerError("dynamic_shape", "the model's input " + str(d["name"]) + " (input " + str(i + 1)
                              + " of " + str(len(details)) + ") has dynamic dimensions " + str(signature)
                              + "; --input-shape sets the first input only, so export the model with fixed input "
                              "shapes (keras.Input(shape=...) without None) to run it here", EXIT_BAD_ARGUMENT)
        raise RunnerError("dynamic_shape", "the model's input " + str(d["name"]) + " has dynamic dimensions "
                          + str(signature) + "; give a concrete shape with --input-shape (for example "
                          + ",".join(str(s if s > 0 else 1) for s in signature) + ")", EXIT_BAD_ARGUMENT)


def _create(runtime: Runtime, model_path: str, threads: int, builtin: bool, input_shape: list | None,
            model_content: bytes | None = None) -> Any:
    kwargs: dict[str, Any] = {"num_threads": threads}
    if model_content is not None:
        kwargs["model_content"] = model_content
    else:
        kwargs["model_path"] = model_path
    if builtin:
        if runtime.resolver_type is None:
            raise load_failed(runtime.name + " " + runtime.version + " has no OpResolverType, so the builtin "
                              "resolver cannot be chosen; upgrade the runtime")
        kwargs["experimental_op_resolver_type"] = runtime.resolver_type.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = runtime.interpreter_cls(**kwargs)
    if model_content is None:  # a file to time needs concrete shapes; in-memory callers feed their own
        check_static_shapes(interp, input_shape)
    if input_shape is not None:
        interp.resize_tensor_input(interp.get_input_details()[0]["index"], list(input_shape))
    interp.allocate_tensors()
    return interp


def _invoke_once(interp: Any) -> float:
    import numpy as np

    for d in interp.get_input_details():
        interp.set_tensor(d["index"], np.zeros(d["shape"], dtype=d["dtype"]))
    t0 = time.perf_counter()
    interp.invoke()
    return (time.perf_counter() - t0) * 1000.0


def make_interpreter(runtime: Runtime, model_path: str, threads: int, resolver: str,
                     input_shape: list | None = None, model_content: bytes | None = None) -> dict:
    """Create, allocate and invoke once; ``auto`` falls back from XNNPACK to the builtin resolver.

    ``model_content`` (the flatbuffer's bytes) replaces ``model_path`` for callers that hold the
    model in memory (host-side verification); dynamic shapes are then not refused.

    Returns:
        ``{"interpreter", "resolver", "reason", "init_ms", "first_invoke_ms"}``.

    Raises:
        RunnerError: dynamic shape, or the model cannot be loaded or run by either resolver.
    """
    reason = None
    if resolver == "auto":
        t0 = time.perf_counter()
        try:
            interp = _create(runtime, model_path, threads, False, input_shape, model_content)
            init_ms = (time.perf_counter() - t0) * 1000.0
            first = _invoke_once(interp)
            return {"interpreter": interp, "resolver": "xnnpack", "reason": None, "init_ms": init_ms,
                    "first_invoke_ms": first}
        except (RuntimeError, ValueError) as exc:
            reason = _first_line(exc)
            interp = None  # free the failed attempt before the next one
    t0 = time.perf_counter()
    try:
        interp = _create(runtime, model_path, threads, True, input_shape, model_content)
    except (RuntimeError, ValueError) as exc:
        message = _first_line(exc)
        if reason and reason != message:
            message = "default resolver: " + reason + "; builtin resolver: " + message
        raise load_failed("the runtime cannot load the model: " + message)
    init_ms = (time.perf_counter() - t0) * 1000.0
    try:
        first = _invoke_once(interp)
    except (RuntimeError, ValueError) as exc:
        raise load_failed("the runtime cannot run the model: " + _first_line(exc))
    return {"interpreter": interp, "resolver": "builtin", "reason": reason, "init_ms": init_ms,
            "first_invoke_ms": first}


#: the name the runtime gives the node that runs a delegate's partition (XNNPACK's here)
DELEGATE_NODE = "DELEGATE"


def _node_list(interp: Any) -> list:
    """The interpreter's nodes of subgraph 0 as ``(op_name, inputs, outputs)``, read without ``_get_ops_details``.

    ``Interpreter._get_ops_details`` (private, in tflite-runtime 2.14 and ai-edge-litert alike) also
    looks up every tensor's dtype; the wrapper's node calls are all this needs.

    Raises:
        AttributeError: the runtime's Interpreter has no node listing.
    """
    wrapper = interp._interpreter  # noqa: SLF001 - the only place the node list is exposed
    nodes = []
    for i in range(wrapper.NumNodes()):
        nodes.append((str(wrapper.NodeName(i)), [int(t) for t in wrapper.NodeInputs(i)],
                      [int(t) for t in wrapper.NodeOutputs(i)]))
    return nodes


def _partition_members(nodes: list, producer: dict, delegate: tuple) -> set:
    """The model's nodes a delegate node replaced: walk back from its outputs to its inputs.

    A partition's inputs are the tensors it reads from outside (graph inputs, outputs of builtin-run
    nodes, constants), so every producer met before reaching one of them lies inside the partition.
    """
    boundary = set(delegate[1])
    members: set = set()
    stack = list(delegate[2])
    while stack:
        tensor = stack.pop()
        if tensor < 0 or tensor in boundary:
            continue
        node = producer.get(tensor)
        if node is None or node in members:
            continue
        members.add(node)
        stack.extend(nodes[node][1])
    return members


def op_delegation(interp: Any) -> dict:
    """How many of the model's operators a delegate (XNNPACK) took and which ran on the builtin kernels.

    When a delegate is applied (at ``allocate_tensors``), the runtime keeps the model's nodes and
    appends one ``DELEGATE`` node per partition it took; the execution plan then runs the delegate
    nodes instead of their members. The members are found from each delegate node's input and output
    tensors. Subgraph 0 only (the graph the runner times).

    Returns:
        ``{"total", "delegated", "partitions", "builtin": {op name: count}}``, or ``{"unavailable":
        reason}`` where the runtime does not list its nodes.
    """
    try:
        nodes = _node_list(interp)
    except Exception as exc:  # an old or future runtime without the wrapper's node calls
        return {"unavailable": "the runtime does not list its nodes (" + _first_line(exc) + ")"}
    model_nodes = [i for i, n in enumerate(nodes) if n[0] != DELEGATE_NODE]
    producer = {}
    for i in model_nodes:
        for tensor in nodes[i][2]:
            producer[tensor] = i
    delegated: set = set()
    partitions = [n for n in nodes if n[0] == DELEGATE_NODE]
    for delegate in partitions:
        delegated |= _partition_members(nodes, producer, delegate)
    builtin: dict = {}
    for i in model_nodes:
        if i not in delegated:
            builtin[nodes[i][0]] = builtin.get(nodes[i][0], 0) + 1
    return {"total": len(model_nodes), "delegated": len(delegated), "partitions": len(partitions),
            "builtin": dict(sorted(builtin.items(), key=lambda kv: (-kv[1], kv[0])))}


def _plain_name(tensor_name: str) -> str:
    """``serving_default_img:0`` -> ``img``: a tensor's name without the converter's prefix and suffix."""
    name = re.sub(r":\d+$", "", str(tensor_name))
    return name[len("serving_default_"):] if name.startswith("serving_default_") else name


def _fallback_names(details: list, prefix: str) -> list:
    """Names from the tensors themselves (models without a signature), else ``output_0``, ``output_1`` ..."""
    names = [_plain_name(d["name"]) for d in details]
    if len(set(names)) == len(names) and not any(n.startswith("StatefulPartitionedCall") for n in names):
        return names
    return [prefix + "_" + str(i) for i in range(len(details))]


def signature_io(interp: Any) -> tuple:
    """Tensor index -> signature name, for inputs and for outputs (two empty dicts without a signature).

    The converter orders a model's input and output tensors by their signature names (the Keras input
    and output names), not in the Keras order, so the runner feeds and reads them by name. The
    signature runner's details are public in tflite-runtime 2.14 and ai-edge-litert alike.
    """
    try:
        signatures = interp.get_signature_list()
        if not signatures:
            return {}, {}
        sig = interp.get_signature_runner(next(iter(signatures)))
        ins = {int(d["index"]): str(name) for name, d in sig.get_input_details().items()}
        outs = {int(d["index"]): str(name) for name, d in sig.get_output_details().items()}
        return ins, outs
    except (AttributeError, KeyError, RuntimeError, TypeError, ValueError):
        return {}, {}


def io_names(interp: Any, inputs: list, outputs: list) -> tuple:
    """The names of ``inputs`` and ``outputs`` (interpreter details), in their order: signature names where known."""
    ins, outs = signature_io(interp)
    in_names = [ins.get(int(d["index"])) for d in inputs]
    out_names = [outs.get(int(d["index"])) for d in outputs]
    if not all(in_names) or len(set(in_names)) != len(in_names):
        in_names = _fallback_names(inputs, "input")
    if not all(out_names) or len(set(out_names)) != len(out_names):
        out_names = _fallback_names(outputs, "output")
    return in_names, out_names


#: ops that keep state in variable tensors from one invoke to the next (TFLite's fused recurrent ops, resource
#: variables): a stateless Keras model converted to them must have its variables reset between samples
STATEFUL_OPS = ("UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "UNIDIRECTIONAL_SEQUENCE_RNN",
                "BIDIRECTIONAL_SEQUENCE_RNN", "VAR_HANDLE", "ASSIGN_VARIABLE", "READ_VARIABLE")


def has_state(interp: Any) -> bool:
    """Whether the model keeps state between invokes (one of :data:`STATEFUL_OPS`; measured: a fused LSTM scored
    row by row without a reset drifts from the Keras model's outputs)."""
    try:
        names = [n[0] for n in _node_list(interp)]
    except (AttributeError, RuntimeError, ValueError):
        try:
            names = [str(o.get("op_name")) for o in interp._get_ops_details()]  # noqa: SLF001
        except (AttributeError, RuntimeError, ValueError):
            return False
    return any(n in STATEFUL_OPS for n in names)


def reset_state(interp: Any) -> None:
    """Reset the model's variable tensors (the fused LSTM's state) to their initial values (zeros)."""
    interp.reset_all_variables()


class InterpreterEngine:
    """The classic ``Interpreter`` API: set_tensor, invoke, get_tensor; inputs and outputs named by signature.

    A stateful model (:func:`has_state`) has its variables reset before every run of :func:`run_batch`, so each
    sample is scored as the stateless Keras model scores it.
    """

    api = "interpreter"

    def __init__(self, interp: Any) -> None:
        self.interp = interp
        self.inputs = interp.get_input_details()
        self.outputs = interp.get_output_details()
        self.input_names, self.output_names = io_names(interp, self.inputs, self.outputs)
        self.stateful = has_state(interp)

    def reset(self) -> None:
        """Reset the variable tensors (see :func:`reset_state`)."""
        reset_state(self.interp)

    def set_inputs(self, values: list) -> None:
        """Set every input; ``values`` in the order of ``self.inputs``."""
        for d, v in zip(self.inputs, values):
            self.interp.set_tensor(d["index"], v)

    def run(self) -> None:
        self.interp.invoke()

    def output(self, i: int = 0) -> Any:
        """Output ``i`` (in the order of ``self.outputs``) of the last run."""
        return self.interp.get_tensor(self.outputs[i]["index"])


class CompiledEngine:
    """ai-edge-litert's ``CompiledModel`` on its CPU accelerator: buffers made once, ``run_by_index``."""

    api = "compiled"
    #: CompiledModel has no call that resets variable tensors; run_batch refuses a stateful model on it
    stateful = False

    def __init__(self, model: Any, inputs: list, outputs: list, input_names: list, output_names: list) -> None:
        self.model = model
        self.inputs = inputs  # Interpreter-style details (name, dtype, shape, quantization), in buffer order
        self.outputs = outputs
        self.input_names = input_names  # the signature's names, in the same order
        self.output_names = output_names
        self.in_buffers = model.create_input_buffers(0)
        self.out_buffers = model.create_output_buffers(0)

    def set_inputs(self, values: list) -> None:
        """Write every input buffer; ``values`` in the order of ``self.inputs``."""
        for buf, v in zip(self.in_buffers, values):
            buf.write(v)

    def run(self) -> None:
        self.model.run_by_index(0, self.in_buffers, self.out_buffers)

    def output(self, i: int = 0) -> Any:
        """Output ``i`` (in the order of ``self.outputs``) of the last run."""
        import numpy as np

        d = self.outputs[i]
        shape = tuple(int(x) for x in d["shape"])
        return self.out_buffers[i].read(int(np.prod(shape)), np.dtype(d["dtype"])).reshape(shape)


def _ordered_details(signature_details: dict, interp_details: list) -> tuple:
    """The Interpreter's details (with quantization) in the CompiledModel signature's order, by tensor name.

    Returns:
        ``(details, signature names)``, both in the signature's (buffer) order.
    """
    by_name = {d["name"]: d for d in interp_details}
    ordered = []
    for i, (key, detail) in enumerate(signature_details.items()):
        match = by_name.get(detail.get("name")) or (interp_details[i] if i < len(interp_details) else None)
        if match is None:
            raise load_failed("cannot match the CompiledModel's tensor " + str(key) + " with the model's tensors")
        match = dict(match)
        match["shape"] = [int(x) for x in detail.get("shape", match["shape"])]
        ordered.append(match)
    return ordered, [str(k) for k in signature_details]


def make_compiled(runtime: Runtime, model_path: str, threads: int, input_shape: list | None) -> dict:
    """Load the model with ai-edge-litert's CompiledModel (CPU accelerator) and run it once.

    Returns:
        ``{"engine", "resolver", "reason", "init_ms", "first_invoke_ms", "fully_accelerated"}``.

    Raises:
        RunnerError: the runtime has no CompiledModel, a dynamic shape, or the model cannot be loaded or run.
    """
    import numpy as np

    if runtime.name != "ai_edge_litert":
        raise RunnerError("no_runtime", "--api compiled needs ai-edge-litert's CompiledModel; this machine has "
                          + runtime.name + " " + runtime.version, EXIT_NO_RUNTIME,
                          "pip install 'ai-edge-litert>=2.1', or use --api interpreter")
    try:
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.cpu_options import CpuOptions
        from ai_edge_litert.hardware_accelerator import HardwareAccelerator
        from ai_edge_litert.options import Options
    except Exception as exc:
        raise RunnerError("no_runtime", "ai-edge-litert " + runtime.version + " has no CompiledModel API ("
                          + _first_line(exc) + ")", EXIT_NO_RUNTIME, "pip install 'ai-edge-litert>=2.1'")
    if input_shape is not None:
        raise bad_argument("--input-shape works with --api interpreter only")
    plain = runtime.interpreter_cls(model_path=model_path)  # tensor details with quantization; not allocated
    check_static_shapes(plain, None)
    t0 = time.perf_counter()
    try:
        model = CompiledModel.from_file(model_path, options=Options(
            hardware_accelerators=HardwareAccelerator.CPU, cpu_options=CpuOptions(num_threads=threads)))
        signature = list(model.get_signature_list())[0]
        inputs, input_names = _ordered_details(model.get_input_tensor_details(signature), plain.get_input_details())
        outputs, output_names = _ordered_details(model.get_output_tensor_details(signature),
                                                 plain.get_output_details())
        engine = CompiledEngine(model, inputs, outputs, input_names, output_names)
        plain.allocate_tensors()
        engine.stateful = has_state(plain)
    except (RuntimeError, ValueError, IndexError) as exc:
        raise load_failed("LiteRT's CompiledModel cannot load the model: " + _first_line(exc)
                          + " (try --api interpreter)")
    init_ms = (time.perf_counter() - t0) * 1000.0
    engine.set_inputs([np.zeros(d["shape"], dtype=d["dtype"]) for d in engine.inputs])
    t0 = time.perf_counter()
    try:
        engine.run()
    except (RuntimeError, ValueError) as exc:
        raise load_failed("LiteRT's CompiledModel cannot run the model: " + _first_line(exc)
                          + " (try --api interpreter)")
    first = (time.perf_counter() - t0) * 1000.0
    return {"engine": engine, "resolver": "litert_cpu", "reason": None, "init_ms": init_ms,
            "first_invoke_ms": first, "fully_accelerated": bool(model.is_fully_accelerated())}


def random_input(detail: dict, rng: Any) -> Any:
    """Random values of the input's dtype and shape (floats in [0, 1), integers in the int8/uint8 range).

    An integer input without quantization (token ids, indices: int32/int64) gets ids 0 and 1, valid for any
    Embedding, never negative ids (out of range for TFLite's GATHER).
    """
    import numpy as np

    dtype = np.dtype(detail["dtype"])
    shape = tuple(int(s) for s in detail["shape"])
    if dtype.kind == "f":
        return rng.random(shape).astype(dtype)
    if dtype.name in ("int32", "int64") and not (detail.get("quantization") or (0.0, 0))[0]:
        return rng.integers(0, 2, size=shape).astype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        low, high = max(int(info.min), -128), min(int(info.max), 255 if dtype.kind == "u" else 127)
        return rng.integers(low, high + 1, size=shape).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) > 0.5
    raise bad_argument("cannot generate random inputs of dtype " + str(dtype) + " for input " + str(detail["name"]))


def quantize(x: Any, detail: dict) -> Any:
    """Float samples -> the input tensor's dtype (int8/uint8 with its scale and zero point).

    Integer samples for an integer input without quantization (token ids) are cast as they are, never
    through float.
    """
    import numpy as np

    dtype = np.dtype(detail["dtype"])
    if x.dtype == dtype:
        return x  # already in the model's dtype (e.g. raw uint8 images for a uint8 model)
    if x.dtype.kind in "iu" and dtype.kind in "iu" and not (detail.get("quantization") or (0.0, 0))[0]:
        return x.astype(dtype)
    x = x.astype(np.float32)
    if dtype.kind == "f":
        return x.astype(dtype)
    scale, zero = detail["quantization"]
    if not scale:
        return x.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def dequantize(y: Any, detail: dict) -> Any:
    """An output tensor -> float32 (integer outputs through their scale and zero point)."""
    import numpy as np

    if np.dtype(detail["dtype"]).kind == "f":
        return y.astype(np.float32)
    scale, zero = detail["quantization"]
    if not scale:
        return y.astype(np.float32)
    return (y.astype(np.float32) - zero) * scale


def summarize(samples_ms: list) -> dict:
    import numpy as np

    a = np.asarray(samples_ms, dtype=np.float64)
    return {"mean": float(a.mean()), "median": float(np.median(a)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "min": float(a.min()), "max": float(a.max()),
            "std": float(a.std())}


def stability(samples_ms: list, chunks: int = 5) -> dict | None:
    """Medians of ``chunks`` consecutive slices of the samples and their spread (None if too few samples).

    ``drift_pct`` = (max - min) of the chunk medians / overall median x 100: how much the machine's
    speed moved while measuring.
    """
    import numpy as np

    a = np.asarray(samples_ms, dtype=np.float64)
    if len(a) < 4 * chunks:
        return None
    medians = [float(np.median(c)) for c in np.array_split(a, chunks)]
    overall = float(np.median(a))
    drift = (max(medians) - min(medians)) / overall * 100.0 if overall > 0 else 0.0
    return {"chunks": chunks, "chunk_medians": medians, "drift_pct": drift}


def paired_ratio(engine: Any, feeds: list, reference: Any, ref_feeds: list, blocks: int, per_block: int) -> dict:
    """Time ``engine`` against ``reference`` in alternating blocks in this one process.

    Each block times ``per_block`` runs of one model then of the other (the order swaps every block);
    the ratio of the two block medians is taken per block. Both models see the same moments of the
    machine, so the ratio stays meaningful when the machine's speed drifts by tens of % between
    separate measurements.

    Returns:
        ``{"blocks", "runs_per_block", "ratio_median", "ratio_q1", "ratio_q3", "median_ms", "reference_median_ms"}``.
    """
    import numpy as np

    def block(eng: Any, values: list) -> float:
        times = []
        for _ in range(per_block):
            eng.set_inputs(values)
            t0 = time.perf_counter()
            eng.run()
            times.append((time.perf_counter() - t0) * 1000.0)
        return float(np.median(times))

    mine, theirs = [], []
    for i in range(blocks):
        if i % 2:
            theirs.append(block(reference, ref_feeds))
            mine.append(block(engine, feeds))
        else:
            mine.append(block(engine, feeds))
            theirs.append(block(reference, ref_feeds))
    ratios = np.asarray(mine) / np.asarray(theirs)
    return {"blocks": blocks, "runs_per_block": per_block, "ratio_median": float(np.median(ratios)),
            "ratio_q1": float(np.percentile(ratios, 25)), "ratio_q3": float(np.percentile(ratios, 75)),
            "median_ms": float(np.median(mine)), "reference_median_ms": float(np.median(theirs))}


def _check_samples(batch: Any, detail: dict, what: str) -> Any:
    """``batch`` if it holds samples shaped like the input ``detail`` (without its batch axis).

    Raises:
        RunnerError: (bad_argument) samples of the wrong shape or not numbers.
    """
    sample = tuple(int(s) for s in detail["shape"][1:])
    if batch.ndim != len(sample) + 1 or tuple(batch.shape[1:]) != sample:
        raise bad_argument(what + " holds an array of shape " + str(tuple(batch.shape))
                           + " but the model takes samples of shape " + str(sample) + " (array shape (N,) + "
                           + str(sample) + " expected)")
    if batch.dtype.kind not in "fiub":
        raise bad_argument(what + " has dtype " + str(batch.dtype) + "; give numbers")
    return batch


def _npz_key(keys: list, name: str, detail: dict, single: bool) -> str | None:
    """The archive's array for the input ``name``: ``name``, ``x_<name>``, its tensor name, or ``x`` (one input)."""
    for key in (name, "x_" + name, str(detail.get("name", "")), _plain_name(detail.get("name", ""))):
        if key in keys:
            return key
    if single and "x" in keys:
        return "x"
    if single and len(keys) == 1:
        return keys[0]
    return None


def load_inputs(path: str, details: list, names: list) -> list:
    """Read ``--input``: one array per model input, in the order of ``details``.

    A ``.npy`` file feeds a single-input model; a ``.npz`` archive names its arrays after the
    inputs (the signature name ``img``, or ``x_img`` as verify.npz stores them, or the tensor name;
    ``x`` for a single input). Every array holds the same number of samples.

    Raises:
        RunnerError: (bad_argument) unreadable file, an input without its array, wrong shapes or counts.
    """
    import numpy as np

    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise bad_argument("cannot read --input " + path + " as a .npy array or .npz archive: " + _first_line(exc))
    if isinstance(loaded, np.ndarray):
        if len(details) != 1:
            raise bad_argument("--input " + path + " is one .npy array but the model has " + str(len(details))
                               + " inputs (" + ", ".join(names) + "); give a .npz archive with one array per "
                               "input, named after it (np.savez(path, " + ", ".join(n + "=..." for n in names) + "))")
        return [_check_samples(loaded, details[0], "--input " + path)]
    try:
        keys = list(loaded.files)
        arrays = []
        for d, name in zip(details, names):
            key = _npz_key(keys, name, d, len(details) == 1)
            if key is None:
                raise bad_argument("--input " + path + " has no array for the model's input " + name + " (it holds "
                                   + ", ".join(keys) + "); name the arrays after the inputs: " + ", ".join(names))
            arrays.append(_check_samples(loaded[key], d, "--input " + path + " array " + key))
    finally:
        loaded.close()
    counts = sorted({len(a) for a in arrays})
    if len(counts) > 1:
        raise bad_argument("--input " + path + " holds different numbers of samples per input ("
                           + ", ".join(n + ": " + str(len(a)) for n, a in zip(names, arrays)) + "); give every input "
                           "the same samples")
    return arrays


def run_batch(engine: Any, batch: Any) -> list:
    """Run every sample (one run per model batch); return the float32 outputs, one array per model output.

    Args:
        engine: An engine (its ``inputs`` and ``outputs`` details).
        batch: One array per model input (in the order of ``engine.inputs``); a bare array for a
            single-input model.

    Returns:
        One float32 array per output, in the order of ``engine.outputs``.
    """
    import numpy as np

    batches = list(batch) if isinstance(batch, (list, tuple)) else [batch]
    per = max(int(engine.inputs[0]["shape"][0]), 1)
    reset = getattr(engine, "reset", None) if getattr(engine, "stateful", False) else None
    if getattr(engine, "stateful", False) and reset is None:
        raise bad_argument("the model keeps state between runs (a fused LSTM) and --api " + engine.api
                           + " cannot reset it between samples; use --api interpreter")
    total = len(batches[0]) if batches else 0
    results: list = [[] for _ in engine.outputs]
    for start in range(0, total, per):
        chunks = [b[start:start + per] for b in batches]
        n = len(chunks[0])
        if n < per:  # pad the last model batch; padded rows are dropped below
            chunks = [np.concatenate([c, np.zeros((per - n,) + c.shape[1:], dtype=c.dtype)]) for c in chunks]
        if reset is not None:
            reset()
        engine.set_inputs([quantize(c, d) for c, d in zip(chunks, engine.inputs)])
        engine.run()
        for i, d in enumerate(engine.outputs):
            results[i].append(dequantize(engine.output(i), d)[:n])
    return [np.concatenate(r) if r else np.zeros((0,), dtype=np.float32) for r in results]


def _checksum(a: Any) -> str:
    """sha256 of float32 values rounded to 4 decimals (stable across runs; -0.0 counts as 0.0)."""
    import numpy as np

    rounded = (np.round(np.asarray(a, dtype=np.float32), 4) + np.float32(0.0)).astype(np.float32)
    return hashlib.sha256(np.ascontiguousarray(rounded).tobytes()).hexdigest()


def output_summary(outputs: Any) -> dict:
    """One output's count, a stable checksum (sha256 of float32 outputs rounded to 4 decimals), argmax and sum.

    ``argmax`` (the index of the largest value of each sample) is a class only for a classifier; it is
    kept for single-output models, whose consumers read it. What to compare is the host's decision.
    """
    import numpy as np

    a = np.asarray(outputs, dtype=np.float32)
    flat = a.reshape(len(a), -1) if len(a) else a.reshape(0, 1)
    return {"count": len(a), "checksum": _checksum(a),
            "argmax": [int(i) for i in np.argmax(flat, axis=-1)] if len(a) else [],
            "sum": float(a.astype(np.float64).sum())}


def encode_values(a: Any) -> str:
    """float32 values, little-endian, C order, as base64 (exact and a third the size of JSON numbers)."""
    import base64

    import numpy as np

    return base64.b64encode(np.ascontiguousarray(a, dtype="<f4").tobytes()).decode("ascii")


def outputs_report(names: list, arrays: list, values: bool = False) -> dict:
    """Every output of the batch, by name; one output keeps the single-output keys at the top.

    Returns:
        ``{"count", "checksum", "sum", "names", "by_name": {name: {"shape", "count", "checksum", "sum"
        [, "float32_base64"]}}}`` plus ``argmax`` for a single output. ``checksum`` is the single output's,
        or for several the sha256 of ``name:checksum`` lines in name order.
    """
    import numpy as np

    by_name = {}
    for name, a in zip(names, arrays):
        a = np.asarray(a, dtype=np.float32)
        entry: dict = {"shape": [int(s) for s in a.shape], "count": len(a), "checksum": _checksum(a),
                       "sum": float(a.astype(np.float64).sum())}
        if values:
            entry["float32_base64"] = encode_values(a)
        by_name[name] = entry
    if len(arrays) == 1:
        out = output_summary(arrays[0])
    else:
        lines = "".join(n + ":" + by_name[n]["checksum"] + "\n" for n in sorted(by_name))
        out = {"count": len(arrays[0]) if arrays else 0, "checksum": hashlib.sha256(lines.encode()).hexdigest(),
               "sum": float(sum(e["sum"] for e in by_name.values()))}
    out["names"] = list(names)
    out["by_name"] = by_name
    return out


#: ``cpu implementer:cpu part`` of /proc/cpuinfo -> core name (Raspberry Pi and common Android cores)
ARM_CORES = {"0x41:0xd03": "ARM Cortex-A53", "0x41:0xd04": "ARM Cortex-A35", "0x41:0xd05": "ARM Cortex-A55",
             "0x41:0xd07": "ARM Cortex-A57", "0x41:0xd08": "ARM Cortex-A72", "0x41:0xd09": "ARM Cortex-A73",
             "0x41:0xd0a": "ARM Cortex-A75", "0x41:0xd0b": "ARM Cortex-A76", "0x41:0xd0d": "ARM Cortex-A77",
             "0x41:0xd41": "ARM Cortex-A78", "0x41:0xd44": "ARM Cortex-X1", "0x41:0xd46": "ARM Cortex-A510",
             "0x41:0xd47": "ARM Cortex-A710", "0x41:0xd4d": "ARM Cortex-A715", "0x41:0xd0c": "ARM Neoverse-N1",
             "0x41:0xd40": "ARM Neoverse-V1", "0x41:0xd49": "ARM Neoverse-N2", "0x61:0x022": "Apple M1",
             "0x41:0xb76": "ARM1176", "0x41:0xc07": "ARM Cortex-A7"}
#: the label of latency figures measured on an emulated CPU
EMULATED_LABEL = "emulated — not representative of hardware"
_X86 = ("x86_64", "amd64", "i386", "i486", "i586", "i686", "x86")


def _read(path: str, limit: int = 1 << 20) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except (OSError, ValueError):
        return ""


def _cpuinfo_fields(text: str) -> dict:
    """The first value of every key of /proc/cpuinfo (lower-case keys)."""
    fields: dict = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def cpu_model(cpuinfo: str | None = None) -> str | None:
    """The CPU as /proc/cpuinfo names it: the board (Raspberry Pi's ``Model``), the core, or ``model name``."""
    f = _cpuinfo_fields(_read("/proc/cpuinfo") if cpuinfo is None else cpuinfo)
    names = []
    if f.get("model") and not f["model"].isdigit():  # Raspberry Pi: "Raspberry Pi 4 Model B Rev 1.4"
        names.append(f["model"])
    core = ARM_CORES.get(f.get("cpu implementer", "").lower() + ":" + f.get("cpu part", "").lower())
    if core:
        names.append(core)
    for key in ("model name", "hardware", "processor", "cpu model", "uarch"):
        value = f.get(key)
        if value and not value.isdigit() and value not in names:
            names.append(value)
            break
    return ", ".join(names) or None


#: /proc/cpuinfo flags that choose TFLite's and XNNPACK's kernels (float FMA, int8 dot products, fp16)
SIMD_FEATURES = ("sse4_1", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
                 "avx512_bf16", "avx512_fp16", "amx_int8", "neon", "asimd", "asimddp", "asimdhp", "fphp", "i8mm",
                 "bf16", "sve", "sve2")


def cpu_features(cpuinfo: str | None = None) -> list:
    """The SIMD features of /proc/cpuinfo that pick kernels (x86 ``flags``, ARM ``Features``), in a fixed order.

    Int8 and float32 kernels use different instructions (an int8 convolution gains from VNNI or dot
    product instructions, float32 from FMA), so their speed ratio differs from CPU to CPU; recording
    the features makes two measurements comparable.
    """
    f = _cpuinfo_fields(_read("/proc/cpuinfo") if cpuinfo is None else cpuinfo)
    have = set((f.get("flags", "") + " " + f.get("features", "")).split())
    return [name for name in SIMD_FEATURES if name in have]


def _arch_family(name: str) -> str | None:
    name = name.lower()
    if name in _X86:
        return "x86"
    if name.startswith(("aarch64", "arm")):
        return "arm"
    if name.startswith("riscv"):
        return "riscv"
    return None


def detect_emulation(machine: str | None = None, cpuinfo: str | None = None, maps: str | None = None) -> dict:
    """Whether this process runs on an emulated CPU (qemu-user through binfmt_misc), with the evidence.

    Two independent signals, either is enough:

    * the process's real memory map, read through ``/proc/PID/task/PID/maps`` (qemu-user rewrites
      ``/proc/self/maps`` to show the guest's mappings, but not this path), names a qemu binary;
    * ``/proc/cpuinfo`` comes from the host kernel and describes another architecture than the one
      Python runs as (x86 ``vendor_id``/``flags`` lines while ``platform.machine()`` is aarch64).
      Bind-mounting a Raspberry Pi's cpuinfo over it defeats this one, not the first.

    Returns:
        ``{"emulated": bool, "emulator": "qemu-user" | None, "evidence": [...]}``.
    """
    machine = platform.machine() if machine is None else machine
    evidence = []
    emulator = None
    if maps is None:
        pid = os.getpid()
        maps = _read("/proc/" + str(pid) + "/task/" + str(pid) + "/maps", 4 << 20)
    for line in maps.splitlines():
        parts = line.split(None, 5)
        path = parts[5].strip() if len(parts) == 6 else ""
        if "qemu-" in os.path.basename(path) or "-binfmt" in os.path.basename(path):
            evidence.append("the process's memory map holds " + path)
            emulator = "qemu-user"
            break
    fields = _cpuinfo_fields(_read("/proc/cpuinfo") if cpuinfo is None else cpuinfo)
    if fields:
        if "vendor_id" in fields or ("flags" in fields and "cpu implementer" not in fields):
            cpu_family = "x86"
        elif "cpu implementer" in fields or "features" in fields:
            cpu_family = "arm"
        elif "isa" in fields and fields["isa"].startswith("rv"):
            cpu_family = "riscv"
        else:
            cpu_family = None
        mine = _arch_family(machine)
        if cpu_family and mine and cpu_family != mine:
            evidence.append("/proc/cpuinfo describes an " + cpu_family + " CPU ("
                            + (fields.get("model name") or fields.get("vendor_id") or "?") + ") but Python runs as "
                            + machine)
            emulator = emulator or "qemu-user"
    out = {"emulated": bool(evidence), "emulator": emulator, "evidence": evidence}
    if evidence and os.environ.get("QEMU_CPU"):
        out["emulated_cpu"] = os.environ["QEMU_CPU"]  # the CPU model qemu-user was told to emulate
    return out


def describe(runtime: Runtime | None = None) -> dict:
    """Where this runs: host, machine, CPU, whether it is emulated, Python, numpy and the TFLite runtime."""
    out: dict[str, Any] = {"host": platform.node(), "machine": platform.machine(), "system": platform.system(),
           "python": platform.python_version(), "executable": sys.executable}
    try:
        out["cpu_model"] = cpu_model()
        out["cpu_features"] = cpu_features()
        emulation = detect_emulation()
    except Exception as exc:
        out["cpu_model"] = None
        out["cpu_features"] = None
        emulation = {"emulated": None, "emulator": None, "evidence": ["not checked: " + _first_line(exc)]}
    out["emulated"] = emulation["emulated"]
    out["emulation"] = emulation
    if emulation["emulated"]:
        out["latency_label"] = EMULATED_LABEL
        # under qemu-user /proc/cpuinfo is the host's: say so rather than pass it off as the device's CPU
        out["cpu_model"] = ("emulated " + platform.machine() + " " + (emulation.get("emulated_cpu") or "CPU") + " ("
                            + (emulation["emulator"] or "emulator") + ") on the host's " + (out["cpu_model"] or "CPU"))
        out["cpu_features"] = None  # the host's flags, not the emulated CPU's
    try:
        import numpy

        out["numpy"] = numpy.__version__
    except ImportError:
        out["numpy"] = None
    if runtime is not None:
        out["runtime"] = {"name": runtime.name, "version": runtime.version}
    return out


def parse_shape(text: str | None) -> list | None:
    if not text:
        return None
    try:
        shape = [int(s) for s in text.replace("x", ",").split(",") if s.strip()]
    except ValueError:
        raise bad_argument("--input-shape must be comma-separated integers such as 1,96,96,3, not " + repr(text))
    if not shape or any(s < 1 for s in shape):
        raise bad_argument("--input-shape dimensions must be >= 1, got " + repr(text))
    return shape


def make_engine(runtime: Runtime, model_path: str, args: argparse.Namespace, shape: list | None) -> dict:
    """Load ``model_path`` through the API ``args.api`` names; the result has its ``engine``."""
    if args.api == "compiled":
        return make_compiled(runtime, model_path, args.threads, shape)
    made = make_interpreter(runtime, model_path, args.threads, args.resolver, shape)
    made["engine"] = InterpreterEngine(made["interpreter"])
    made["ops"] = op_delegation(made["interpreter"])
    return made


def _describe_device() -> dict:
    """The ``--describe`` result: this machine and its runtime, or why no runtime is importable."""
    try:
        return describe(import_runtime())
    except RunnerError as exc:  # describing a device without a runtime is still useful
        out = describe()
        out.update(runtime=None, runtime_error=str(exc), fix=exc.fix)
        return out


def _check_counts(args: argparse.Namespace) -> None:
    """Refuse a missing model, out-of-range --threads, --runs, --min-seconds or --warmup, and --return-outputs alone."""
    if not args.model:
        raise bad_argument("give the .tflite model to run (or --describe)")
    if args.threads < 1:
        raise bad_argument("--threads must be >= 1, got " + str(args.threads))
    if args.runs < 1:
        raise bad_argument("--runs must be >= 1, got " + str(args.runs))
    if args.min_seconds < 0:
        raise bad_argument("--min-seconds must be >= 0, got " + str(args.min_seconds))
    if args.warmup < 0:
        raise bad_argument("--warmup must be >= 0, got " + str(args.warmup))
    if args.return_outputs and not args.input:
        raise bad_argument("--return-outputs returns the outputs of the --input batch; give --input too")


def _input_batch(path: str | None, engine: Any) -> list | None:
    """The ``--input`` batch, one array per model input, or None without ``--input``."""
    if not path:
        return None
    return load_inputs(path, engine.inputs, engine.input_names)


def _warm_up(engine: Any, feeds: list, count: int) -> None:
    """Run ``engine`` ``count`` times on ``feeds``, untimed."""
    for _ in range(count):
        engine.set_inputs(feeds)
        engine.run()


def _time_runs(engine: Any, feeds: list, runs: int, min_seconds: float) -> list[float]:
    """Time ``runs`` invocations, and more until ``min_seconds`` have passed (at most MAX_RUNS)."""
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < runs or (time.perf_counter() - started < min_seconds
                                  and len(samples) < MAX_RUNS):
        engine.set_inputs(feeds)
        t0 = time.perf_counter()
        engine.run()
        samples.append((time.perf_counter() - t0) * 1000.0)
    return samples


def _paired_run(runtime: Runtime, args: argparse.Namespace, shape: list | None, *, engine: Any, feeds: list,
                rng: Any) -> dict | None:
    """With ``--paired``, load the reference model and time it against ``engine``; else None."""
    if not args.paired:
        return None
    if not os.path.isfile(args.paired):
        raise load_failed("--paired reference model not found: " + args.paired)
    ref_engine = make_engine(runtime, args.paired, args, shape)["engine"]
    ref_feeds = [random_input(d, rng) for d in ref_engine.inputs]
    _warm_up(ref_engine, ref_feeds, args.warmup)
    paired = paired_ratio(engine, feeds, ref_engine, ref_feeds, PAIRED_BLOCKS,
                          max(5, args.runs // PAIRED_BLOCKS))
    paired["reference"] = os.path.basename(args.paired)
    return paired


def _batch_outputs(engine: Any, batch: list | None, save_path: str | None, values: bool) -> dict | None:
    """Run the ``--input`` batch and report every output (saved to ``save_path`` if given).

    One output is saved as a .npy array; several as a .npz archive keyed by output name.
    """
    if batch is None:
        return None
    import numpy as np

    result = run_batch(engine, batch)
    if save_path:
        if len(result) == 1:
            np.save(save_path, result[0])
        else:
            with open(save_path, "wb") as f:  # a file object: np.savez would append .npz to a path
                np.savez(f, **dict(zip(engine.output_names, result)))
    return outputs_report(engine.output_names, result, values)


def _check_save_path(path: str | None, engine: Any) -> None:
    """Several outputs are saved as one .npz archive; refuse a .npy name before anything runs."""
    if path and len(engine.outputs) > 1 and not path.endswith(".npz"):
        raise bad_argument("--save-outputs " + path + ": the model has " + str(len(engine.outputs)) + " outputs ("
                           + ", ".join(engine.output_names) + "), saved as one .npz archive keyed by output name; "
                           "give a path ending in .npz")


def _io_facts(engine: Any) -> dict:
    """``input`` (the first, as before), ``inputs`` (every one: name, shape, dtype) and ``output_names``."""
    import numpy as np

    inputs = [{"name": n, "shape": [int(s) for s in d["shape"]], "dtype": str(np.dtype(d["dtype"]))}
              for n, d in zip(engine.input_names, engine.inputs)]
    return {"input": {k: inputs[0][k] for k in ("shape", "dtype")}, "inputs": inputs,
            "output_names": list(engine.output_names), "state_reset_between_samples": bool(engine.stateful)}


def _run_notes(paired: dict | None, made: dict) -> list:
    """Statements about what the peak RSS includes."""
    notes = []
    if paired is not None:
        notes.append("peak RSS includes the --paired reference model, loaded in the same process")
    if made["reason"]:
        notes.append("the default resolver failed, so the builtin one ran; peak RSS includes the failed attempt")
    return notes


def run(args: argparse.Namespace) -> dict:
    """Measure the model as ``args`` say; return the JSON-able result."""
    if args.describe:
        return _describe_device()
    _check_counts(args)
    if args.api == "compiled" and args.resolver != "auto":
        raise bad_argument("--resolver " + args.resolver + " applies to --api interpreter only")
    shape = parse_shape(args.input_shape)
    if not os.path.isfile(args.model):
        raise load_failed("model file not found: " + args.model)
    baseline_rss = rss_bytes()
    runtime = import_runtime()
    import numpy as np

    runtime_rss = rss_bytes()
    try:
        made = make_engine(runtime, args.model, args, shape)
    except RunnerError as exc:  # say which runtime refused the model (an old one lacks newer op versions)
        exc.details.setdefault("runtime", {"name": runtime.name, "version": runtime.version})
        raise
    engine = made["engine"]
    details = engine.inputs
    batch = _input_batch(args.input, engine)
    _check_save_path(args.save_outputs, engine)
    rng = np.random.default_rng(0)
    feeds = [random_input(d, rng) for d in details]
    _warm_up(engine, feeds, args.warmup)
    samples = _time_runs(engine, feeds, args.runs, args.min_seconds)
    paired = _paired_run(runtime, args, shape, engine=engine, feeds=feeds, rng=rng)  # the reference is freed on return
    outputs = _batch_outputs(engine, batch, args.save_outputs, args.return_outputs)
    peak = rss_bytes()
    out = describe(runtime)
    out.update({
        "model": os.path.basename(args.model),
        "model_bytes": os.path.getsize(args.model),
        "api": engine.api,
        "resolver": made["resolver"],
        "delegate_fallback_reason": made["reason"],
        "fully_accelerated": made.get("fully_accelerated"),
        "ops": made.get("ops") or {"unavailable": "LiteRT's CompiledModel does not list its nodes"},
        "threads": args.threads,
        "init_ms": made["init_ms"],
        "first_invoke_ms": made["first_invoke_ms"],
        "runs": len(samples),
        "warmup": args.warmup,
        "min_seconds": args.min_seconds,
        "latency_ms": summarize(samples),
        "stability": stability(samples),
        "paired": paired,
        "samples_ms": samples,
        "baseline_rss_bytes": baseline_rss,
        "runtime_rss_bytes": runtime_rss,
        "peak_rss_bytes": peak,
        "model_rss_bytes": (peak - runtime_rss) if (peak is not None and runtime_rss is not None) else None,
        **_io_facts(engine),
        "outputs": outputs,
        "notes": _run_notes(paired, made),
    })
    return out


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(description="Time a .tflite model on this machine; print one JSON object.")
    p.add_argument("model", nargs="?", help="the .tflite file")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    p.add_argument("--runs", type=int, default=100, help="timed invocations (default 100)")
    p.add_argument("--min-seconds", type=float, default=0.0,
                   help="keep timing until this many seconds have passed too (default 0: exactly --runs)")
    p.add_argument("--api", choices=["interpreter", "compiled"], default="interpreter",
                   help="interpreter: the classic Interpreter API; compiled: ai-edge-litert's CompiledModel")
    p.add_argument("--warmup", type=int, default=10, help="untimed invocations first (default 10)")
    p.add_argument("--resolver", choices=["auto", "builtin"], default="auto",
                   help="auto: XNNPACK, falling back to the builtin kernels; builtin: builtin kernels only")
    p.add_argument("--paired", metavar="REF.tflite",
                   help="also time this reference model alternately with MODEL in one process; report the ratio")
    p.add_argument("--input", help="samples to run, their outputs reported: a .npy array (one input) or a .npz "
                   "archive with one array per input, named after it")
    p.add_argument("--input-shape", help="concrete shape of the first input for dynamic models, e.g. 1,96,96,3")
    p.add_argument("--save-outputs", help="write the batch's float32 outputs to this .npy (one output) or .npz "
                   "(several, keyed by output name)")
    p.add_argument("--return-outputs", action="store_true",
                   help="with --input: also put every output's float32 values (base64) in the JSON")
    p.add_argument("--describe", action="store_true", help="print host, Python and runtime, run nothing")
    return p


def main(argv: list | None = None) -> int:
    try:
        result = run(build_parser().parse_args(argv))
    except RunnerError as exc:
        print(json.dumps(exc.to_json()))
        return exc.code
    except MemoryError:
        print(json.dumps({"error": "out of memory while loading or running the model", "kind": "load_failed"}))
        return EXIT_LOAD_FAILED
    except Exception as exc:
        print(json.dumps({"error": type(exc).__name__ + ": " + _first_line(exc), "kind": "load_failed"}))
        return EXIT_LOAD_FAILED
    print(json.dumps(result))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
