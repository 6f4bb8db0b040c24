"""Deploy and profile on an emulated Raspberry Pi: Debian bookworm arm64 (Raspberry Pi OS's base, Python
3.11) under qemu-user, reached over SSH (``.ci/pi-emulator.sh``, fixture in tests/pi.py).

The device runs the runner with tflite-runtime 2.14 + numpy<2 (what Raspberry Pi OS users install)
and, in a second venv, ai-edge-litert 2.1 (the newest LiteRT that loads under qemu: 2.2/2.3 crash
reading the host's /proc/cpuinfo; when it does not install, the litert tests skip saying why, and in CI as root
the build fails with pip's log). Its outputs must match this machine's exactly: top-1 agreement
100% and equal output checksums. Models are tiny real ones trained here.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from edgesparse.cli import main
from edgesparse.device.emulation import EMULATED_LABEL
from edgesparse.device.targets import parse_target
from edgesparse.errors import DeviceError, EdgesparseError, ProfileError
from tests.conftest import LOGITS_HALF, tiny_recipe
from tests.pi import PiDevice, device_python, litert_python, pi_device  # noqa: F401  (fixture)

# the first test also waits for the fixture, which builds the device when it is not cached (5-10 min)
pytestmark = [pytest.mark.pi, pytest.mark.timeout(2400)]

TFLITE_RUNTIME = "/opt/venv/bin/python"
LITERT = "/opt/venv-litert/bin/python"


def _cli(*args: str) -> Any:
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def int8_block_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A tiny CNN pruned to 75% with 1x16 blocks and quantized to int8 post-training (sparse int8 export)."""
    from edgesparse.recipe import validate_recipe
    from edgesparse.run import train

    tmp = tmp_path_factory.mktemp("int8block")
    recipe = tiny_recipe(tmp, quantization={"mode": "int8"}, sparsity={"pattern": "block:1x16", "layers": [LOGITS_HALF]},
                         export={"sparse_encoding": True, "objective": "size"})  # keep the int8 block-sparse file
    return train(validate_recipe(recipe))


