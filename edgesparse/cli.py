"""The ``edgesparse`` command: parse -> one library call -> render.

EdgesparseError -> exit 1 with a one-paragraph message (traceback with --debug); usage errors -> 2.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from edgesparse.errors import EdgesparseError


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Pipes and CI logs: do not squeeze tables to 80 columns, unless COLUMNS says how wide to be.
    width = None if stream.isatty() or os.environ.get("COLUMNS", "").isdigit() else 160
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


def _handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn EdgesparseError, Ctrl-C and faults (full disk, permissions, corrupt files) into exit code 1 with a
    readable paragraph; any other exception into one line naming the log with its traceback (--debug raises)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        debug = bool((ctx.find_root().obj or {}).get("debug"))
        try:
            return fn(*args, **kwargs)
        except EdgesparseError as exc:
            if debug:
                raise
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("Error: interrupted; nothing half-written was left behind.", err=True)
            sys.exit(1)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - a fault (disk, permission, corrupt file) or a bug: one paragraph
            if debug:
                raise
            from edgesparse import faults

            msg = faults.describe(exc)
            click.echo(f"Error: {msg}" if msg else f"Error: {faults.unexpected(exc)}", err=True)
            sys.exit(1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="edgesparse")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Prune, quantize, export, verify and profile Keras models as sparse TFLite models."""
    ctx.obj = {"debug": debug}


class _ConsoleHandler(logging.Handler):
    """Renders edgesparse's log records with rich: progress as "· line", warnings in yellow."""

    def __init__(self, console: Any, status: Any = None, live: Any = None) -> None:
        super().__init__(logging.INFO)
        self.console = console
        self.status = status  # a rich Status: progress replaces its text instead of printing lines
        self.live = live  # a progress.RichDisplay: while its bars show, terminal output goes above them

    def emit(self, record: logging.LogRecord) -> None:
        from rich.markup import escape

        msg = escape(record.getMessage())
        console = self.console
        if self.live is not None and self.live.active and console.is_terminal:
            console = self.live.console
        if record.levelno >= logging.WARNING:
            console.print(f"[yellow]warning:[/yellow] {msg}")
        elif self.status is not None:
            self.status.update(msg)
        else:
            console.print(f"[dim]·[/dim] {msg}")


@contextlib.contextmanager
def _progress(console: Any, status: Any = None) -> Iterator[None]:
    """Show the package's log records (logger ``edgesparse``) on ``console`` (or in ``status``) while a command runs.

    On a terminal (stderr), training phases also get live bars (epochs, batches, loss, metric, ETA) on stderr;
    elsewhere each epoch is one plain line, its log record.
    """
    from edgesparse import progress

    logger = logging.getLogger("edgesparse")
    live = progress.RichDisplay(_console(stderr=True)) if status is None and sys.stderr.isatty() else None
    handler = _ConsoleHandler(console, status, live)
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        with progress.listening(live) if live is not None else contextlib.nullcontext():
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a recipe field.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last checkpoint.")
@click.option("--force", is_flag=True, help="Replace the results of an earlier run in the run directory and bundle.")
@click.option("-o", "--output-dir", type=click.Path(path_type=Path),
              help="Run directory (default runs/NAME); the bundle moves with it (RUN_DIR/bundle).")
