"""The device runner and the targets, against real models, a real sshd and real tool output."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgesparse.device.benchmark_model import (
    build_benchmark_command,
    parse_benchmark_output,
    parse_litert_benchmark,
)
from edgesparse.device.targets import ADBTarget, SSHTarget, list_adb_devices, parse_target
from edgesparse.errors import DeviceError, ProfileError

DATA = Path(__file__).parent / "data"
RUNNER = Path(__file__).resolve().parents[1] / "edgesparse" / "device" / "runner.py"


def _runner(*args: str, python: str = sys.executable) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run([python, str(RUNNER), *args], capture_output=True, text=True, timeout=300)
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


def test_runner_reports_latency_and_memory(tiny_tflite: dict[str, Path]) -> None:
    code, out = _runner(str(tiny_tflite["dense"]), "--runs", "30", "--warmup", "3")
    assert code == 0
    lat = out["latency_ms"]
    assert lat["min"] <= lat["median"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert len(out["samples_ms"]) == 30 and out["runs"] == 30
    assert out["init_ms"] > 0 and out["peak_rss_bytes"] >= out["baseline_rss_bytes"] > 0
    assert out["runtime"]["name"] == "ai_edge_litert" and out["resolver"] in ("xnnpack", "builtin")
    assert out["input"] == {"shape": [1, 8, 8, 1], "dtype": "float32"}


def test_runner_batch_checksum_is_stable_and_int8_io_quantized(tiny_tflite: dict[str, Path]) -> None:
    a = _runner(str(tiny_tflite["int8"]), "--runs", "2", "--input", str(tiny_tflite["batch"]))[1]
    b = _runner(str(tiny_tflite["int8"]), "--runs", "2", "--input", str(tiny_tflite["batch"]),
                "--resolver", "builtin")[1]
    assert a["outputs"]["count"] == 12 and len(a["outputs"]["argmax"]) == 12
    assert b["resolver"] == "builtin"
    assert a["outputs"]["argmax"] == b["outputs"]["argmax"]


@pytest.mark.parametrize(("args", "kind", "code"), [(["--runs", "0"], "bad_argument", 2),
                                                    (["--threads", "0"], "bad_argument", 2)])
def test_runner_bad_arguments(tiny_tflite: dict[str, Path], args: list[str], kind: str, code: int) -> None:
    rc, out = _runner(str(tiny_tflite["dense"]), *args)
    assert rc == code and out["kind"] == kind


def test_runner_garbage_model(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"junk" * 100)
    rc, out = _runner(str(bad))
    assert rc == 4 and out["kind"] == "load_failed"


def test_runner_without_runtime_names_the_pip_command(tiny_tflite: dict[str, Path]) -> None:
    # the system Python has numpy? not necessarily; use -S-less isolated mode with an empty path instead
    proc = subprocess.run([sys.executable, "-I", "-S", str(RUNNER), str(tiny_tflite["dense"])], capture_output=True,
                          text=True, timeout=60)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 3 and out["kind"] == "no_runtime" and "pip install" in out["fix"]


def test_local_target(tiny_tflite: dict[str, Path]) -> None:
    t = parse_target("local")
    res = t.run_runner(tiny_tflite["dense"], threads=2, runs=10, warmup=1)
    assert res["threads"] == 2 and res["latency_ms"]["median"] > 0
    with pytest.raises(ProfileError):
        t.run_runner(tiny_tflite["dense"], runs=0)


def test_parse_targets() -> None:
    t = parse_target("ssh://pi@raspberrypi.local:2222/home/pi/my%20models")
    assert isinstance(t, SSHTarget) and (t.user, t.host, t.port, t.dest) == ("pi", "raspberrypi.local", 2222,
                                                                             "/home/pi/my models")
    assert parse_target("ssh://pi@raspberrypi").dest == "~/edgesparse"
    assert isinstance(parse_target("adb://emulator-5554"), ADBTarget)
    assert parse_target("adb://emulator-5554").serial == "emulator-5554"
    with pytest.raises(DeviceError, match="did you mean 'ssh'"):
        parse_target("shh://pi@host")


# ---- ssh, against a real sshd on 127.0.0.1 -----------------------------------------------------


def _ssh(server: Any, **kw: Any) -> SSHTarget:
    opts = {"identity": str(server.identity), "known_hosts": str(server.known_hosts), "python": sys.executable, **kw}
    return parse_target(server.target, **opts)


def test_ssh_push_and_profile(sshd_server: Any, tiny_tflite: dict[str, Path], tmp_path: Path) -> None:
    t0 = time.perf_counter()
    target = _ssh(sshd_server)
    res = target.run_runner(tiny_tflite["int8"], runs=20, warmup=2, input_batch=tiny_tflite["batch"])
    assert res["latency_ms"]["median"] > 0 and res["outputs"]["count"] == 12
    assert time.perf_counter() - t0 < 15
    assert target.describe()["machine"]


def test_ssh_dest_with_spaces_quotes_and_substitution(sshd_server: Any, tiny_tflite: dict[str, Path],
                                                      tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    weird = tmp_path / f"dir with 'quotes' \"double\" $(touch {canary}) `touch {canary}`"
    target = _ssh(sshd_server)
    remote = target.push([tiny_tflite["int8"]], str(weird))
    assert Path(remote) == weird and (weird / "model int8.tflite").exists() and (weird / "runner.py").exists()
    res = target.run_runner(tiny_tflite["int8"], runs=3, warmup=0, remote_dir=remote)
    assert res["runs"] == 3
    assert not canary.exists()


def test_ssh_unknown_host_key(sshd_server: Any, tiny_tflite: dict[str, Path], tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    with pytest.raises(DeviceError, match="accept-new-host-key"):
        _ssh(sshd_server, known_hosts=str(kh)).push([tiny_tflite["dense"]], str(tmp_path / "d"))
    _ssh(sshd_server, known_hosts=str(kh), accept_new_host_key=True).push([tiny_tflite["dense"]], str(tmp_path / "d"))
    server_key = sshd_server.known_hosts.read_text().split()[-1]
    assert server_key in kh.read_text()  # trusted on first use, checked from now on


def test_ssh_refused_key(sshd_server: Any, tiny_tflite: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match="refused the login"):
        _ssh(sshd_server, identity=str(sshd_server.other_identity)).push([tiny_tflite["dense"]], str(tmp_path))


def test_ssh_unreachable() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    target = parse_target(f"ssh://nobody@127.0.0.1:{port}", connect_timeout=3)
    with pytest.raises(DeviceError, match="cannot reach"):
        target.push([RUNNER])


def test_ssh_device_without_runtime(sshd_server: Any, tiny_tflite: dict[str, Path], tmp_path: Path) -> None:
    # A Python on the device whose site-packages (numpy, LiteRT) are not importable.
    wrapper = tmp_path / "bare-python"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -I -S \"$@\"\n")
    wrapper.chmod(0o755)
    with pytest.raises(DeviceError, match="pip install numpy ai-edge-litert"):
        _ssh(sshd_server, python=str(wrapper)).run_runner(tiny_tflite["dense"], runs=1, warmup=0)


# ---- adb and the official tools' output --------------------------------------------------------


def test_parse_recorded_benchmark_model_output() -> None:
    q = parse_benchmark_output((DATA / "benchmark_model_qemu_aarch64.txt").read_text())
    assert q["runs"] == 50 and q["threads"] == 4
    assert q["latency_ms"]["mean"] == pytest.approx(2950.34) and q["latency_ms"]["min"] == pytest.approx(2727.568)
    assert q["init_ms"] == pytest.approx(17.187) and q["memory_mb"]["overall"] == pytest.approx(46.0859)
    a = parse_benchmark_output((DATA / "benchmark_model_android_yolov5s.txt").read_text())
    assert a["latency_ms"]["mean"] == pytest.approx(249.684) and a["latency_ms"]["median"] is None
    assert a["peak_rss_bytes"] == int(138.809 * 1024 * 1024)
    m = parse_benchmark_output((DATA / "benchmark_model_logcat_median.txt").read_text())
    assert m["latency_ms"]["median"] == pytest.approx(141.253) and m["runs"] == 25
    with pytest.raises(DeviceError, match="no timing summary"):
        parse_benchmark_output("ERROR: Could not open 'model.tflite'.\nBenchmarking failed.")


def test_parse_recorded_litert_benchmark_output() -> None:
    text = parse_litert_benchmark((DATA / "litert_benchmark_dense.txt").read_text())
    js = parse_litert_benchmark("", json.loads((DATA / "litert_benchmark_dense.json").read_text()))
    assert text["latency_ms"]["median"] == js["latency_ms"]["median"] > 0
    assert js["threads"] == 1 and js["runs"] == 50


def test_benchmark_command() -> None:
    cmd = build_benchmark_command("/data/local/tmp/edgesparse/benchmark_model", "/data/local/tmp/edgesparse/m.tflite",
                                  threads=4, runs=100, warmup=10)
    assert cmd[0].endswith("benchmark_model") and "--graph=/data/local/tmp/edgesparse/m.tflite" in cmd
    assert "--num_threads=4" in cmd and "--num_runs=100" in cmd and "--warmup_runs=10" in cmd


def test_adb_without_device_is_a_clear_error(tiny_tflite: dict[str, Path]) -> None:
    if list_adb_devices():
        pytest.skip("a device is attached; see test_adb_live")
    with pytest.raises(DeviceError, match="adb"):
        parse_target("adb").run_runner(tiny_tflite["dense"], runs=1)


@pytest.mark.skipif(not list_adb_devices(), reason="`adb devices` lists no device")
def test_adb_live(tiny_tflite: dict[str, Path]) -> None:  # pragma: no cover - needs a phone
    res = parse_target("adb").run_runner(tiny_tflite["dense"], runs=10, warmup=2)
    assert res["latency_ms"]["mean"] > 0
    _ = np