@pytest.fixture(scope="module")
def two_io_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Two inputs (img, meta) and two heads (cls softmax, box linear), pruned to 80% and exported int8."""
    import numpy as np

    from edgesparse.recipe import validate_recipe
    from edgesparse.run import train

    tmp = tmp_path_factory.mktemp("two_io")
    rng = np.random.default_rng(7)
    img, meta = rng.random((400, 8, 8, 1)).astype(np.float32), rng.normal(size=(400, 3)).astype(np.float32)
    cls = np.argmax(np.c_[meta, img[:, :4].mean(axis=(1, 2, 3)) * 4 - 2], axis=1)
    np.savez(tmp / "two.npz", x_img=img, x_meta=meta, y_cls=cls, y_box=(meta * 0.5).astype(np.float32)[:, [0, 1, 2, 0]])
    recipe = tiny_recipe(tmp, data={"npz": str(tmp / "two.npz")}, model={"factory": "tests.factories:two_in_two_out"},
                         task={"outputs": {"cls": {"kind": "classification"}, "box": {"kind": "regression"}}},
                         baseline={"epochs": 6, "optimizer": {"learning_rate": 0.01}},
                         sparsity={"final": 0.8, "end": 1, "epochs": 2}, quantization={"mode": "int8"},
                         export={"objective": "size", "sparse_encoding": False})
    return train(validate_recipe(recipe))


def test_deploy_two_inputs_two_outputs_on_the_pi_compares_every_head(pi_device: PiDevice, two_io_run: Any,
                                                                      tmp_path: Path) -> None:
    """tflite-runtime 2.14 on the device feeds both inputs and returns both outputs by name, like the host."""
    r = _cli("deploy", two_io_run.run_dir, *pi_device.cli_args(TFLITE_RUNTIME), "--json", tmp_path / "deploy.json")
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "deploy.json").read_text())
    assert set(res["outputs"]) == {"cls", "box"}, res["outputs"]
    assert res["outputs"]["cls"]["agreement"] >= 0.98 and res["outputs"]["box"]["agreement"] is None
    assert res["outputs"]["box"]["max_abs_diff"] < 0.05  # int8 kernels of two runtimes, same model
    assert res["metric_key"] == "cls/accuracy"
    assert abs(res["device_metrics"]["cls/accuracy"] - res["host_metrics"]["cls/accuracy"]) <= 0.02
    assert res["device"]["machine"] == "aarch64" and res["device"]["runtime"]["name"] == "tflite_runtime"
    _no_runner_left(pi_device)


def _no_runner_left(pi: PiDevice) -> None:
    leftover = []
    for _ in range(20):  # the session's processes need a moment to exit after ssh returns
        leftover = [c for c in pi.processes() if "runner.py" in c or " - --describe" in c]
        if not leftover:
            return
        time.sleep(0.25)
    pytest.fail(f"left running on the device: {leftover}")


def test_pi_is_an_emulated_aarch64_with_the_raspberry_pi_os_stack(pi_device: PiDevice) -> None:
    d = parse_target(pi_device.target, **pi_device.options()).describe()
    assert d["machine"] == "aarch64" and d["python"].startswith("3.11.")
    assert d["runtime"] == {"name": "tflite_runtime", "version": "2.14.0"}
    assert d["numpy"].startswith("1.")
    assert d["emulated"] is True and d["emulation"]["emulator"] == "qemu-user" and d["emulation"]["evidence"]
    assert d["latency_label"] == EMULATED_LABEL
    local = parse_target("local").describe()
    assert local["emulated"] is False and local["emulation"]["evidence"] == []
    _no_runner_left(pi_device)


def _identical_or_explained(res: dict[str, Any], output: str) -> None:
    """Same top-1 classes; outputs bit-identical (rounded to 1e-4), or a note naming the two runtime versions.

    ai-edge-litert 2.1.6 on the device and 2.3.0 here are different kernels: on the quickstart-like bundle they
    agreed bit for bit until its classifier kept one 1x16 block per class (logits at 50%, not 75%, since 75% left
    classes without weights), then the rounded outputs differed while every top-1 class stayed the same.
    """
    d, h = res["device"]["runtime"], res["host"]["runtime"]
    if res["checksum_match"]:
        assert not output or "outputs identical: yes" in output
        return
    assert d != h, f"same runtime {d} on both sides, yet outputs differ: {res['notes']}"
    assert any("not bit-identical" in n and d["version"] in n and h["version"] in n for n in res["notes"]), res["notes"]


# (device Python, resolver, bit-identical to this machine). Bit-identical needs the same kernels on both sides.
# Builtin kernels: tflite-runtime 2.14 on the device = ai-edge-litert 2.3 here. XNNPACK: ai-edge-litert 2.1 on
# the device = 2.3 here; but tflite-runtime 2.14's default path differs from litert 2.3's XNNPACK by one int8
# quantization step on some outputs, on x86 as well, so that pair is held to 100% top-1 agreement only.
DEPLOYS = [(TFLITE_RUNTIME, "builtin", True), (LITERT, "auto", True), (TFLITE_RUNTIME, "auto", False)]


@pytest.mark.parametrize(("python", "resolver", "identical"), DEPLOYS,
                         ids=["tflite_runtime-builtin", "litert-auto", "tflite_runtime-auto"])
def test_deploy_quickstart_like_bundle_reproduces_the_host(pi_device: PiDevice, trained_run: Any, tmp_path: Path,
                                                          record_property: Any, python: str, resolver: str,
                                                          identical: bool) -> None:
    """The quickstart's shape: pruned with 1x16 blocks, PQAT, sparse int8 export with its verification batch."""
    if python == LITERT:
        litert_python(pi_device, LITERT)  # skips, or fails in CI as root, with the device's pip log
    t0 = time.perf_counter()
    r = _cli("deploy", trained_run.run_dir, *pi_device.cli_args(python), "--resolver", resolver, "--profile",
             "--runs", "5", "--json", tmp_path / "deploy.json")
    record_property(f"deploy_{Path(python).parts[2]}_{resolver}_s", round(time.perf_counter() - t0, 1))
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "deploy.json").read_text())
    assert res["samples"] == 100 and res["agreement"] == 1.0, res
    assert res["device_accuracy"] == res["host_accuracy"]
    if identical:
        _identical_or_explained(res, r.output)
    assert res["device"]["machine"] == "aarch64" and res["device"]["emulated"] is True
    assert res["host"]["emulated"] is False
    expected = "tflite_runtime" if python == TFLITE_RUNTIME else "ai_edge_litert"
    assert res["device"]["runtime"]["name"] == expected
    assert res["profile"]["latency_label"] == EMULATED_LABEL and res["profile"]["latency_ms"]["median"] > 0
    assert "agreement with host 100.00%" in r.output
    assert EMULATED_LABEL in r.output and "EMULATED CPU" in r.output
    _no_runner_left(pi_device)