@click.option("--no-export", is_flag=True, help="Skip export and verification.")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json instead of the table.")
@_handle_errors
def train(recipe: Path, overrides: tuple[str, ...], resume: bool, force: bool, output_dir: Path | None,
          no_export: bool, as_json: bool) -> None:
    """Train, prune, quantize, export and verify a RECIPE end to end."""
    from edgesparse.recipe import load_recipe
    from edgesparse.run import train as run

    rec = load_recipe(recipe, overrides)
    console = _console(stderr=as_json)
    with _progress(console):
        result = run(rec, resume=resume, run_dir=output_dir, export=not no_export, force=force)
    if as_json:
        click.echo(json.dumps(result.summary.to_json(), indent=2, default=str))
        return
    from edgesparse.report import channels_table, comparison_table

    if result.summary.channels is not None:
        console.print(channels_table(result.summary))
    console.print(comparison_table(result.summary))
    for w in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")
    bundle = result.summary.tflite.bundle if result.summary.tflite else None
    console.print(f"run directory: {result.run_dir}  (summary.json, history.csv, logs/)"
                  + (f"; bundle: {bundle}" if bundle else ""))


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Bundle folder (default: where train put it, export/NAME or RUN_DIR/bundle).")
@click.option("--force", is_flag=True, help="Write over a bundle that another run exported.")
@_handle_errors
def export(run_dir: Path, output: Path | None, force: bool) -> None:
    """Convert and verify the models of a finished RUN_DIR."""
    from edgesparse.run import export as run

    console = _console()
    with _progress(console):
        res = run(run_dir, output, force=force)
    v = res.info.get("verification", {})
    # a task without accuracy (detection's map50, regression's mae) names its own metric; None prints as nan
    name, value = ("accuracy", v.get("accuracy")) if v.get("accuracy") is not None else \
        (v.get("metric_name", "metric"), v.get("metric"))
    shown = "nan" if value is None else (f"{value:.2%}" if name == "accuracy" else f"{value:.4g}")
    agreement = float("nan") if v.get("agreement") is None else v["agreement"]
    console.print(f"wrote {res.model_path} ({res.info['model']['bytes']:,} bytes, "
                  f"gzip {res.info['model']['gzip_bytes']:,}); TFLite {name} "
                  f"{shown}, agreement {agreement:.2%}, resolver {v.get('resolver')}")


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the inspection as JSON.")
@_handle_errors
def inspect(model: Path, as_json: bool) -> None:
    """Show how MODEL.tflite stores its weights (dense, CSR, blocks) and its DENSIFY ops."""
    from edgesparse.errors import ProfileError
    from edgesparse.manifest import check_beside
    from edgesparse.tflite.inspect import inspect_tflite
    from edgesparse.tflite.mixed import float_ops

    if model.is_file():
        check_beside(model, ProfileError)  # a model inside a bundle: only from a whole bundle
    info = inspect_tflite(model)
    d = {**info.to_dict(), "float_ops": float_ops(info)}
    if as_json:
        click.echo(json.dumps(d, indent=2, default=str))
        return
    from edgesparse.report import inspection_float_ops, inspection_table

    _console().print(inspection_table(d))
    mixed = inspection_float_ops(d)
    if mixed:
        _console().print(mixed)


@main.command()
@click.option("--markdown", is_flag=True, help="The recipe reference page (docs/reference/recipe.md) instead.")
@_handle_errors
def schema(markdown: bool) -> None:
    """Print the recipe's JSON schema (for editors' YAML support)."""
    if markdown:
        from edgesparse.recipe_reference import render

        click.echo(render(), nl=False)
        return
    from edgesparse.recipe import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE")
@click.option("--schema-only", is_flag=True, help="Only check the recipe's text; do not load the data and model.")
@_handle_errors
def validate(recipe: Path, overrides: tuple[str, ...], schema_only: bool) -> None:
    """Validate a RECIPE, load its data and model (no training) and print it fully resolved.

    A recipe with ``factory:`` (or ``custom_objects``) runs that Python code when validated or trained.
    """
    from edgesparse.recipe import code_references, dump_recipe, load_recipe

    rec = load_recipe(recipe, overrides)
    code = code_references(rec)
    if code:  # a recipe that names Python code is code, as a Python file is: say so before running it
        verb = "would import and call (not with --schema-only)" if schema_only else "imports and calls"
        click.echo(f"Note: this recipe runs Python code, as a Python file does; validate {verb} "
                   f"{'; '.join(code)}. Only validate or run recipes you trust.", err=True)
    lines = [] if schema_only else _check_lines(rec)
    click.echo(dump_recipe(rec), nl=False)
    if lines:  # YAML comments: the output stays a valid recipe
        click.echo("# checked without training:")
    for line in lines:
        click.echo(f"#   {line}")


