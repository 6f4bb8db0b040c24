"""The ``edgesparse`` command: parse -> one library call -> render.

EdgesparseError -> exit 1 with a one-paragraph message (traceback with --debug); usage errors -> 2.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgesparse.errors import EdgesparseError


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 120  # pipes and CI logs: do not squeeze tables to 80 columns
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


def _handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn EdgesparseError (and Ctrl-C) into exit code 1 with a readable paragraph."""

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

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="edgesparse")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Prune, quantize, export, verify and profile Keras models as sparse TFLite models."""
    ctx.obj = {"debug": debug}


def _log(console: Any) -> Callable[[str], None]:
    return lambda msg: console.print(f"[dim]·[/dim] {msg}")


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override a recipe field.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last checkpoint.")
@click.option("-o", "--output-dir", type=click.Path(path_type=Path), help="Run directory (default runs/NAME).")
@click.option("--no-export", is_flag=True, help="Skip export and verification.")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json instead of the table.")
@_handle_errors
def train(recipe: Path, overrides: tuple[str, ...], resume: bool, output_dir: Path | None, no_export: bool,
          as_json: bool) -> None:
    """Train, prune, quantize, export and verify a RECIPE end to end."""
    from edgesparse.recipe import load_recipe
    from edgesparse.train.pipeline import train as run

    rec = load_recipe(recipe, overrides)
    console = _console(stderr=as_json)
    result = run(rec, resume=resume, run_dir=output_dir, export=not no_export, log=_log(console))
    if as_json:
        click.echo(json.dumps(result.summary, indent=2, default=str))
        return
    from edgesparse.report import comparison_table

    console.print(comparison_table(result.summary))
    for w in result.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")
    console.print(f"run directory: {result.run_dir}  (summary.json, history.csv, logs/)")


@main.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Bundle folder (default export/NAME).")
@_handle_errors
def export(run_dir: Path, output: Path | None) -> None:
    """Convert and verify the models of a finished RUN_DIR."""
    from edgesparse.export import export_run

    console = _console()
    res = export_run(run_dir, output, log=_log(console))
    v = res.info.get("verification", {})
    console.print(f"wrote {res.model_path} ({res.info['model']['bytes']:,} bytes, "
                  f"gzip {res.info['model']['gzip_bytes']:,}); TFLite accuracy "
                  f"{v.get('accuracy', float('nan')):.2%}, agreement {v.get('agreement', float('nan')):.2%}, "
                  f"resolver {v.get('resolver')}")


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the inspection as JSON.")
@_handle_errors
def inspect(model: Path, as_json: bool) -> None:
    """Show how MODEL.tflite stores its weights (dense, CSR, blocks) and its DENSIFY ops."""
    from edgesparse.export.inspect import inspect_tflite

    info = inspect_tflite(model)
    if as_json:
        click.echo(json.dumps(info.to_dict(), indent=2, default=str))
        return
    from edgesparse.report import inspection_table

    _console().print(inspection_table(info.to_dict()))


@main.command()
@_handle_errors
def schema() -> None:
    """Print the recipe's JSON schema (for editors' YAML support)."""
    from edgesparse.recipe import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE")
@_handle_errors
def validate(recipe: Path, overrides: tuple[str, ...]) -> None:
    """Validate a RECIPE and print it fully resolved."""
    from edgesparse.recipe import dump_recipe, load_recipe

    click.echo(dump_recipe(load_recipe(recipe, overrides)), nl=False)


if __name__ == "__main__":  # pragma: no cover
    main()
