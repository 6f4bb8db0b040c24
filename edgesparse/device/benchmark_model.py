"""The official tools' output in the runner's JSON shape: TFLite ``benchmark_model`` and ``litert-benchmark``.

``benchmark_model`` (a C++ binary, pushed to Android devices that have no Python) logs its results;
the lines parsed here come from ``tensorflow/lite/tools/benchmark/benchmark_model.cc``
(``Inference timings in us: Init: ..., First inference: ..., Warmup (avg): ..., Inference (avg): ...``,
``Memory footprint delta from the start of the tool (MB): init=... overall=...``, and with
``--report_peak_memory_footprint`` ``Overall peak memory footprint (MB) via periodic monitoring: ...``)
and from ``Stat::OutputToStream`` in ``tsl/util/stats_calculator.h`` (``count=N first=.. curr=.. min=..
max=.. avg=.. std=..``, ``count=N curr=..(all same)`` when every run took the same time, and
`` p5=.. median=.. p95=..`` appended by builds that keep percentiles). Older builds call the memory
delta ``Peak memory footprint (MB): init=... overall=...``; it is the same delta, not a peak RSS.

``litert-benchmark`` is the console script of ai-edge-litert (``ai_edge_litert.tools.
benchmark_litert_model``): it runs the CompiledModel API and prints (and writes with
``--result_json``) figures rounded to 0.01 ms, with a sample (n-1) standard deviation.

Only what a tool printed is filled in; a statistic it does not print stays ``None``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from edgesparse.errors import DeviceError

_NUM = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|-?inf)"
_STAT = re.compile(
    r"count=(?P<count>\d+)"
    r"(?: first=(?P<first>" + _NUM[1:-1] + r"))?"
    r" curr=(?P<curr>" + _NUM[1:-1] + r")"
    r"(?P<same>\(all same\))?"
    r"(?: min=(?P<min>" + _NUM[1:-1] + r") max=(?P<max>" + _NUM[1:-1] + r") avg=(?P<avg>" + _NUM[1:-1]
    + r") std=(?P<std>" + _NUM[1:-1] + r"))?"
    r"(?: p5=(?P<p5>" + _NUM[1:-1] + r") median=(?P<median>" + _NUM[1:-1] + r") p95=(?P<p95>" + _NUM[1:-1] + r"))?"
)
_TIMINGS = re.compile(r"Inference timings in us: Init: " + _NUM + r", First inference: " + _NUM
                      + r", Warmup \(avg\): " + _NUM + r", Inference \(avg\): " + _NUM)
_MEMORY_DELTA = re.compile(r"(?:Peak memory footprint|Memory footprint delta from the start of the tool) \(MB\): "
                           r"init=" + _NUM + r" overall=" + _NUM)
_PEAK = re.compile(r"Overall peak memory footprint \(MB\) via periodic monitoring: " + _NUM)
_THREADS = re.compile(r"(?:^|\s)(?:Num threads|#threads used for CPU inference): \[(-?\d+)\]", re.MULTILINE)
_MODEL_MB = re.compile(r"The input model file size \(MB\): " + _NUM)
_DELEGATE_FAILURE = re.compile(r"failed to delegate|Failed to apply .*delegate|failed to prepare", re.IGNORECASE)


def build_benchmark_command(binary: str, model: str, *, threads: int, runs: int, warmup: int,
                            use_xnnpack: bool = True, report_peak_memory: bool = True,
                            min_secs: float = 0.0) -> list[str]:
    """The argument list of one ``benchmark_model`` measurement.

    ``--min_secs=0`` and ``--warmup_min_secs=0`` make the tool run exactly ``runs`` timed and
    ``warmup`` untimed invocations (its defaults keep going for at least 1 s and 0.5 s);
    ``min_secs`` > 0 asks for a longer measurement, as the runner's ``--min-seconds`` does.

    Args:
        binary: Path of the binary on the device.
        model: Path of the .tflite file on the device.
        threads: ``--num_threads``.
        runs: Timed invocations.
        warmup: Untimed invocations first.
        use_xnnpack: Apply the XNNPACK delegate (``False``: builtin kernels only).
        min_secs: Keep timing for at least this long (0: exactly ``runs``).
        report_peak_memory: Ask for the peak memory footprint (sampled every 50 ms by a thread).

    Returns:
        The command as a list, to be quoted for the device's shell.
    """
    cmd = [binary, f"--graph={model}", f"--num_threads={threads}", f"--num_runs={runs}", f"--min_secs={min_secs:g}",
           f"--warmup_runs={warmup}", "--warmup_min_secs=0", f"--use_xnnpack={'true' if use_xnnpack else 'false'}"]
    if report_peak_memory:
        cmd.append("--report_peak_memory_footprint=true")
    return cmd


def _f(value: str | None) -> float | None:
    return float(value) if value is not None else None


def _tail(text: str, n: int = 3) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-n:]) or "(nothing)"


def delegate_failure(text: str) -> str | None:
    """The first line of tool output saying a delegate could not be applied, if any."""
    for line in text.splitlines():
        if _DELEGATE_FAILURE.search(line):
            return line.strip()
    return None


def _run_stats(text: str, end: int) -> list[re.Match[str]]:
    """The warm-up and measured ``count=`` lines: before the timing summary, and not the op profiler's.

    With ``--enable_op_profiling`` the tool later prints ``Timings (microseconds): count=...`` (sums
    of per-op times) and ``Memory (bytes): count=...``; those are not run latencies.
    """
    out = []
    for m in _STAT.finditer(text, 0, end):
        prefix = text[text.rfind("\n", 0, m.start()) + 1:m.start()]
        if "Timings" not in prefix and "Memory" not in prefix:
            out.append(m)
    return out


def parse_benchmark_output(text: str) -> dict[str, Any]:
    """Turn ``benchmark_model`` output into the runner's JSON shape (times in ms).

    Args:
        text: What the tool printed (stdout and stderr together; logcat prefixes are fine).

    Returns:
        ``runtime``, ``init_ms``, ``first_invoke_ms``, ``warmup_avg_ms``, ``runs``, ``threads``,
        ``latency_ms`` (mean, median, p5, p95, min, max, std; ``p90``/``p99`` are ``None``: the tool
        does not print them), ``memory_delta_mb``, ``peak_rss_bytes`` (only with periodic
        monitoring), ``model_mb``; ``samples_ms`` and ``outputs`` are ``None``.

    Raises:
        DeviceError: the text has no timing summary (the tool failed; its last lines are quoted).
    """
    timings = _TIMINGS.search(text)
    stats = _run_stats(text, timings.start()) if timings else []
    if timings is None or not stats:
        raise DeviceError(f"benchmark_model printed no timing summary; it said: {_tail(text)}")
    m = stats[-1]  # the measured run; the count= line before it is the warm-up
    us = {k: _f(v) for k, v in m.groupdict().items() if k not in ("count", "same")}
    if us["min"] is None:  # "count=N curr=X(all same)": every run took X
        us.update(min=us["curr"], max=us["curr"], avg=us["curr"], std=0.0)
    ms = {k: (v / 1000.0 if v is not None else None) for k, v in us.items()}
    init_us, first_us, warmup_us, _avg_us = (float(g) for g in timings.groups())
    out: dict[str, Any] = {
        "runtime": {"name": "benchmark_model", "version": None},
        "resolver": None,
        "delegate_fallback_reason": None,
        "threads": None,
        "init_ms": init_us / 1000.0,
        "first_invoke_ms": first_us / 1000.0,
        "warmup_avg_ms": warmup_us / 1000.0,
        "runs": int(m.group("count")),
        "latency_ms": {"mean": ms["avg"], "median": ms["median"], "p90": None, "p99": None, "min": ms["min"],
                       "max": ms["max"], "std": ms["std"], "p5": ms["p5"], "p95": ms["p95"]},
        "samples_ms": None,
        "peak_rss_bytes": None,
        "memory_delta_mb": None,
        "model_mb": None,
        "outputs": None,
    }
    threads = [int(t) for t in _THREADS.findall(text)]
    if threads:
        out["threads"] = threads[-1]
    delta = _MEMORY_DELTA.search(text)
    if delta:
        out["memory_delta_mb"] = {"init": float(delta.group(1)), "overall": float(delta.group(2))}
    peak = _PEAK.search(text)
    if peak and float(peak.group(1)) > 0:
        out["peak_rss_bytes"] = int(float(peak.group(1)) * 1024 * 1024)
    size = _MODEL_MB.search(text)
    if size:
        out["model_mb"] = float(size.group(1))
    return out


# ---- litert-benchmark (ai-edge-litert's console script) ----------------------------------------

_LITERT_LINE = re.compile(r"^\s*(Model initialization|Warmup \(first\)|Warmup \(avg\)|"
                          r"Inference \((?:avg|min|max|median|std|p5|p95)\)):\s+" + _NUM + r" ms(?: \((\d+) runs\))?",
                          re.MULTILINE)
_LITERT_THREADS = re.compile(r"Num threads:\s+(\d+)")
_LITERT_ACCEL = re.compile(r"Fully accelerated:\s+(True|False)")


def litert_benchmark_command(model: str | Path, *, threads: int, runs: int, warmup: int,
                             result_json: str | Path | None = None, executable: str | None = None) -> list[str]:
    """The argument list of one ``litert-benchmark`` run (the console script beside this Python by default)."""
    exe = executable or str(Path(sys.executable).with_name("litert-benchmark"))
    cmd = [exe, "--model", str(model), "--num_threads", str(threads), "--num_runs", str(runs),
           "--warmup_runs", str(warmup)]
    if result_json is not None:
        cmd += ["--result_json", str(result_json)]
    return cmd


def parse_litert_benchmark(text: str, result_json: dict[str, Any] | None = None) -> dict[str, Any]:
    """Turn ``litert-benchmark`` output (console text, or its ``--result_json`` dict) into the runner's shape.

    Every figure the tool reports is rounded to 0.01 ms, so it cannot resolve sub-10 µs models.

    Args:
        text: What the tool printed (stdout; stderr adds the thread count).
        result_json: The parsed ``--result_json`` file; preferred when given.

    Raises:
        DeviceError: no results (the tool failed; e.g. it cannot run sparse int8 models XNNPACK refuses).
    """
    base: dict[str, Any] = {"runtime": {"name": "litert-benchmark", "version": None}, "resolver": "compiled_model",
                            "delegate_fallback_reason": None, "samples_ms": None, "peak_rss_bytes": None,
                            "outputs": None, "resolution_ms": 0.01}
    if result_json is not None:
        lat = result_json.get("latency") or {}
        if "avg_ms" not in lat:
            raise DeviceError(f"litert-benchmark's result JSON has no latency figures: {sorted(result_json)}")
        return {**base, "threads": result_json.get("num_threads"), "init_ms": lat.get("init_ms"),
                "first_invoke_ms": lat.get("warmup_first_ms"), "warmup_avg_ms": lat.get("warmup_avg_ms"),
                "runs": lat.get("num_runs"), "warmup": lat.get("num_warmup_runs"),
                "fully_accelerated": result_json.get("fully_accelerated"),
                "latency_ms": {"mean": lat.get("avg_ms"), "median": lat.get("median_ms"), "p90": None, "p99": None,
                               "min": lat.get("min_ms"), "max": lat.get("max_ms"), "std": lat.get("std_ms"),
                               "p5": lat.get("p5_ms"), "p95": lat.get("p95_ms")}}
    found: dict[str, float] = {}
    counts: dict[str, int] = {}
    for m in _LITERT_LINE.finditer(text):
        key = m.group(1)
        found[key] = float(m.group(2))
        if m.group(3):
            counts[key] = int(m.group(3))
    if "Inference (avg)" not in found:
        raise DeviceError(f"litert-benchmark printed no results; it said: {_tail(text)}")
    threads = _LITERT_THREADS.search(text)
    accel = _LITERT_ACCEL.search(text)
    return {**base, "threads": int(threads.group(1)) if threads else None, "init_ms": found.get("Model initialization"),
            "first_invoke_ms": found.get("Warmup (first)"), "warmup_avg_ms": found.get("Warmup (avg)"),
            "runs": counts.get("Inference (avg)"), "warmup": counts.get("Warmup (avg)"),
            "fully_accelerated": (accel.group(1) == "True") if accel else None,
            "latency_ms": {"mean": found.get("Inference (avg)"), "median": found.get("Inference (median)"),
                           "p90": None, "p99": None, "min": found.get("Inference (min)"),
                           "max": found.get("Inference (max)"), "std": found.get("Inference (std)"),
                           "p5": found.get("Inference (p5)"), "p95": found.get("Inference (p95)")}}


def run_litert_benchmark(model: str | Path, *, threads: int = 1, runs: int = 100, warmup: int = 10,
                         executable: str | None = None, timeout: float = 600) -> dict[str, Any]:
    """Run the installed ``litert-benchmark`` on this machine and parse its result JSON.

    Raises:
        DeviceError: the tool is missing, failed or timed out (its last lines are quoted).
    """
    import json
    import tempfile

    with tempfile.TemporaryDirectory(prefix="edgesparse-litert-") as tmp:
        result = Path(tmp) / "result.json"
        cmd = litert_benchmark_command(model, threads=threads, runs=runs, warmup=warmup, result_json=result,
                                       executable=executable)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError:
            raise DeviceError(f"litert-benchmark is not installed at {cmd[0]} (pip install ai-edge-litert).") from None
        except subprocess.TimeoutExpired:
            raise DeviceError(f"litert-benchmark did not finish within {timeout:.0f} s.") from None
        if proc.returncode != 0 or not result.exists():
            raise DeviceError(f"litert-benchmark failed on {model} (exit code {proc.returncode}): "
                              f"{_tail(proc.stderr or proc.stdout)}")
        return parse_litert_benchmark(proc.stdout + proc.stderr, json.loads(result.read_text()))
