"""``local``: the runner as a subprocess of this machine's Python.

A subprocess rather than a function call so the peak RSS it reports is the model's and the
runtime's, not this process's TensorFlow, and so a crash in a runtime cannot take the host down.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesparse.device.targets.base import (
    RUNNER,
    TARGETS,
    TargetSpec,
    check_options,
    interpret_runner_output,
    run_process,
    runner_args,
)
from edgesparse.errors import DeviceError


@dataclass
class LocalTarget:
    """This machine. ``python`` runs the runner (default: the current interpreter)."""

    python: str = sys.executable
    last: dict[str, Any] = field(default_factory=dict, repr=False)
    _described: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return "local"

    def push(self, files: Sequence[Path], dest: str | None = None) -> str:
        """Copy ``files`` and the runner into ``dest`` (default: a new temporary folder)."""
        folder = Path(dest).expanduser() if dest else Path(tempfile.mkdtemp(prefix="edgesparse-local-"))
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for f in [*map(Path, files), RUNNER]:
                target = folder / f.name
                if not target.exists() or f.resolve() != target.resolve():
                    shutil.copy2(f, target)
        except OSError as exc:
            raise DeviceError(f"copying to {folder} failed: {exc}") from None
        return str(folder)

    def run_runner(self, model: Path, *, threads: int = 1, runs: int = 100, warmup: int = 10,
                   resolver: str = "auto", input_batch: Path | None = None,
                   input_shape: Sequence[int] | None = None, remote_dir: str | None = None,
                   timeout: float = 600, api: str = "interpreter", min_seconds: float = 0.0,
                   paired: Path | None = None, return_outputs: bool = False) -> dict[str, Any]:
        """Run the runner here (see :class:`~edgesparse.device.targets.base.Target`)."""
        base = Path(remote_dir) if remote_dir else None
        model_path = str(base / Path(model).name) if base else str(model)
        batch = None
        if input_batch is not None:
            batch = str(base / Path(input_batch).name) if base else str(input_batch)
        ref = None
        if paired is not None:
            ref = str(base / Path(paired).name) if base else str(paired)
        script = base / RUNNER.name if base and (base / RUNNER.name).exists() else RUNNER
        cmd = [self.python, str(script), *runner_args(model_path, threads=threads, runs=runs, warmup=warmup,
                                                      resolver=resolver, input_batch=batch, input_shape=input_shape,
                                                      api=api, min_seconds=min_seconds, paired=ref,
                                                      return_outputs=return_outputs)]
        proc = run_process(cmd, what="the runner on this machine", timeout=timeout)
        self.last = interpret_runner_output(proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"),
                                            proc.returncode, "this machine", self.python)
        return self.last

    def describe(self) -> dict[str, Any]:
        """Host, machine, Python and runtime of this machine's runner interpreter."""
        if self._described is None:
            proc = run_process([self.python, str(RUNNER), "--describe"], what="describing this machine", timeout=120)
            self._described = interpret_runner_output(proc.stdout.decode(errors="replace"),
                                                      proc.stderr.decode(errors="replace"), proc.returncode,
                                                      "this machine", self.python)
        return {"name": self.name, **self._described}


@TARGETS.register("local")
def _local(spec: TargetSpec, **options: Any) -> LocalTarget:
    if spec.text.strip() != "local":
        raise DeviceError(f"the local target takes no address: write `local`, not `{spec.text}`.")
    opts = check_options("local", options, ["python"])
    return LocalTarget(python=opts.get("python") or sys.executable)
