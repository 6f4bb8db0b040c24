"""The single TensorFlow entry point: Keras 2 for tfmot, and a clear error when Keras 3 came first."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def _py(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_keras3_imported_first_is_a_clear_error() -> None:
    proc = _py(
        "import tensorflow as tf\n"
        "tf.keras.layers  # Keras 3 becomes tf.keras\n"
        "from edgesparse import _tf\n"
        "from edgesparse.errors import EdgesparseError\n"
        "try:\n    _tf.tf()\nexcept EdgesparseError as e:\n    print('ERR', e)\n"
    )
    assert "ERR" in proc.stdout, proc.stderr[-2000:]
    assert "TF_USE_LEGACY_KERAS=1" in proc.stdout and "Keras 2" in proc.stdout


def test_tf_keras_is_keras2_and_cli_help_does_not_import_tensorflow() -> None:
    proc = _py(
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from edgesparse.cli import main\n"
        "r = CliRunner().invoke(main, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print('TF_LOADED', 'tensorflow' in sys.modules)\n"
        "from edgesparse import _tf\n"
        "print('KERAS', _tf.keras().__version__, _tf.tf().keras.__name__)\n"
    )
    assert "TF_LOADED False" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert "KERAS 2." in proc.stdout and "tf_keras" in proc.stdout


def test_keras3_accessor_keeps_keras2_as_tf_keras() -> None:
    proc = _py(
        "from edgesparse import _tf\n"
        "k3 = _tf.keras3()\n"
        "print('K3', k3.__version__, 'TFKERAS', _tf.tf().keras.__name__, _tf.keras().__version__)\n"
        "print('TFMOT', _tf.tfmot().sparsity.keras.prune_low_magnitude is not None)\n"
    )
    assert "K3 3." in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert "TFKERAS tf_keras" in proc.stdout and " 2." in proc.stdout and "TFMOT True" in proc.stdout
