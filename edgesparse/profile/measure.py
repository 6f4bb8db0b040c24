"""``edgesparse profile``: footprint (from the flatbuffer) + latency (from the runner on a target).

The host never imports TensorFlow here: footprints are parsed from the flatbuffer, latency comes
back from ``edgesparse/device/runner.py`` as JSON, run as a subprocess locally (so its peak RSS is
the model's own) or on a device over SSH / adb.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesparse import manifest, progress
from edgesparse.device.emulation import emulated_note, latency_label
from edgesparse.device.targets import parse_target
from edgesparse.errors import ProfileError
from edgesparse.summary import SUMMARY_FILE, read_summary
from edgesparse.tflite import footprint

#: Above this drift (spread of the medians of the five fifths of the runs, % of the median) the report warns.
DRIFT_WARN_PCT = 10.0


@dataclass
class Measurement:
    """One model at one thread count on one target."""

    path: str
    threads: int
    runner: dict[str, Any]  # the runner's JSON

    def row(self, footprint: dict[str, Any]) -> dict[str, Any]:
        r = self.runner
        return {
            "path": self.path,
            "bytes": footprint.get("file_bytes"),
            "gzip_bytes": footprint.get("gzip_bytes"),
            "params": footprint.get("params"),
            "nonzero_params": footprint.get("nonzero_params"),
            "weight_stored_bytes": footprint.get("weight_stored_bytes"),
            "weight_runtime_bytes": footprint.get("weight_runtime_bytes"),
            "activation_bytes": footprint.get("activation_bytes"),
            "macs_dense": footprint.get("macs_dense"),
            "macs_nonzero": footprint.get("macs_nonzero"),
            "runtime": r.get("runtime"),
            "api": r.get("api", "interpreter"),
            "resolver": r.get("resolver"),
            "delegate_fallback_reason": r.get("delegate_fallback_reason"),
            "ops": r.get("ops"),
            "threads": self.threads,
            "init_ms": r.get("init_ms"),
            "runs": r.get("runs"),
            "warmup": r.get("warmup"),
            "latency_ms": r.get("latency_ms"),
            "drift_pct": (r.get("stability") or {}).get("drift_pct"),
            "paired_vs_first": r.get("paired"),
            "peak_rss_bytes": r.get("peak_rss_bytes"),
            "runtime_rss_bytes": r.get("runtime_rss_bytes"),
            "baseline_rss_bytes": r.get("baseline_rss_bytes"),
            "samples_ms": r.get("samples_ms"),
            "emulated": r.get("emulated"),
            "latency_label": latency_label(r),
        }


@dataclass
class ProfileReport:
    """Everything ``profile`` measured, renderable as a table, JSON or Markdown."""

    target: dict[str, Any]
    footprints: dict[str, dict[str, Any]] = field(default_factory=dict)
    measurements: list[Measurement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        return [m.row(self.footprints[m.path]) for m in self.measurements]

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "latency_label": latency_label(self.target), "models": self.rows(),
                "footprints": self.footprints, "notes": self.notes}


def resolve_models(items: Sequence[str | Path]) -> list[Path]:
    """Expand a RUN_DIR into its dense and final .tflite files; check that files exist.

    Raises:
        ProfileError: a path does not exist or a run directory has no exported models.
    """
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            if (p / SUMMARY_FILE).exists():
                paths = read_summary(p).tflite_paths()
            else:
                paths = [q for q in (p / "dense.tflite", p / "model.tflite") if q.exists()]
            if not paths:
                raise ProfileError(
                    f"'{p}' has no exported models (no summary.json with tflite paths, no dense.tflite/model.tflite); "
                    "run `edgesparse export RUN_DIR` first or give .tflite files."
                )
            missing = [q for q in paths if not q.exists()]
            if missing:
                raise ProfileError(f"the run '{p}' names {missing[0]}, which no longer exists; "
                                   "re-run `edgesparse export`.")
            for q in paths:  # a bundle's models are profiled only from a whole bundle
                manifest.check_beside(q, ProfileError)
            out.extend(paths)
        elif p.exists():
            manifest.check_beside(p, ProfileError)
            out.append(p)
        else:
            raise ProfileError(f"'{p}' does not exist: give .tflite files or a run directory.")
    return out


def drift_note(name: str, threads: int, result: dict[str, Any]) -> str | None:
    """A warning when the machine's speed moved while measuring (runner ``stability.drift_pct``), else None."""
    drift = (result.get("stability") or {}).get("drift_pct")
    if drift is None or drift <= DRIFT_WARN_PCT:
        return None
    return (f"{name} ({threads} thread(s)): the median of each fifth of the runs moved by {drift:.0f}% of the "
            "overall median while measuring, so the machine's speed changed (other load, frequency scaling, a "
            "shared virtual host); this median is not repeatable to better than that. Measure on a quiet device, "
            "or widen the window with --min-seconds.")


