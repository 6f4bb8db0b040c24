"""Faults are errors, not tracebacks (issue 31, items 6 and 9; edgesparse/faults.py and the CLI's mapping)."""

from __future__ import annotations

import errno
import os
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

import edgesparse  # noqa: F401  (before tensorflow)
from edgesparse import faults
from edgesparse.cli import _handle_errors, main
from tests.conftest import ROOT, tiny_recipe


def _group_with(fn: Any) -> click.Group:
    @click.group()
    @click.option("--debug", is_flag=True)
    @click.pass_context
    def grp(ctx: click.Context, debug: bool) -> None:
        ctx.obj = {"debug": debug}

    grp.command("go")(_handle_errors(fn))
    return grp


def test_os_faults_are_one_paragraph_and_anything_else_one_line_with_a_log(tmp_path: Path) -> None:
    def full() -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "run" / "ckpt-1"))

    res = CliRunner().invoke(_group_with(full), ["go"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.startswith(f"Error: no space left on the device while writing '{tmp_path / 'run' / 'ckpt-1'}'")
    assert "--resume" in res.output and res.output.count("\n") == 1

    def bug() -> None:
        return {}["missing"]  # type: ignore[no-any-return]

    os.environ["EDGESPARSE_LOG_DIR"] = str(tmp_path)
    try:
        res = CliRunner().invoke(_group_with(bug), ["go"])
    finally:
        del os.environ["EDGESPARSE_LOG_DIR"]
    assert res.exit_code == 1 and res.output.count("\n") == 1
    assert res.output.startswith("Error: unexpected KeyError: 'missing'. Re-run with --debug")
    log = Path(res.output.rsplit("traceback in ", 1)[1].strip().rstrip("."))
    assert log.parent == tmp_path and "KeyError: 'missing'" in log.read_text()
    res = CliRunner().invoke(_group_with(bug), ["--debug", "go"])  # --debug keeps the traceback
    assert isinstance(res.exception, KeyError)


def test_permission_and_overflow_faults_are_described() -> None:
    msg = faults.describe(PermissionError(errno.EACCES, "Permission denied", "/srv/runs/x"))
    assert msg is not None and msg.startswith("permission denied while writing or reading '/srv/runs/x'")
    try:
        int(float("inf"))
    except OverflowError as exc:
        assert "2^31" in (faults.describe(exc) or "")
    assert faults.describe(ValueError("x")) is None


def test_profile_of_a_model_with_a_2_31_dimension_exits_1_without_traceback(tmp_path: Path) -> None:
    from edgesparse import _tf
    from edgesparse.export.convert import convert

    keras = _tf.keras()
    data = convert(keras.Sequential([keras.Input((8,)), keras.layers.Dense(5)]), "none")
    kernel = struct.pack("<iii", 2, 5, 8)  # the Dense kernel's shape vector [5, 8]
    assert data.count(kernel) == 1
    path = tmp_path / "big.tflite"
    path.write_bytes(data.replace(kernel, struct.pack("<iiI", 2, 5, 2**31)))
    res = CliRunner().invoke(main, ["profile", str(path), "--runs", "2", "--warmup", "0"])
    assert res.exit_code == 1 and res.output.startswith("Error: ") and "Traceback" not in res.output, res.output
    assert "overflow" in res.output.lower() or "2^31" in res.output


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="a full disk is a small tmpfs, which needs root")
def test_fault_injection_full_disk_and_two_concurrent_runs(tmp_path: Path) -> None:
    """Two runs started together on one directory: one runs, the other stops at once naming the first's pid.
    Then the run directory on a tmpfs too small for a checkpoint: exit 1 with the no-space paragraph."""
    recipe = tiny_recipe(tmp_path, baseline={"epochs": 1}, sparsity=None, export=None)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    cmd = [sys.executable, "-m", "edgesparse.cli", "train", str(path), "-o", str(tmp_path / "run")]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], outs  # before: both exit 0, the directory ends with the second run's model
    loser = outs[[p.returncode for p in procs].index(1)]
    assert "is in use by process" in loser and "Traceback" not in loser

    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "48k"):
        pytest.skip("cannot mount a tmpfs here")
    try:
        t0 = time.perf_counter()
        proc = subprocess.run([*cmd[:-1], str(disk / "run")], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "Error: no space left on the device" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert f"while writing '{disk / 'run'}/" in proc.stderr  # names the file (a checkpoint), not TF's device
        assert time.perf_counter() - t0 < 300
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_corrupt_tfrecord_mid_shard_names_the_file_and_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgesparse import _tf
    from edgesparse.data import load_dataset
    from edgesparse.errors import DataError

    monkeypatch.setenv("EDGESPARSE_CACHE", str(tmp_path / "cache"))
    tf = _tf.tf()
    paths = {}
    for split in ("train", "validation", "test"):
        paths[split] = tmp_path / f"{split}.tfrecord"
        with tf.io.TFRecordWriter(str(paths[split])) as w:
            for i in range(60):
                w.write(tf.train.Example(features=tf.train.Features(feature={
                    "x": tf.train.Feature(float_list=tf.train.FloatList(value=[float(i), 1.0, 2.0])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 3]))})).SerializeToString())
    data = bytearray(paths["test"].read_bytes())
    mid = len(data) // 2
    data[mid:mid + 16] = b"\xff" * 16  # damage mid-shard: records before it read, the rest do not
    paths["test"].write_bytes(bytes(data))
    cfg = {"tfrecord": {k: str(v) for k, v in paths.items()}, "x": "x", "y": "label",
           "features": {"x": {"shape": [3], "dtype": "float32"}}}
    with pytest.raises(DataError, match=rf"'{paths['test']}' \(test split\) is corrupt after \d+ readable records"):
        load_dataset(cfg, seed=0)


@pytest.mark.slow
def test_kill_9_then_resume_finishes_and_says_it_is_not_bit_reproducible(tmp_path: Path) -> None:
    """kill -9 mid-baseline: the lock dies with the process, --resume takes the directory and finishes, and
    the run says (output and summary.json) that it cannot reproduce the uninterrupted run."""
    import json
    import signal

    recipe = tiny_recipe(tmp_path, baseline={"epochs": 8}, sparsity=None, export=None)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    cmd = [sys.executable, "-m", "edgesparse.cli", "train", str(path)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = tmp_path / "run" / "history.csv"
    deadline = time.time() + 180
    while time.time() < deadline and not (history.exists() and history.read_text().count("\n") >= 3):
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "run" / "summary.json").exists()
    done = subprocess.run([*cmd, "--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "not bit-reproducible" in done.stdout + done.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert any("not bit-reproducible" in w for w in summary["warnings"])