def _check_lines(rec: Any) -> list[str]:
    from edgesparse.check import check_recipe

    return check_recipe(rec).lines()


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a recipe field.")
@click.option("-o", "--output-dir", type=click.Path(path_type=Path), help="Folder (default runs/NAME-analyze).")
@click.option("--run-dir", type=click.Path(path_type=Path), help="Analyse this finished run's dense baseline.")
@click.option("--ratios", default=None, metavar="R1,R2,...", help="Fractions of each group removed (0.25,0.5,0.75).")
@click.option("--force", is_flag=True, help="Retrain the baseline even if the folder holds one.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON instead of the table.")
@click.option("--quantization", is_flag=True,
              help="Instead: the int8 error of each op of the run's final model (TF's QuantizationDebugger), worst "
                   "first, into quantization.json/.png (default: in the run directory).")
@_handle_errors
def analyze(recipe: Path, overrides: tuple[str, ...], output_dir: Path | None, run_dir: Path | None,
            ratios: str | None, force: bool, as_json: bool, quantization: bool) -> None:
    """Sensitivity of RECIPE's dense model: each channel group, and each layer's kernel, pruned alone."""
    from edgesparse.analyze import analyze as run_analyze
    from edgesparse.recipe import load_recipe

    if quantization:
        _analyze_quantization(load_recipe(recipe, overrides), run_dir, output_dir, as_json)
        return

    try:
        parsed = [float(r) for r in ratios.split(",")] if ratios else None
    except ValueError:
        raise click.BadParameter(f"'{ratios}' is not a comma-separated list of fractions",
                                 param_hint="--ratios") from None
    if parsed and not all(0 < r < 1 for r in parsed):
        raise click.BadParameter("every ratio must be between 0 and 1 (exclusive)", param_hint="--ratios")
    console = _console(stderr=as_json)
    with _progress(console):
        report = run_analyze(load_recipe(recipe, overrides), out_dir=output_dir, run_dir=run_dir, ratios=parsed,
                             force=force)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    from edgesparse.report import sensitivity_table, unstructured_sensitivity_table

    console.print(sensitivity_table(report))
    console.print(unstructured_sensitivity_table(report))
    console.print(f"written: {report.json_path}, {report.png_path}, {report.unstructured_png_path}")


def _analyze_quantization(rec: Any, run_dir: Path | None, output_dir: Path | None, as_json: bool) -> None:
    from edgesparse.quant_analysis import analyze_quantization
    from edgesparse.report import quantization_table

    console = _console(stderr=as_json)
    with _progress(console):
        report = analyze_quantization(rec, run_dir=run_dir, out_dir=output_dir)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    console.print(quantization_table(report.to_dict()))
    console.print(f"written: {report.files['json']}, {report.files['png']}")


