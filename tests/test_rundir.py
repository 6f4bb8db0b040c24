"""One run per directory and no symlink followed out of it (issue 31, items 3-4; edgesparse/rundir.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import edgesparse  # noqa: F401  (before tensorflow)
from edgesparse import rundir
from edgesparse.errors import RunDirError
from tests.conftest import ROOT, tiny_recipe

_HOLDER = """
import sys, time
from pathlib import Path
from edgesparse import rundir
lock = rundir.lock_bundle(Path(sys.argv[2])) if sys.argv[1] == "bundle" else rundir.lock(Path(sys.argv[2]))
with lock:
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[object]:
    """Start a process that holds a lock; yields a function (kind, folder) -> the process."""
    procs: list[subprocess.Popen[str]] = []

    def start(kind: str, folder: Path) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-c", _HOLDER, kind, str(folder)], cwd=ROOT, text=True,
                                stdout=subprocess.PIPE)
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _recipe(tmp_path: Path, **sections: object) -> object:
    from edgesparse.recipe import validate_recipe

    return validate_recipe(tiny_recipe(tmp_path, baseline={"epochs": 1}, sparsity=None, **sections))


def test_a_second_run_on_a_locked_directory_stops_at_once_even_with_force(tmp_path: Path, holder: object) -> None:
    from edgesparse.run import train

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "state.json").write_text('{"done": {}}')  # what --force would delete
    proc = holder("run", run_dir)  # type: ignore[operator]
    t0 = time.perf_counter()
    for force in (False, True):
        with pytest.raises(RunDirError, match=rf"in use by process {proc.pid} since \d{{4}}-\d\d-\d\dT"):
            train(_recipe(tmp_path), run_dir=run_dir, force=force)
    assert time.perf_counter() - t0 < 5  # refused before any data or model was loaded
    assert (run_dir / "state.json").read_text() == '{"done": {}}' and not (run_dir / "recipe.lock.yaml").exists()
    os.kill(proc.pid, signal.SIGKILL)  # the kernel drops a dead process's lock: nothing to break by hand
    proc.wait()
    with rundir.lock(run_dir):
        pass


def test_a_locked_bundle_stops_a_run_that_exports_there(tmp_path: Path, holder: object) -> None:
    from edgesparse.run import train

    bundle = tmp_path / "bundle"
    proc = holder("bundle", bundle)  # type: ignore[operator]
    with pytest.raises(RunDirError, match=rf"bundle folder '{bundle}' is in use by process {proc.pid}"):
        train(_recipe(tmp_path), run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "recipe.lock.yaml").exists()


def test_inside_refuses_paths_through_a_symlink(tmp_path: Path) -> None:
    root, outside = tmp_path / "run", tmp_path / "elsewhere"
    (outside / "baseline").mkdir(parents=True)
    root.mkdir()
    (root / "backup").symlink_to(outside, target_is_directory=True)
    with pytest.raises(RunDirError, match="backup' is a symbolic link"):
        rundir.remove_tree(root, root / "backup" / "baseline")
    with pytest.raises(RunDirError, match="not inside"):
        rundir.inside(root, tmp_path / "x")
    assert (outside / "baseline").is_dir()
    linked_root = tmp_path / "runlink"
    linked_root.symlink_to(root, target_is_directory=True)  # the run directory itself may be a link
    assert rundir.inside(linked_root, linked_root / "logs") == linked_root / "logs"


def test_a_planted_backup_or_logs_symlink_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    from edgesparse.run import train

    outside = tmp_path / "precious"
    for sub in ("baseline", "sparsity"):
        (outside / sub).mkdir(parents=True)
        (outside / sub / "keep.txt").write_text("data")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "state.json").write_text('{"done": {}}')
    (run_dir / "backup").symlink_to(outside, target_is_directory=True)
    with pytest.raises(RunDirError, match="backup' is a symbolic link"):  # before: rc 0, outside deleted
        train(_recipe(tmp_path), run_dir=run_dir, force=True)
    (run_dir / "backup").unlink()
    (run_dir / "state.json").unlink()
    (run_dir / "logs").symlink_to(outside, target_is_directory=True)
    with pytest.raises(RunDirError, match="logs' is a symbolic link"):  # before: TensorBoard wrote through it
        train(_recipe(tmp_path, export=None), run_dir=run_dir)
    assert sorted(p.name for p in outside.iterdir()) == ["baseline", "sparsity"]
    assert all((outside / sub / "keep.txt").read_text() == "data" for sub in ("baseline", "sparsity"))
