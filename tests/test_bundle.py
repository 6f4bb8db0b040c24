"""Whole bundles (issue 31, item 5; edgesparse/manifest.py): built beside, renamed in, export.json last with sha256;
deploy, profile and inspect refuse half or altered bundles."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import edgesparse  # noqa: F401  (before tensorflow)
from edgesparse import manifest
from edgesparse.errors import DeviceError, ExportError, ProfileError


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real dataset, a real converted model and its Keras outputs: what export writes into a bundle."""
    from edgesparse import _tf
    from edgesparse.data import load_dataset
    from edgesparse.export.convert import convert

    data = load_dataset({"builtin": "digits", "batch_size": 32}, seed=0)
    keras = _tf.keras()
    keras.utils.set_random_seed(0)
    inputs = keras.Input(data.input_shape)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs)))
    x, _ = data.test.in_memory()
    return {"data": data, "model": convert(model, "none"), "outputs": model.predict(x, verbose=0),
            "tmp": tmp_path_factory.mktemp("bundle")}


def _write(parts: dict[str, Any], bundle: Path, model: bytes | None = None) -> Any:
    from edgesparse.export import _write_bundle  # type: ignore[attr-defined]

    return _write_bundle(bundle, parts["data"], parts["outputs"], model or parts["model"], parts["model"],
                         {"name": "t", "quantization": "none"})


def test_export_json_lists_every_file_with_its_sha256_and_the_bundle_checks(parts: dict[str, Any],
                                                                             tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    res = _write(parts, bundle)
    info = json.loads((bundle / "export.json").read_text())
    assert sorted(info["files"]) == ["dense.tflite", "labels.txt", "model.tflite", "verify.npz"]
    assert info["files"]["model.tflite"] == manifest.sha256_file(res.model_path)
    assert manifest.check(bundle)["files"] == info["files"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no temporary folder left beside it


def test_deploy_profile_and_inspect_refuse_a_half_or_altered_bundle(parts: dict[str, Any], tmp_path: Path) -> None:
    from click.testing import CliRunner

    from edgesparse.cli import main
    from edgesparse.device.deploy import deploy
    from edgesparse.profile.measure import resolve_models

    bundle = tmp_path / "b"
    _write(parts, bundle)
    model = bundle / "model.tflite"
    data = bytearray(model.read_bytes())
    data[-1] ^= 1
    model.write_bytes(bytes(data))  # one bit changed since the export
    with pytest.raises(DeviceError, match=r"model\.tflite' differs .*sha256"):
        deploy(bundle, "local", dest=str(tmp_path / "dev"))
    with pytest.raises(ProfileError, match="differs"):
        resolve_models([model])
    res = CliRunner().invoke(main, ["inspect", str(model)])
    assert res.exit_code == 1 and "differs from the file the bundle was exported with" in res.output

    _write(parts, bundle)
    (bundle / "export.json").unlink()  # what a full disk left before: model.tflite + verify.npz, no manifest
    for call in (lambda: deploy(bundle, "local", dest=str(tmp_path / "dev")),
                 lambda: deploy(bundle / "model.tflite", "local", dest=str(tmp_path / "dev"))):
        with pytest.raises(DeviceError, match=r"not a whole bundle: it has no export\.json"):
            call()
    with pytest.raises(ProfileError, match="not a whole bundle"):
        resolve_models([bundle / "model.tflite"])


def test_a_folder_with_other_files_is_updated_in_place_and_keeps_them(parts: dict[str, Any], tmp_path: Path) -> None:
    bundle = tmp_path / "models"
    bundle.mkdir()
    (bundle / "notes.md").write_text("mine")
    (bundle / "labels.txt").symlink_to(tmp_path / "elsewhere.txt")  # a planted link is replaced, never written
    (tmp_path / "elsewhere.txt").write_text("keep")
    _write(parts, bundle)
    assert (bundle / "notes.md").read_text() == "mine" and (tmp_path / "elsewhere.txt").read_text() == "keep"
    assert not (bundle / "labels.txt").is_symlink()
    manifest.check(bundle)


@contextlib.contextmanager
def _tiny_disk(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs (needs root): {proc.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="a full disk is a small tmpfs, which needs root")
def test_a_full_disk_leaves_the_old_bundle_whole_and_says_so(parts: dict[str, Any], tmp_path: Path) -> None:
    with _tiny_disk(tmp_path / "disk", "64k") as disk:
        bundle = disk / "b"
        _write(parts, bundle)  # fits: a few kB
        before = {p.name: p.read_bytes() for p in bundle.iterdir()}
        with pytest.raises(ExportError, match=r"disk is full.*previous bundle.*left as it was"):
            _write(parts, bundle, model=os.urandom(200_000))  # before: raw OSError [Errno 28], half bundle
        assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before
        manifest.check(bundle)
        assert sorted(p.name for p in disk.iterdir()) == ["b"]
    shutil.rmtree(tmp_path / "disk", ignore_errors=True)
