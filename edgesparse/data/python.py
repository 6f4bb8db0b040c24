"""``{python: name}``: the data is given as Python objects to ``train(..., data=...)`` or ``analyze(..., data=...)``.

A recipe without a ``data:`` section gets this source when the call supplies the data; write it yourself to set
the batch size or the shuffle buffer of such data (``data: {python: mine, batch_size: 32}``). Loading it without
the objects is an error that says so. The splits, limit and other source fields do not apply.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from edgesparse.data.registry import Loaded, SourceConfig, data_source
from edgesparse.errors import DataError


class PythonDataConfig(SourceConfig):
    """``{python: name}``: data given to the API as objects (see :mod:`edgesparse.data.objects`)."""

    python: str = Field("data", min_length=1, description="a name for the data given as Python objects")


@data_source("python", PythonDataConfig)
def load_python(cfg: PythonDataConfig, seed: int, base_dir: Path | None) -> Loaded:
    """Always raises: the objects only exist in the calling process.

    Raises:
        DataError: always.
    """
    raise DataError(f"the recipe's data '{cfg.python}' was given as Python objects (data: {{python: ...}}), which "
                    "only exist in the process that passed them: call edgesparse.train(recipe, data={'train': ..., "
                    "'validation': ..., 'test': ...}) (or analyze/load_run with data=), or give the recipe a data "
                    "source such as {npz: data.npz} or {factory: 'pkg.module:function'}.")


__all__ = ["PythonDataConfig", "load_python"]
