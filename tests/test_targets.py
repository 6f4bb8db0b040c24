"""Targets against real components: the runner as a subprocess, a real sshd on 127.0.0.1 (tests/sshd.py),
the installed litert-benchmark, and recorded benchmark_model logs (see tests/data/README.md).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edgesparse.device.benchmark_model import (
    build_benchmark_command,
    delegate_failure,
    parse_benchmark_output,
    parse_litert_benchmark,
    run_litert_benchmark,
)
from edgesparse.device.targets import (
    RUNNER,
    ADBTarget,
    LocalTarget,
    SSHTarget,
    Target,
    list_adb_devices,
    parse_target,
    split_target,
)
from edgesparse.device.targets.ssh import remote_path
from edgesparse.errors import DeviceError, ProfileError
from tests.sshd import SSHServer

DATA = Path(__file__).parent / "data"


# ---- parsing target strings -------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("ssh://pi@raspberrypi.local:2222/home/pi/my%20models",
     {"user": "pi", "host": "raspberrypi.local", "port": 2222, "dest": "/home/pi/my models"}),
    ("ssh://pi@raspberrypi", {"user": "pi", "host": "raspberrypi", "port": 22, "dest": "~/edgesparse"}),
    ("ssh://pi@raspberrypi/~/models", {"dest": "~/models"}),
    ("ssh://board", {"user": None, "host": "board"}),
    ("ssh://root@[::1]:2200/tmp/x", {"host": "::1", "port": 2200, "dest": "/tmp/x"}),
])
def test_parse_ssh_targets(text: str, expected: dict[str, Any]) -> None:
    target = parse_target(text)
    assert isinstance(target, SSHTarget)
    assert {k: getattr(target, k) for k in expected} == expected


def test_parse_local_and_adb_targets() -> None:
    assert isinstance(parse_target("local"), LocalTarget)
    assert parse_target("adb").serial is None
    assert parse_target("adb://emulator-5554").serial == "emulator-5554"
    assert parse_target("adb://192.168.1.5:5555").serial == "192.168.1.5:5555"  # network serials keep their port
    assert parse_target("adb://R58M12ABC").serial == "R58M12ABC"  # serials keep their case
    assert split_target("SSH://pi@h").scheme == "ssh"


@pytest.mark.parametrize(("text", "options", "message"), [
    ("shh://pi@host", {}, "did you mean 'ssh'"),
    ("usb", {}, "known: adb, local, ssh"),
    ("ssh://pi@host:abc/x", {}, "not a number"),
    ("ssh:///home/pi", {}, "needs a host"),
    ("local://somewhere", {}, "takes no address"),
    ("  ", {}, "empty target"),
    ("adb", {"identity": "~/.ssh/id_ed25519"}, "identity do not apply to adb"),
    ("local", {"benchmark_binary": "bm"}, "do not apply to local"),
])
def test_bad_targets_say_what_is_wrong(text: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(DeviceError, match=message):
        parse_target(text, **options)


def test_unset_options_are_ignored() -> None:
    # the CLI passes every flag; unset ones (None/False) must not trip the per-kind check
    t = parse_target("adb", identity=None, known_hosts=None, accept_new_host_key=False, python=None)
    assert isinstance(t, ADBTarget)


def test_every_target_follows_the_protocol() -> None:
    """Each target's methods take exactly the Protocol's parameters with the same defaults (callers pass them
    by keyword, so a renamed or dropped parameter would only fail on that kind of device)."""
    import inspect

    members = [m for m in ("run_runner", "push", "describe") if hasattr(Target, m)]
    assert "run_runner" in members
    for text in ("local", "ssh://pi@host", "adb"):
        target = parse_target(text)
        for member in members:
            want = inspect.signature(getattr(Target, member)).parameters
            got = inspect.signature(getattr(type(target), member)).parameters
            assert [(p.name, p.kind, p.default) for p in got.values()] == \
                [(p.name, p.kind, p.default) for p in want.values()], (text, member)
        assert isinstance(target.name, str) and target.name.startswith(text.split(":")[0])


def test_remote_paths_are_quoted_for_the_remote_shell() -> None:
    assert remote_path("~/edgesparse") == '"$HOME"/edgesparse'
    assert remote_path("~") == '"$HOME"'
    assert remote_path("/tmp/a b/$(rm -rf x)") == "'/tmp/a b/$(rm -rf x)'"


# ---- local ------------------------------------------------------------------------------------


def test_local_target_runs_describes_and_reports_errors(tiny_tflite: dict[str, Path], tmp_path: Path) -> None:
    t = parse_target("local")
    res = t.run_runner(tiny_tflite["dense"], threads=2, runs=10, warmup=1)
    assert res["threads"] == 2 and res["runs"] == 10 and res["latency_ms"]["median"] > 0
    d = t.describe()
    assert d["name"] == "local" and d["machine"] and d["python"] and d["runtime"]["name"] == "ai_edge_litert"
    with pytest.raises(ProfileError, match="--runs must be >= 1"):
        t.run_runner(tiny_tflite["dense"], runs=0)
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model")
    with pytest.raises(ProfileError, match="cannot run the model"):
        t.run_runner(bad, runs=1)


def test_local_push_copies_the_bundle_and_runs_from_it(tiny_tflite: dict[str, Path], tmp_path: Path) -> None:
    t = parse_target("local")
    dest = t.push([tiny_tflite["int8"], tiny_tflite["batch"]], str(tmp_path / "bundle"))
    assert sorted(p.name for p in Path(dest).iterdir()) == sorted(["model int8.tflite", "batch.npy", "runner.py"])
    res = t.run_runner(tiny_tflite["int8"], runs=2, warmup=0, input_batch=tiny_tflite["batch"], remote_dir=dest)
    assert res["outputs"]["count"] == 12


def test_local_python_without_runtime_is_a_device_error(tiny_tflite: dict[str, Path], tmp_path: Path) -> None:
    bare = _bare_python(tmp_path)
    with pytest.raises(DeviceError, match=r"-m pip install ai-edge-litert"):
        parse_target("local", python=str(bare)).run_runner(tiny_tflite["dense"], runs=1)
    with pytest.raises(DeviceError, match="not installed"):
        parse_target("local", python=str(tmp_path / "no-python")).run_runner(tiny_tflite["dense"], runs=1)


def _bare_python(tmp_path: Path) -> Path:
    """This Python without site-packages: neither numpy nor a TFLite runtime imports."""
    wrapper = tmp_path / "bare-python"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -I -S \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper


# ---- ssh, against a real sshd on 127.0.0.1 ----------------------------------------------------


def _ssh(server: SSHServer, **options: Any) -> SSHTarget:
    opts = {"identity": str(server.identity), "known_hosts": str(server.known_hosts), "python": sys.executable,
            **options}
    return parse_target(server.target, **opts)


def test_ssh_push_and_profile_round_trip(sshd_server: SSHServer, tiny_tflite: dict[str, Path], tmp_path: Path,
                                         record_property: Any) -> None:
    target = parse_target(f"{sshd_server.target}{tmp_path}/on%20device", identity=str(sshd_server.identity),
                          known_hosts=str(sshd_server.known_hosts), python=sys.executable)
    assert target.dest == f"{tmp_path}/on device"
    t0 = time.perf_counter()
    res = target.run_runner(tiny_tflite["int8"], runs=20, warmup=2, input_batch=tiny_tflite["batch"])
    elapsed = time.perf_counter() - t0
    record_property("ssh_push_and_profile_s", round(elapsed, 3))
    assert res["runs"] == 20 and res["latency_ms"]["median"] > 0 and res["outputs"]["count"] == 12
    assert elapsed < 15, f"push + profile over loopback ssh took {elapsed:.1f} s"
    local = parse_target("local").run_runner(tiny_tflite["int8"], runs=2, warmup=0, input_batch=tiny_tflite["batch"])
    assert res["outputs"]["checksum"] == local["outputs"]["checksum"]
    d = target.describe()
    assert d["name"] == sshd_server.target and d["machine"] and d["python"] and d["runtime"]["name"]
    assert (tmp_path / "on device" / "model int8.tflite").exists()
    # the same files again: not copied a second time
    before = (tmp_path / "on device" / "runner.py").stat().st_mtime_ns
    target.run_runner(tiny_tflite["int8"], runs=1, warmup=0, input_batch=tiny_tflite["batch"])
    assert (tmp_path / "on device" / "runner.py").stat().st_mtime_ns == before


def test_ssh_dest_under_the_remote_home(sshd_server: SSHServer, tiny_tflite: dict[str, Path]) -> None:
    name = f".cache/edgesparse-test-{os.getpid()}"
    try:
        remote = _ssh(sshd_server).push([tiny_tflite["dense"]], f"~/{name}")
        assert Path(remote) == Path.home() / name and (Path(remote) / "dense.tflite").exists()
    finally:
        shutil.rmtree(Path.home() / name, ignore_errors=True)


def test_ssh_dest_with_spaces_quotes_and_substitutions_injects_nothing(sshd_server: SSHServer,
                                                                       tiny_tflite: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    weird = tmp_path / f"dir with 'single' \"double\" $(touch {canary}) `touch {canary}`; touch {canary} &&"
    target = _ssh(sshd_server)
    remote = target.push([tiny_tflite["int8"], tiny_tflite["batch"]], str(weird))
    assert Path(remote) == weird
    assert sorted(p.name for p in weird.iterdir()) == sorted(["model int8.tflite", "batch.npy", "runner.py"])
    res = target.run_runner(tiny_tflite["int8"], runs=3, warmup=0, input_batch=tiny_tflite["batch"], remote_dir=remote)
    assert res["runs"] == 3 and res["outputs"]["count"] == 12
    assert not canary.exists()


def test_ssh_unknown_host_key_is_refused_then_accepted_on_request(sshd_server: SSHServer,
                                                                 tiny_tflite: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    with pytest.raises(DeviceError, match="accept-new-host-key") as info:
        _ssh(sshd_server, known_hosts=str(known)).push([tiny_tflite["dense"]], str(tmp_path / "d"))
    assert "ssh-keyscan" in str(info.value)
    _ssh(sshd_server, known_hosts=str(known), accept_new_host_key=True).push([tiny_tflite["dense"]],
                                                                            str(tmp_path / "d"))
    host_key = sshd_server.known_hosts.read_text().split()[-1]
    assert host_key in known.read_text()  # trusted on first use, checked from now on
    _ssh(sshd_server, known_hosts=str(known)).push([tiny_tflite["dense"]], str(tmp_path / "d"))


def test_ssh_changed_host_key_is_refused(sshd_server: SSHServer, tiny_tflite: dict[str, Path],
                                         tmp_path: Path) -> None:
    for accept in (False, True):  # accept-new never accepts a CHANGED key
        with pytest.raises(DeviceError, match="CHANGED"):
            _ssh(sshd_server, known_hosts=str(sshd_server.changed_known_hosts),
                 accept_new_host_key=accept).push([tiny_tflite["dense"]], str(tmp_path))


def test_ssh_refused_key(sshd_server: SSHServer, tiny_tflite: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match="refused the login") as info:
        _ssh(sshd_server, identity=str(sshd_server.other_identity)).push([tiny_tflite["dense"]], str(tmp_path))
    assert "authorized_keys" in str(info.value)


def test_ssh_missing_identity_file(sshd_server: SSHServer, tiny_tflite: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match="does not exist"):
        _ssh(sshd_server, identity=str(tmp_path / "no_key")).push([tiny_tflite["dense"]], str(tmp_path))


def test_ssh_unreachable_port() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    target = parse_target(f"ssh://nobody@127.0.0.1:{port}", connect_timeout=3)
    with pytest.raises(DeviceError, match="cannot reach 127.0.0.1"):
        target.push([RUNNER])


def test_ssh_device_without_runtime_names_the_pip_command(sshd_server: SSHServer, tiny_tflite: dict[str, Path],
                                                          tmp_path: Path) -> None:
    bare = _bare_python(tmp_path)
    target = _ssh(sshd_server, python=str(bare))
    with pytest.raises(DeviceError, match="has no TFLite runtime") as info:
        target.run_runner(tiny_tflite["dense"], runs=1, warmup=0)
    assert f"{bare} -m pip install ai-edge-litert" in str(info.value)
    assert "tflite-runtime 'numpy<2'" in str(info.value)
    assert target.describe()["runtime"] is None  # describing still works, and says there is no runtime


def test_ssh_device_without_that_python(sshd_server: SSHServer, tiny_tflite: dict[str, Path]) -> None:
    with pytest.raises(DeviceError, match="cannot start"):
        _ssh(sshd_server, python="/nonexistent/python3").run_runner(tiny_tflite["dense"], runs=1)


def test_ssh_model_errors_are_profile_errors(sshd_server: SSHServer, tmp_path: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"junk" * 64)
    with pytest.raises(ProfileError, match="cannot run the model"):
        _ssh(sshd_server).run_runner(bad, runs=1)


def test_ssh_to_a_raspberry_pi_os_like_python(sshd_server: SSHServer, tiny_tflite: dict[str, Path]) -> None:
    """Python 3.9 + tflite-runtime 2.14 + numpy<2, the stack Raspberry Pi OS users have, through ssh."""
    from tests.pi import device_python

    python = device_python()  # skips (or fails in CI as root) with why
    res = _ssh(sshd_server, python=python).run_runner(tiny_tflite["int8"], runs=5, warmup=1,
                                                      input_batch=tiny_tflite["batch"])
    assert res["runtime"]["name"] == "tflite_runtime" and res["outputs"]["count"] == 12


# ---- adb --------------------------------------------------------------------------------------


def test_adb_without_adb_or_device_is_a_clear_error(tiny_tflite: dict[str, Path]) -> None:
    if list_adb_devices():
        pytest.skip("a device is attached; see test_adb_live")
    expected = "not installed" if shutil.which("adb") is None else "no Android device"
    with pytest.raises(DeviceError, match=expected):
        parse_target("adb").run_runner(tiny_tflite["dense"], runs=1)


@pytest.mark.skipif(not list_adb_devices(), reason="`adb devices` lists no device")
def test_adb_live(tiny_tflite: dict[str, Path]) -> None:  # pragma: no cover - needs a phone
    res = parse_target("adb", benchmark_binary=os.environ.get("EDGESPARSE_BENCHMARK_MODEL")).run_runner(
        tiny_tflite["dense"], runs=10, warmup=2)
    assert res["latency_ms"]["mean"] > 0


def test_benchmark_command_runs_exactly_what_was_asked() -> None:
    cmd = build_benchmark_command("/data/local/tmp/edgesparse/benchmark_model", "/data/local/tmp/edgesparse/m.tflite",
                                  threads=4, runs=100, warmup=10)
    assert cmd[0] == "/data/local/tmp/edgesparse/benchmark_model"
    for flag in ("--graph=/data/local/tmp/edgesparse/m.tflite", "--num_threads=4", "--num_runs=100",
                 "--warmup_runs=10", "--min_secs=0", "--warmup_min_secs=0", "--use_xnnpack=true",
                 "--report_peak_memory_footprint=true"):
        assert flag in cmd
    assert "--use_xnnpack=false" in build_benchmark_command("bm", "m", threads=1, runs=1, warmup=0, use_xnnpack=False)


# ---- recorded benchmark_model output (real runs published by others: tests/data/README.md) -----


def test_parse_benchmark_model_with_op_profiling_ignores_the_profiler_stats() -> None:
    r = parse_benchmark_output((DATA / "benchmark_model_qemu_riscv64_op_profiling.txt").read_text())
    # the measured run, not "Timings (microseconds): count=50 first=2989660 ..." of the op profiler below it
    assert r["runs"] == 50 and r["latency_ms"]["min"] == pytest.approx(2727.568)
    assert r["latency_ms"]["mean"] == pytest.approx(2950.34) and r["latency_ms"]["max"] == pytest.approx(3189.954)
    assert r["latency_ms"]["std"] == pytest.approx(109.798) and r["latency_ms"]["median"] is None
    assert r["threads"] == 4 and r["init_ms"] == pytest.approx(17.187)
    assert r["first_invoke_ms"] == pytest.approx(3512.391)
    assert r["memory_delta_mb"] == {"init": pytest.approx(4.21094), "overall": pytest.approx(46.0859)}
    assert r["peak_rss_bytes"] is None  # a delta from the tool's start is not a peak RSS
    assert r["model_mb"] == pytest.approx(16.9008)


def test_parse_benchmark_model_raspberry_pi_and_android_logs() -> None:
    pi = parse_benchmark_output((DATA / "benchmark_model_raspberrypi_xnnpack_int8.txt").read_text())
    assert pi["runs"] == 50 and pi["latency_ms"]["mean"] == pytest.approx(55.0432)
    assert pi["latency_ms"]["min"] == pytest.approx(53.077) and pi["warmup_avg_ms"] == pytest.approx(57.7582)
    android = parse_benchmark_output((DATA / "benchmark_model_android_espcn.txt").read_text())
    assert android["latency_ms"]["mean"] == pytest.approx(33.2094) and android["init_ms"] == pytest.approx(0.855)
    assert android["memory_delta_mb"]["overall"] == pytest.approx(12.8672)  # older "Peak memory footprint" wording


def test_parse_benchmark_model_line_variants_from_its_source() -> None:
    # NOT recorded runs: single lines written from the format in tsl/util/stats_calculator.h and
    # benchmark_model.cc (no published log with these variants was found), with a logcat prefix.
    head = "I tflite  : Inference timings in us: Init: 1200, First inference: 5000, Warmup (avg): 4000, "
    same = parse_benchmark_output("I tflite  : count=20 curr=3000(all same)\n" + head + "Inference (avg): 3000\n")
    assert same["latency_ms"]["min"] == same["latency_ms"]["max"] == same["latency_ms"]["mean"] == 3.0
    assert same["latency_ms"]["std"] == 0.0 and same["runs"] == 20
    pct = parse_benchmark_output(
        "I tflite  : count=25 first=4100 curr=3900 min=3800 max=4500 avg=3950.5 std=120 p5=3810 median=3920 p95=4400\n"
        + head + "Inference (avg): 3950.5\n"
        "I tflite  : Overall peak memory footprint (MB) via periodic monitoring: 21.5\n")
    assert pct["latency_ms"]["median"] == pytest.approx(3.92) and pct["latency_ms"]["p95"] == pytest.approx(4.4)
    assert pct["peak_rss_bytes"] == int(21.5 * 1024 * 1024)


def test_benchmark_model_failure_is_a_device_error_quoting_it() -> None:
    text = "ERROR: Could not open 'model.tflite'.\nBenchmarking failed."
    with pytest.raises(DeviceError, match="Benchmarking failed"):
        parse_benchmark_output(text)
    assert delegate_failure("INFO: ok\nERROR: failed to delegate FULLY_CONNECTED node #5\n") == (
        "ERROR: failed to delegate FULLY_CONNECTED node #5")
    assert delegate_failure("all good") is None


# ---- litert-benchmark (ai-edge-litert's console script): recorded here, and live ----------------


def test_parse_recorded_litert_benchmark_output() -> None:
    text = parse_litert_benchmark((DATA / "litert_benchmark_dense.txt").read_text())
    js = parse_litert_benchmark("", json.loads((DATA / "litert_benchmark_dense.json").read_text()))
    for r in (text, js):
        assert r["threads"] == 1 and r["runs"] == 50 and r["warmup"] == 5 and r["fully_accelerated"] is True
        assert r["latency_ms"]["median"] == pytest.approx(0.06) and r["init_ms"] == pytest.approx(3.38)
    assert text["latency_ms"] == js["latency_ms"]
    with pytest.raises(DeviceError, match="Failed to allocate tensors"):
        parse_litert_benchmark((DATA / "litert_benchmark_sparse_int8_failure.txt").read_text())


def test_litert_benchmark_live_agrees_with_its_own_text_output(tiny_tflite: dict[str, Path], tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("litert-benchmark")
    if not exe.exists():
        pytest.fail(f"{exe} is missing: ai-edge-litert installs it (pip install ai-edge-litert)")
    result = tmp_path / "r.json"
    proc = subprocess.run([str(exe), "--model", str(tiny_tflite["dense"]), "--num_runs", "20", "--warmup_runs", "2",
                           "--num_threads", "1", "--result_json", str(result)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-1000:]
    from_text = parse_litert_benchmark(proc.stdout + proc.stderr)
    from_json = parse_litert_benchmark("", json.loads(result.read_text()))
    assert from_text["latency_ms"] == from_json["latency_ms"] and from_text["runs"] == from_json["runs"] == 20
    ran = run_litert_benchmark(tiny_tflite["dense"], threads=1, runs=5, warmup=1)
    assert ran["runs"] == 5 and ran["latency_ms"]["median"] is not None
    with pytest.raises(DeviceError, match="litert-benchmark failed"):  # XNNPACK refuses it, no fallback there
        run_litert_benchmark(tiny_tflite["int8"], runs=2, warmup=0)


def test_benchmark_command_min_secs_and_runner_args() -> None:
    from edgesparse.device.targets.base import runner_args

    assert "--min_secs=1.5" in build_benchmark_command("bm", "m", threads=1, runs=1, warmup=0, min_secs=1.5)
    args = runner_args("m.tflite", threads=2, runs=50, warmup=5, resolver="auto")
    assert "--api" not in args and "--min-seconds" not in args  # defaults stay implicit (older runners)
    args = runner_args("m.tflite", threads=2, runs=50, warmup=5, resolver="auto", api="compiled", min_seconds=2)
    assert args[args.index("--api") + 1] == "compiled" and args[args.index("--min-seconds") + 1] == "2.0"
    assert "--return-outputs" not in args and "--return-outputs" not in runner_args(
        "m.tflite", threads=1, runs=1, warmup=0, resolver="auto", return_outputs=True)  # only with a batch
    args = runner_args("m.tflite", threads=1, runs=1, warmup=0, resolver="auto", input_batch="b.npz",
                       return_outputs=True)
    assert args[-3:] == ["--input", "b.npz", "--return-outputs"]