def test_deploy_int8_block_sparse_model_with_litert_on_the_device_reproduces_the_host(
        pi_device: PiDevice, int8_block_run: Any) -> None:
    """Post-training int8 with 1x16 blocks: ai-edge-litert on the device reproduces this machine bit for bit."""
    from edgesparse.device.deploy import deploy
    from edgesparse.tflite import inspect_tflite

    model = Path(int8_block_run.summary.tflite.path)
    assert "block" in json.dumps(inspect_tflite(model).to_dict()).lower(), "the export holds no block-sparse tensor"
    python = litert_python(pi_device, LITERT)  # skips, or fails in CI as root, with the device's pip log
    res = deploy(int8_block_run.run_dir, pi_device.target, target_options=pi_device.options(python=python))
    assert res.samples == 100 and res.agreement == 1.0, (res.device, res.host)
    assert res.device["runtime"]["name"] == "ai_edge_litert"
    assert res.device_accuracy == res.host_accuracy
    _identical_or_explained(res.to_dict(), "")
    _no_runner_left(pi_device)


def test_deploy_int8_block_sparse_model_reproduces_the_host(pi_device: PiDevice, int8_block_run: Any,
                                                           record_property: Any) -> None:
    """Post-training int8 with 1x16 blocks: tflite-runtime 2.14 on the device reproduces tflite-runtime 2.14 on
    this machine bit for bit.

    Measured here: tflite-runtime 2.14 computes this model differently from ai-edge-litert 2.3 (16%
    top-1 agreement on x86-64 as on aarch64, so it is the runtime version, not the Pi); deploy then
    says so in its notes and how to compare like for like (--host-python).
    """
    from edgesparse.device.deploy import deploy

    res = deploy(int8_block_run.run_dir, pi_device.target, target_options=pi_device.options(python=TFLITE_RUNTIME))
    record_property("int8_block_tflite_runtime_2_14_vs_litert_agreement", res.agreement)
    assert res.device["runtime"] == {"name": "tflite_runtime", "version": "2.14.0"}
    if res.agreement < 1.0 or not res.checksum_match:
        assert len(res.notes) == 1 and "tflite_runtime 2.14.0" in res.notes[0] and "--host-python" in res.notes[0]
    host_214 = device_python()  # x86 tflite-runtime 2.14 + numpy<2 (.ci/system-deps.sh); skips or fails with why
    same = deploy(int8_block_run.run_dir, pi_device.target, target_options=pi_device.options(python=TFLITE_RUNTIME),
                  host_python=host_214)
    assert same.host["runtime"] == same.device["runtime"] and same.host["machine"] == "x86_64"
    assert same.samples == 100 and same.agreement == 1.0 and same.checksum_match, (same.device, same.host)
    _no_runner_left(pi_device)


def test_profile_on_the_pi_returns_the_documented_json_labelled_emulated(pi_device: PiDevice, trained_run: Any,
                                                                        tmp_path: Path) -> None:
    out, md = tmp_path / "profile.json", tmp_path / "profile.md"
    r = _cli("profile", trained_run.run_dir, *pi_device.args, "--runs", "5", "--warmup", "1", "--json", out,
             "--report", md)
    assert r.exit_code == 0, r.output
    assert EMULATED_LABEL in r.output
    rep = json.loads(out.read_text())
    assert rep["target"]["machine"] == "aarch64" and rep["target"]["emulated"] is True
    assert rep["target"]["runtime"]["name"] == "tflite_runtime" and rep["latency_label"] == EMULATED_LABEL
    assert [Path(m["path"]).name for m in rep["models"]] == ["dense.tflite", "model.tflite"]
    for row in rep["models"]:
        assert row["latency_label"] == EMULATED_LABEL and row["emulated"] is True
        assert row["runs"] == 5 and row["latency_ms"]["median"] > 0 and row["bytes"] > 0
        assert row["runtime"] == {"name": "tflite_runtime", "version": "2.14.0"}
    assert rep["models"][1]["paired_vs_first"]["ratio_median"] > 0
    assert rep["notes"][0].startswith(f"Latency {EMULATED_LABEL}")
    assert EMULATED_LABEL in md.read_text()
    _no_runner_left(pi_device)


# ---- a device that lacks something: one clear error each, nothing left running ------------------


