"""Footprint, profile and deploy: real models, the real runner, a real sshd."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from edgesparse.cli import main
from edgesparse.errors import DeviceError, ProfileError
from edgesparse.tflite.footprint import footprint
from edgesparse.profile.measure import profile


def test_footprint_counts_and_macs(tiny_tflite: dict[str, Path]) -> None:
    d = footprint(tiny_tflite["dense"])
    s = footprint(tiny_tflite["int8"])
    # conv 3x3x1->8 on 6x6 output, fc 288->64, out 64->10
    assert d.macs_dense == 6 * 6 * 8 * 9 + 288 * 64 + 64 * 10 == s.macs_dense
    # the freshly initialised Dense biases are all zero and the converter drops them from the file
    assert d.params == (72 + 8) + 288 * 64 + 640 == s.params
    assert s.nonzero_params < 0.35 * s.params and s.macs_nonzero < 0.35 * s.macs_dense
    assert d.weight_runtime_bytes == d.weight_stored_bytes == d.weight_dense_bytes
    assert s.weight_stored_bytes < s.weight_dense_bytes
    assert 0 < s.activation_bytes <= sum(int(np.prod(i["shape"])) * 4 for i in d.inputs) + 6 * 6 * 8 * 4 + 288 * 4 * 3
    assert not s.xnnpack_sparse["eligible"] and any("int8" in r for r in s.xnnpack_sparse["reasons"])
    assert any("DENSIFY" in n for n in s.notes)


def test_profile_side_by_side_and_reports(tiny_tflite: dict[str, Path], tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["profile", str(tiny_tflite["dense"]), str(tiny_tflite["int8"]), "--threads", "1,2",
                                  "--runs", "20", "--warmup", "2", "--json", str(tmp_path / "p.json"),
                                  "--report", str(tmp_path / "p.md")], env={"COLUMNS": "200"})  # the whole table
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "p.json").read_text())
    rows = data["models"]
    assert [(Path(m["path"]).name, m["threads"]) for m in rows] == [
        ("dense.tflite", 1), ("dense.tflite", 2), ("model int8.tflite", 1), ("model int8.tflite", 2)]
    for m in rows:
        for key in ("path", "bytes", "gzip_bytes", "nonzero_params", "params", "runtime", "resolver", "threads",
                    "init_ms", "latency_ms", "peak_rss_bytes"):
            assert m[key] is not None, key
        assert set(m["latency_ms"]) >= {"mean", "median", "p90", "p99", "min", "max", "std"}
        paired = m["paired_vs_first"]
        if Path(m["path"]).name == "dense.tflite":
            assert paired is None  # the first model is the reference
        else:  # timed alternately with dense.tflite at the same thread count
            assert paired["reference"] == "dense.tflite" and 0 < paired["ratio_q1"] <= paired["ratio_q3"]
    dense_ops = rows[0]["ops"]
    assert dense_ops["delegated"] == dense_ops["total"] == 5 and dense_ops["builtin"] == {}
    sparse_ops = rows[2]["ops"]
    assert sparse_ops["total"] == 9 and sum(sparse_ops["builtin"].values()) == 9 - sparse_ops["delegated"]
    assert "XNNPACK ops" in r.output and "5/5" in r.output
    if rows[2]["resolver"] == "builtin":  # XNNPACK refused the sparse int8 FC (ai-edge-litert 2.3)
        assert "0/9" in r.output
        note = [n for n in data["notes"] if n.startswith("model int8.tflite: 9 of 9 ops ran on LiteRT's builtin")]
        assert len(note) == 1 and "XNNPACK refused the model" in note[0] and "DENSIFY x2" in note[0]
    md = (tmp_path / "p.md").read_text()
    assert "paired)" in md and "| XNNPACK ops |" in md
    assert "| model | thr |" in md  # the table, one row per model and thread count
    assert md.count("| dense.tflite | ") == 2 and md.count("| model int8.tflite | ") == 2
    # the sparse file's note: its weights are densified at load (2 DENSIFY ops, for the conv and the FC)
    assert "runtime densifies the weights at load (2 DENSIFY op(s))" in md
    assert (tmp_path / "p_latency.png").stat().st_size > 1000 and (tmp_path / "p_size.png").stat().st_size > 1000


@pytest.mark.parametrize("args", [["--threads", "0"], ["--runs", "0"]])
def test_profile_bad_counts(tiny_tflite: dict[str, Path], args: list[str]) -> None:
    r = CliRunner().invoke(main, ["profile", str(tiny_tflite["dense"]), *args])
    assert r.exit_code == 1 and ">= 1" in r.output


def test_profile_bad_files(tmp_path: Path, tiny_tflite: dict[str, Path]) -> None:
    empty = tmp_path / "e.tflite"
    empty.write_bytes(b"")
    trunc = tmp_path / "t.tflite"
    trunc.write_bytes(tiny_tflite["dense"].read_bytes()[:500])
    for path, msg in ((empty, "empty"), (trunc, "truncated"), (tmp_path / "nope.tflite", "does not exist")):
        r = CliRunner().invoke(main, ["profile", str(path)])
        assert r.exit_code == 1 and msg in r.output, r.output


def test_profile_dynamic_shape_needs_input_shape(tmp_path: Path) -> None:
    from edgesparse import _tf
    from edgesparse.export.convert import convert

    keras = _tf.keras()
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    path = tmp_path / "dyn.tflite"
    path.write_bytes(convert(model, "none"))
    with pytest.raises(ProfileError, match="--input-shape"):
        profile([path], runs=2)
    rep = profile([path], runs=2, warmup=0, input_shape=(1, 16, 16, 3))
    assert rep.measurements[0].runner["input"]["shape"] == [1, 16, 16, 3]


def test_profile_run_dir(trained_run: Any) -> None:
    rep = profile([trained_run.run_dir], runs=5, warmup=1)
    names = [Path(m.path).name for m in rep.measurements]
    assert names == ["dense.tflite", "model.tflite"]


def test_deploy_over_ssh_and_profile(sshd_server: Any, trained_run: Any, tmp_path: Path) -> None:
    from edgesparse.device.deploy import deploy

    opts = {"identity": str(sshd_server.identity), "known_hosts": str(sshd_server.known_hosts),
            "python": sys.executable}
    res = deploy(trained_run.run_dir, sshd_server.target, dest=str(tmp_path / "on device"), profile=True,
                 runs=10, target_options=opts)
    assert res.samples > 0 and res.agreement == 1.0 and res.checksum_match
    assert res.device_accuracy == res.host_accuracy
    assert {"model.tflite", "export.json", "runner.py"} <= set(res.files)
    assert (tmp_path / "on device" / "model.tflite").exists()
    assert res.profile and res.profile["latency_ms"]["median"] > 0


def test_deploy_to_unreachable_host(trained_run: Any) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = CliRunner().invoke(main, ["deploy", str(trained_run.run_dir), "--target", f"ssh://x@127.0.0.1:{port}"])
    assert r.exit_code == 1 and "cannot reach" in r.output
    with pytest.raises(DeviceError, match="nothing to deploy"):
        from edgesparse.device.deploy import find_bundle

        find_bundle(Path("/nonexistent"))


def test_profile_compiled_api_and_time_window(tiny_tflite: dict[str, Path], tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["profile", str(tiny_tflite["dense"]), "--api", "compiled", "--runs", "20",
                                  "--min-seconds", "0.2", "--json", str(tmp_path / "p.json")])
    assert r.exit_code == 0, r.output
    row = json.loads((tmp_path / "p.json").read_text())["models"][0]
    assert row["api"] == "compiled" and row["resolver"] == "litert_cpu"
    assert row["runs"] > 20 and row["drift_pct"] >= 0  # 0.2 s of a sub-millisecond model
    r = CliRunner().invoke(main, ["profile", str(tiny_tflite["dense"]), "--api", "compiled", "--resolver", "builtin"])
    assert r.exit_code == 1 and "--api interpreter only" in r.output
    r = CliRunner().invoke(main, ["profile", str(tiny_tflite["dense"]), "--min-seconds", "-1"])
    assert r.exit_code == 1 and "--min-seconds" in r.output


def test_delegation_note_names_the_ops_left_to_builtin_kernels() -> None:
    from edgesparse.profile.measure import delegation_note

    full = {"resolver": "xnnpack", "ops": {"total": 5, "delegated": 5, "partitions": 1, "builtin": {}}}
    assert delegation_note("m.tflite", full) is None
    assert delegation_note("m.tflite", {"resolver": "xnnpack"}) is None  # a benchmark binary reports no ops
    part = {"resolver": "xnnpack", "ops": {"total": 67, "delegated": 65, "partitions": 2,
                                           "builtin": {"FULLY_CONNECTED": 1, "SOFTMAX": 1}}}
    assert delegation_note("m.tflite", part) == ("m.tflite: 2 of 67 ops ran on LiteRT's builtin kernels, not "
                                                 "XNNPACK: FULLY_CONNECTED x1, SOFTMAX x1.")
    chosen = {"resolver": "builtin", "ops": {"total": 2, "delegated": 0, "partitions": 0, "builtin": {"ADD": 2}}}
    assert "(--resolver builtin: no delegate)" in str(delegation_note("m.tflite", chosen))
    unknown = delegation_note("m.tflite", {"ops": {"unavailable": "the runtime does not list its nodes (x)"}})
    assert unknown == "m.tflite: which ops XNNPACK took is not known: the runtime does not list its nodes (x)."


def test_drift_note_only_when_the_machine_moved() -> None:
    from edgesparse.profile.measure import DRIFT_WARN_PCT, drift_note

    assert drift_note("m.tflite", 1, {"stability": {"drift_pct": DRIFT_WARN_PCT / 2}}) is None
    assert drift_note("m.tflite", 1, {"stability": None}) is None  # too few runs to tell
    note = drift_note("m.tflite", 4, {"stability": {"drift_pct": 31.7}})
    assert note and note.startswith("m.tflite (4 thread(s))") and "32%" in note and "not repeatable" in note
