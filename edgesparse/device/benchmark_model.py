"""Parsing the output of TFLite's ``benchmark_model`` and LiteRT's ``litert-benchmark``.

Both are turned into the runner's JSON shape (``latency_ms``, ``init_ms``, ...) so a device that
has no Python can still be profiled with the official binary, and so our own figures can be
checked against LiteRT's tool. Only what the tool printed is filled in; a statistic it does not
print (benchmark_model prints no median before its newer builds) stays ``None``.
"""

from __future__ import annotations

import re
from typing import Any

from edgesparse.errors import DeviceError

_NUM = r"([-+\d.eE]+)"
_COUNT = re.compile(r"count=(\d+) first=" + _NUM + r" curr=" + _NUM + r" min=" + _NUM + r" max=" + _NUM
                    + r" avg=" + _NUM + r" std=" + _NUM + r"(?: p5=" + _NUM + r" median=" + _NUM + r" p95=" + _NUM + r")?")
_TIMINGS = re.compile(r"Inference timings in us: Init: " + _NUM + r", First inference: " + _NUM
                      + r", Warmup \(avg\): " + _NUM + r", Inference \(avg\): " + _NUM)
_MEMORY = re.compile(r"(?:Peak memory footprint|Memory footprint delta from the start of the tool) \(MB\): init="
                     + _NUM + r" overall=" + _NUM)
_THREADS = re.compile(r"Num threads: \[(\d+)\]")


def build_benchmark_command(binary: str, model: str, *, threads: int, runs: int, warmup: int,
                            use_xnnpack: bool = True) -> list[str]:
    """The command line of ``benchmark_model`` for one measurement (as a device shell would run it)."""
    return [binary, f"--graph={model}", f"--num_threads={threads}", f"--num_runs={runs}",
            f"--warmup_runs={warmup}", "--min_secs=0", f"--use_xnnpack={'true' if use_xnnpack else 'false'}"]


def parse_benchmark_output(text: str) -> dict[str, Any]:
    """Turn ``benchmark_model`` output into the runner's JSON shape (times in ms).

    Raises:
        DeviceError: the text has no timing summary (the tool failed; its last lines are quoted).
    """
    counts = [m for m in _COUNT.finditer(text)]
    timings = _TIMINGS.search(text)
    if not counts or not timings:
        tail = " | ".join(line.strip() for line in text.strip().splitlines()[-3:])
        raise DeviceError(f"benchmark_model printed no timing summary; it said: {tail or '(nothing)'}")
    m = counts[-1]  # the last count= line is the measured run (earlier ones are warm-up)
    us = [float(g) if g is not None else None for g in m.groups()]
    ms = [v / 1000.0 if v is not None else None for v in us]
    latency = {"mean": ms[5], "median": ms[8], "p90": None, "p99": None, "min": ms[3], "max": ms[4],
               "std": ms[6], "p5": ms[7], "p95": ms[9]}
    out: dict[str, Any] = {
        "runtime": {"name": "benchmark_model", "version": None},
        "resolver": "benchmark_model",
        "delegate_fallback_reason": None,
        "init_ms": float(timings.group(1)) / 1000.0,
        "first_inference_ms": float(timings.group(2)) / 1000.0,
        "runs": int(us[0] or 0),
        "latency_ms": latency,
        "samples_ms": None,
        "peak_rss_bytes": None,
        "outputs": None,
    }
    threads = _THREADS.search(text)
    out["threads"] = int(threads.group(1)) if threads else None
    mem = _MEMORY.search(text)
    if mem:
        out["memory_mb"] = {"init": float(mem.group(1)), "overall": float(mem.group(2))}
        out["peak_rss_bytes"] = int(float(mem.group(2)) * 1024 * 1024)
    return out


_LITERT_LINE = re.compile(r"^(Model initialization|Inference \((avg|min|max|median|std|p5|p95)\)):\s+" + _NUM + r" ms",
                          re.MULTILINE)


def parse_litert_benchmark(text: str, result_json: dict[str, Any] | None = None) -> dict[str, Any]:
    """Turn ``litert-benchmark`` output (console text or its --result_json) into the runner's shape.

    Note that the tool rounds every figure to 0.01 ms.

    Raises:
        DeviceError: no results in the output.
    """
    if result_json is not None:
        lat = result_json.get("latency", {})
        return {"runtime": {"name": "litert-benchmark", "version": None}, "threads": result_json.get("num_threads"),
                "init_ms": lat.get("init_ms"), "runs": lat.get("num_runs"),
                "latency_ms": {"mean": lat.get("avg_ms"), "median": lat.get("median_ms"), "min": lat.get("min_ms"),
                               "max": lat.get("max_ms"), "std": lat.get("std_ms"), "p5": lat.get("p5_ms"),
                               "p95": lat.get("p95_ms"), "p90": None, "p99": None}}
    found = {m.group(2) or "init": float(m.group(3)) for m in _LITERT_LINE.finditer(text)}
    if "median" not in found and "avg" not in found:
        raise DeviceError("litert-benchmark printed no results")
    return {"runtime": {"name": "litert-benchmark", "version": None}, "init_ms": found.get("init"),
            "latency_ms": {"mean": found.get("avg"), "median": found.get("median"), "min": found.get("min"),
                           "max": found.get("max"), "std": found.get("std"), "p5": found.get("p5"),
                           "p95": found.get("p95"), "p90": None, "p99": None}}