def delegation_note(name: str, result: dict[str, Any]) -> str | None:
    """Which ops of ``name`` ran on LiteRT's builtin kernels rather than XNNPACK (runner ``ops``), else None.

    None when XNNPACK took every op, or when the runner did not report ops (a benchmark binary).
    """
    ops = result.get("ops")
    if not ops:
        return None
    if ops.get("unavailable"):
        return f"{name}: which ops XNNPACK took is not known: {ops['unavailable']}."
    builtin = ops.get("builtin") or {}
    if not builtin:
        return None
    kinds = ", ".join(f"{op} x{count}" for op, count in builtin.items())
    count = ops["total"] - ops["delegated"]
    if result.get("resolver") == "builtin" and result.get("delegate_fallback_reason"):
        why = f" (XNNPACK refused the model: {str(result['delegate_fallback_reason']).rstrip('.')})"
    elif result.get("resolver") == "builtin":
        why = " (--resolver builtin: no delegate)"
    else:
        why = ""
    return (f"{name}: {count} of {ops['total']} ops ran on LiteRT's builtin kernels, not XNNPACK{why}: "
            f"{kinds}.")


def check_counts(threads: Sequence[int], runs: int, warmup: int) -> None:
    """Reject nonsensical measurement settings before anything runs.

    Raises:
        ProfileError: a thread count or the number of runs is below 1, or warm-up is negative.
    """
    if not threads or any(t < 1 for t in threads):
        raise ProfileError(f"--threads must be whole numbers >= 1 (got {','.join(map(str, threads)) or 'none'}).")
    if runs < 1:
        raise ProfileError(f"--runs must be >= 1 (got {runs}): the median of no runs is not a figure.")
    if warmup < 0:
        raise ProfileError(f"--warmup must be >= 0 (got {warmup}).")


def _check_settings(threads: Sequence[int], runs: int, warmup: int, min_seconds: float, api: str,
                    resolver: str) -> None:
    """Reject bad measurement settings before any file is read."""
    check_counts(threads, runs, warmup)
    if min_seconds < 0:
        raise ProfileError(f"--min-seconds must be >= 0 (got {min_seconds}).")
    if api not in ("interpreter", "compiled"):
        raise ProfileError(f"--api must be interpreter or compiled, not {api!r}.")
    if api == "compiled" and resolver != "auto":
        raise ProfileError("--resolver builtin applies to --api interpreter only "
                           "(CompiledModel picks its CPU kernels).")


def _measure(tgt: Any, model: Path, reference: Path, threads: int, min_seconds: float,
             options: dict[str, Any], at: tuple[int, int] = (1, 1)) -> dict[str, Any]:
    """Time ``model`` alone; when it is not the reference, also its ratio to it, timed alternately in one process.

    ``at`` is the measurement's ``(index, total)`` in the profile, for its progress record.
    """
    paired = f", then alternately with {reference.name}" if model != reference else ""
    progress.item("latency", *at, f"{model.name} on {tgt.name}: {threads} thread(s), {options['warmup']} warm-up + "
                                  f"{options['runs']} runs{paired}")
    result: dict[str, Any] = tgt.run_runner(model, threads=threads, min_seconds=min_seconds, **options)
    if model != reference:
        pair = tgt.run_runner(model, threads=threads, paired=reference, **options)
        result = {**result, "paired": pair.get("paired")}
    return result