def test_pi_python_without_numpy(pi_device: PiDevice, tiny_tflite: dict[str, Path]) -> None:
    for python in ("/usr/bin/python3", "/opt/venv-nonumpy/bin/python"):
        with pytest.raises(DeviceError) as info:
            parse_target(pi_device.target, **pi_device.options(python=python)).run_runner(tiny_tflite["int8"], runs=1)
        msg = str(info.value)
        assert pi_device.target.split("/root")[0] in msg and "aarch64" in msg, msg
        assert "numpy is missing" in msg and f"{python} -m pip install tflite-runtime 'numpy<2'" in msg, msg
    _no_runner_left(pi_device)


def test_pi_python_with_numpy_but_no_runtime(pi_device: PiDevice, trained_run: Any) -> None:
    python = "/opt/venv-numpy-only/bin/python"
    r = _cli("deploy", trained_run.run_dir, *pi_device.cli_args(python))
    assert r.exit_code == 1 and "Traceback" not in r.output
    msg = " ".join(r.output.split())
    assert "has no TFLite runtime" in msg and "aarch64" in msg and "127.0.0.1" in msg, msg
    assert f"{python} -m pip install tflite-runtime 'numpy<2'" in msg, msg
    _no_runner_left(pi_device)


def test_pi_venv_copied_from_another_architecture(pi_device: PiDevice, tiny_tflite: dict[str, Path]) -> None:
    """This machine's x86-64 numpy copied into a venv on the aarch64 device (a venv carried across machines)."""
    import shutil

    venv = pi_device.rootfs / "tmp/edgesparse-x86-numpy-venv"
    site = venv / "lib/python3.11/site-packages"
    shutil.rmtree(venv, ignore_errors=True)
    try:
        shutil.copytree(pi_device.rootfs / "opt/venv-nonumpy", venv, symlinks=True)
        shutil.copytree(Path(np.__file__).parent, site / "numpy", symlinks=True)
        python = "/tmp/edgesparse-x86-numpy-venv/bin/python"
        with pytest.raises(DeviceError, match="another CPU architecture") as info:
            parse_target(pi_device.target, **pi_device.options(python=python)).run_runner(tiny_tflite["int8"], runs=1)
    finally:
        shutil.rmtree(venv, ignore_errors=True)
    msg = str(info.value)
    assert "x86_64-linux-gnu.so" in msg and "IMPORTANT" not in msg  # numpy's page of advice cut to the cause
    assert "aarch64" in msg and "make it on the device" in msg and "pip install tflite-runtime 'numpy<2'" in msg
    _no_runner_left(pi_device)


def _newer_op_version(src: Path, dst: Path) -> Path:
    """``src`` with its FULLY_CONNECTED op claiming version 99: what an old runtime meets in a newer converter's file."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(src.read_bytes()), 0)
    fc = schema.BuiltinOperator.FULLY_CONNECTED
    for code in model.operatorCodes:
        if fc in (code.builtinCode, code.deprecatedBuiltinCode):
            code.version = 99
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    dst.write_bytes(bytes(builder.Output()))
    return dst


def test_pi_runtime_too_old_for_the_model(pi_device: PiDevice, tiny_tflite: dict[str, Path], tmp_path: Path) -> None:
    model = _newer_op_version(tiny_tflite["dense"], tmp_path / "newer.tflite")
    with pytest.raises(ProfileError) as info:
        parse_target(pi_device.target, **pi_device.options()).run_runner(model, runs=1, warmup=0)
    msg = str(info.value)
    assert "aarch64" in msg and "127.0.0.1" in msg and "tflite_runtime 2.14.0" in msg, msg
    assert "op FULLY_CONNECTED version 99" in msg and "-m pip install -U ai-edge-litert" in msg, msg
    _no_runner_left(pi_device)


def test_pi_runner_past_its_deadline_is_stopped_on_the_device(pi_device: PiDevice,
                                                             tiny_tflite: dict[str, Path]) -> None:
    target = parse_target(pi_device.target, **pi_device.options())
    with pytest.raises(DeviceError, match="did not finish within 6 s and was stopped on the device"):
        target.run_runner(tiny_tflite["dense"], runs=1, warmup=0, min_seconds=600, timeout=6)
    _no_runner_left(pi_device)


def test_pi_unreachable_port_names_the_device(pi_device: PiDevice, tiny_tflite: dict[str, Path]) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    opts = pi_device.options()
    with pytest.raises(EdgesparseError, match=f"cannot reach 127.0.0.1:{port}") as info:
        parse_target(f"ssh://root@127.0.0.1:{port}", connect_timeout=3, **opts).run_runner(tiny_tflite["dense"])
    assert "systemctl enable --now ssh" in str(info.value)