def _ints(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a comma-separated list of whole numbers") from None


def _shape(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a shape like 1,96,96,3") from None


_TARGET_HELP = "local (default), ssh://user@host[:port][/dest/dir], adb or adb://SERIAL."


def _target_options(identity: str | None, known_hosts: str | None, accept_new_host_key: bool, python: str | None,
                    benchmark_binary: str | None) -> dict[str, Any]:
    return {"identity": identity, "known_hosts": known_hosts, "accept_new_host_key": accept_new_host_key,
            "python": python, "benchmark_binary": benchmark_binary}


def _target_flags(fn: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed([
        click.option("--target", default="local", show_default=True, help=_TARGET_HELP),
        click.option("--identity", type=click.Path(), help="SSH private key."),
        click.option("--known-hosts", type=click.Path(), help="SSH known_hosts file (default: OpenSSH's)."),
        click.option("--accept-new-host-key", is_flag=True, help="Trust an unknown SSH host key on first use."),
        click.option("--python", help="Python on the device (default python3)."),
        click.option("--benchmark-binary", type=click.Path(), help="adb: TFLite benchmark_model binary to push."),
    ]):
        fn = opt(fn)
    return fn


@main.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@_target_flags
@click.option("--threads", default="1", callback=_ints, show_default=True, help="Thread counts, e.g. 1,2,4.")
@click.option("--runs", default=100, show_default=True, type=int, help="Timed invocations.")
@click.option("--warmup", default=10, show_default=True, type=int, help="Untimed invocations first.")
@click.option("--min-seconds", default=0.0, show_default=True, type=float,
              help="Keep timing for at least this long (a longer window on a noisy machine; 0: exactly --runs).")
@click.option("--resolver", type=click.Choice(["auto", "builtin"]), default="auto", show_default=True,
              help="auto: XNNPACK, falling back to builtin kernels when it refuses the model.")
@click.option("--api", type=click.Choice(["interpreter", "compiled"]), default="interpreter", show_default=True,
              help="interpreter: the classic Interpreter (every runtime); compiled: ai-edge-litert's CompiledModel.")
@click.option("--input-shape", callback=_shape, help="Shape for dynamic inputs, e.g. 1,96,96,3.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write the figures as JSON.")
@click.option("--report", type=click.Path(path_type=Path), help="Write a Markdown report with PNG plots.")
@click.option("--wide", is_flag=True,
              help="One table with every column, however wide (default: stack the table to fit the terminal).")
@_handle_errors
def profile(models: tuple[Path, ...], target: str, identity: str | None, known_hosts: str | None,
            accept_new_host_key: bool, python: str | None, benchmark_binary: str | None, threads: list[int],
            runs: int, warmup: int, min_seconds: float, resolver: str, api: str,
            input_shape: tuple[int, ...] | None, json_path: Path | None, report: Path | None, wide: bool) -> None:
    """Measure footprint and latency of MODELS (.tflite files or a RUN_DIR) on a target."""
    from edgesparse.profile import report as rep
    from edgesparse.profile.measure import profile as run

    console = _console()
    with console.status("measuring") as status, _progress(console, status):
        result = run(models, target=target, threads=threads, runs=runs, warmup=warmup, resolver=resolver,
                     input_shape=input_shape, api=api, min_seconds=min_seconds,
                     target_options=_target_options(identity, known_hosts, accept_new_host_key, python,
                                                    benchmark_binary))
    parts = rep.console_tables(result, console.width, wide=wide)
    if wide:
        from rich.console import Console

        console.width = max(console.width, Console(width=10_000).measure(parts[0]).maximum)
    for part in parts:
        console.print(part, soft_wrap=False)  # wrap long notes at the console's width
    if json_path:
        rep.write_json(result, json_path)
        console.print(f"wrote {json_path}")
    if report:
        rep.write_markdown(result, report)
        console.print(f"wrote {report} (+ PNG plots beside it)")


@main.command()
@click.argument("source", type=click.Path(path_type=Path))
@_target_flags
@click.option("--dest", help="Folder on the device (default ~/edgesparse, or /data/local/tmp/edgesparse on adb).")
@click.option("--profile", "do_profile", is_flag=True, help="Also measure latency on the device.")
@click.option("--threads", default=1, show_default=True, type=int)
@click.option("--runs", default=50, show_default=True, type=int)
@click.option("--resolver", type=click.Choice(["auto", "builtin"]), default="auto", show_default=True,
              help="Kernels on device and host: auto (XNNPACK, else builtin) or builtin (bit-identical across "
                   "runtime versions).")
@click.option("--host-python", help="Python computing the host's reference outputs (default: this one).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write the result as JSON.")
@_handle_errors
def deploy(source: Path, target: str, identity: str | None, known_hosts: str | None, accept_new_host_key: bool,
           python: str | None, benchmark_binary: str | None, dest: str | None, do_profile: bool, threads: int,
           runs: int, resolver: str, host_python: str | None, json_path: Path | None) -> None:
    """Copy a bundle (RUN_DIR, bundle folder or .tflite) to a device and check it runs there."""
    from edgesparse import _io
    from edgesparse.device.deploy import deploy as run

    res = run(source, target, dest=dest, profile=do_profile, threads=threads, runs=runs, resolver=resolver,
              host_python=host_python,
              target_options=_target_options(identity, known_hosts, accept_new_host_key, python, benchmark_binary))
    console = _console()
    temporary = " (a temporary copy, removed after the check)" if target == "local" and dest is None else ""
    console.print(f"deployed to {res.target.get('name')}:{res.remote_dir}{temporary} ({', '.join(res.files)})")
    if res.target.get("machine"):
        cpu = res.target.get("cpu_model") or "CPU model unknown"
        console.print(f"device: {res.target['machine']}, {cpu}, Python {res.target.get('python')}"
                      + (" (EMULATED CPU)" if res.target.get("emulated") else ""))
    console.print(f"{res.summary_line()}; device runtime "
                  f"{(res.device.get('runtime') or {}).get('name')} "
                  f"{(res.device.get('runtime') or {}).get('version')}, "
                  f"resolver {res.device.get('resolver')}")
    for note in res.notes:
        console.print(f"note: {note}")
    if res.profile:
        lat = res.profile["latency_ms"]
        label = f" ({res.profile['latency_label']})" if res.profile.get("latency_label") else ""
        console.print(f"latency on device: median {lat['median']:.3f} ms, p90 {lat['p90']:.3f} ms "
                      f"({res.profile['runs']} runs, {res.profile['threads']} thread(s)){label}")
    if json_path:
        _io.write_json(json_path, res.to_dict())


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--grid", "grid_items", multiple=True, metavar="PATH=V1,V2",
              help="A grid axis, e.g. sparsity.final=0,0.5,0.9 (repeatable; adds to the recipe's sweep section).")
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override the base recipe.")
@click.option("--repeats", default=1, show_default=True, type=int, help="Repeats (seeds) per grid point.")
@click.option("--workers", default=1, show_default=True, type=int, help="Parallel trial processes on this machine.")
@click.option("--ray", "ray_address", metavar="ADDRESS", help="Send trials to this Ray cluster.")
@click.option("--profile-runs", default=50, show_default=True, type=int, help="Latency runs per trial (0: skip).")
@click.option("--retry-failed", is_flag=True, help="Run again the trials recorded as failed (finished ones are kept).")
@click.option("--reprofile", is_flag=True,
              help="Measure the latency of every finished trial and of the dense model again (no training).")
@click.option("-o", "--output-dir", type=click.Path(path_type=Path), help="Sweep directory (default sweeps/NAME).")
@_handle_errors
def sweep(recipe: Path, grid_items: tuple[str, ...], overrides: tuple[str, ...], repeats: int, workers: int,
          ray_address: str | None, profile_runs: int, retry_failed: bool, reprofile: bool,
          output_dir: Path | None) -> None:
    """Compare sparse models with their dense counterpart over a grid of recipe values."""
    from edgesparse.recipe import load_recipe
    from edgesparse.sweep import parse_grid
    from edgesparse.sweep import sweep as run

    base = load_recipe(recipe, overrides)
    grid = {**(base.sweep or {}), **parse_grid(grid_items)}
    console = _console()
    with _progress(console):
        res = run(base, grid, repeats=repeats, root=output_dir, workers=workers, ray_address=ray_address,
                  profile_runs=profile_runs, retry_failed=retry_failed, reprofile=reprofile)
    console.print(f"{len(res.rows)} trials, {len(res.failed)} failed, {res.seconds:.0f} s: "
                  f"{res.root / 'results.csv'}, {res.root / 'report.md'}")
    from edgesparse.sweep.report import aggregate, summary_lines

    for line in summary_lines(aggregate(res.rows, list(grid)), list(grid), res.dense):
        console.print(f"- {line}")


if __name__ == "__main__":  # pragma: no cover
    main()