def _add_footprints(report: ProfileReport, paths: list[Path], input_shape: tuple[int, ...] | None) -> None:
    """Read each model's footprint (and its notes) into ``report``; refuse dynamic inputs without a shape."""
    for p in paths:
        fp = footprint(p).to_dict()
        dyn = _dynamic_dims(fp)
        later = _dynamic_dims({"inputs": fp.get("inputs", [])[1:]})
        if later:  # --input-shape sets the first input only (the runner's and benchmark_model's rule here)
            raise ProfileError(
                f"{p} has dynamic dimensions in an input other than the first ({'; '.join(later)}); --input-shape "
                "sets the first input only, so export the model with fixed input shapes (keras.Input(shape=...) "
                "without None) to profile it."
            )
        if dyn and input_shape is None:
            raise ProfileError(
                f"{p} has dynamic input dimensions ({'; '.join(dyn)}); give a concrete shape with "
                "--input-shape, e.g. --input-shape 1,96,96,3."
            )
        report.footprints[str(p)] = fp
        report.notes += [f"{p.name}: {note}" for note in fp.get("notes", [])]


def _dynamic_dims(fp: dict[str, Any]) -> list[str]:
    """Inputs with unknown non-batch dimensions (the runner cannot invent a shape for them)."""
    bad = []
    for inp in fp.get("inputs", []):
        sig = list(inp.get("shape_signature") or [])
        if any(int(d) < 0 for d in sig[1:]):
            bad.append(f"{inp.get('name')} {sig}")
    return bad


def profile(
    models: Sequence[str | Path],
    *,
    target: str = "local",
    threads: Sequence[int] = (1,),
    runs: int = 100,
    warmup: int = 10,
    resolver: str = "auto",
    input_shape: tuple[int, ...] | None = None,
    api: str = "interpreter",
    min_seconds: float = 0.0,
    target_options: dict[str, Any] | None = None,
) -> ProfileReport:
    """Measure footprint and latency of ``models`` on ``target``.

    Args:
        models: .tflite files and/or run directories (the first model is the baseline of ratios).
        target: ``"local"``, ``"ssh://user@host[:port][/dir]"`` or ``"adb[://serial]"``.
        threads: Thread counts to measure each model at.
        runs: Timed invocations per model and thread count.
        warmup: Untimed invocations first.
        resolver: "auto" (XNNPACK, falling back to the builtin resolver) or "builtin".
        input_shape: Shape for models with dynamic input dimensions.
        api: "interpreter" (the classic Interpreter API, every runtime) or "compiled" (ai-edge-litert's
            CompiledModel, what ``litert-benchmark`` times).
        min_seconds: Keep timing each model for at least this long (0: exactly ``runs``).
        target_options: Extra options of the target (identity file, known_hosts, ...).

    Returns:
        The report.

    Raises:
        ProfileError: bad arguments or files; DeviceError: the target failed.
    """
    _check_settings(threads, runs, warmup, min_seconds, api, resolver)
    paths = resolve_models(models)
    report = ProfileReport(target={})
    _add_footprints(report, paths, input_shape)
    tgt = parse_target(target, **(target_options or {}))
    options = {"runs": runs, "warmup": warmup, "resolver": resolver, "input_shape": input_shape, "api": api}
    total = len(paths) * len(threads)
    for i, (p, t) in enumerate(((p, t) for p in paths for t in threads), 1):
        result = _measure(tgt, p, paths[0], t, min_seconds, options, at=(i, total))
        report.measurements.append(Measurement(path=str(p), threads=t, runner=result))
        for note in (delegation_note(p.name, result), drift_note(p.name, t, result)):
            if note and note not in report.notes:  # delegation is the same at every thread count
                report.notes.append(note)
    report.target = tgt.describe()
    note = emulated_note(report.target)
    if note:
        report.notes.insert(0, note)
    return report
