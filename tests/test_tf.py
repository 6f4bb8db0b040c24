"""The single TensorFlow entry point: Keras 2 (tf_keras) for tfmot, whatever was imported before edgesparse."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def _py(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_notebook_order_tensorflow_and_keras3_first_runs_the_api_through_int8() -> None:
    """A notebook's first cell imports tensorflow and keras (tf.keras is Keras 3) and trains a Keras 3 model;
    edgesparse then prunes, quantizes (int8), exports and verifies it from the objects."""
    proc = _py(
        "import numpy as np\n"
        "import tensorflow as tf\n"
        "import keras\n"
        "assert keras.__version__.startswith('3')  # tf.keras is left unresolved, as in most notebooks\n"
        "rng = np.random.default_rng(0)\n"
        "x = rng.normal(size=(500, 8, 8, 1)).astype('float32')\n"
        "q = np.stack([x[:, :4, :4].mean((1, 2, 3)), x[:, :4, 4:].mean((1, 2, 3)),\n"
        "              x[:, 4:, :4].mean((1, 2, 3)), x[:, 4:, 4:].mean((1, 2, 3))], axis=1)\n"
        "y = q.argmax(1).astype('int64')\n"
        "keras.utils.set_random_seed(0)\n"
        "m = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation='relu'),\n"
        "    keras.layers.Flatten(), keras.layers.Dense(32, activation='relu'),\n"
        "    keras.layers.Dense(4, activation='softmax')])\n"
        "m.compile('adam', 'sparse_categorical_crossentropy', metrics=['accuracy'])\n"
        "m.fit(x[:300], y[:300], epochs=20, verbose=0)\n"
        "import tempfile, pathlib\n"
        "from edgesparse import Recipe, train\n"
        "tmp = pathlib.Path(tempfile.mkdtemp())\n"
        "recipe = Recipe(name='nb', baseline={'epochs': 0}, quantization={'mode': 'int8'},\n"
        "    sparsity={'final': 0.5, 'epochs': 2, 'on_drop': 'warn'},\n"
        "    export={'dir': str(tmp / 'b'), 'objective': 'size'})\n"
        "res = train(recipe, model=m, data={'train': (x[:300], y[:300]), 'validation': (x[300:400], y[300:400]),\n"
        "    'test': (x[400:], y[400:])}, run_dir=tmp / 'run')\n"
        "s = res.summary\n"
        "import os\n"
        "print('RESULT', s.tflite.quantization, round(s.sparsity.achieved.overall, 3), s.tflite.agreement,\n"
        "      tf.keras.__name__, os.environ.get('TF_USE_LEGACY_KERAS', '-'))\n"
    )
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert line, proc.stdout[-2000:] + proc.stderr[-4000:]
    _, quantization, achieved, agreement, tf_keras_name, legacy_env = line[0].split()
    assert quantization == "int8"
    assert float(achieved) >= 0.45  # tfmot really pruned the translated model
    assert float(agreement) >= 0.9
    # the user's tf.keras stays Keras 3 (tfmot's import sets TF_USE_LEGACY_KERAS, which edgesparse puts back)
    assert tf_keras_name.startswith("keras.") and legacy_env == "-", (tf_keras_name, legacy_env)


def test_factory_importing_tensorflow_first_is_fine() -> None:
    """tensorflow imported at the top of the caller (a data factory's module) before any edgesparse call."""
    proc = _py(
        "import tensorflow as tf\n"
        "tf.keras.layers\n"
        "from edgesparse import _tf\n"
        "pruner = _tf.tfmot().sparsity.keras.prune_low_magnitude\n"
        "print('KERAS2', _tf.keras().__version__, 'TFMOT', pruner is not None)\n"
    )
    assert "KERAS2 2." in proc.stdout and "TFMOT True" in proc.stdout, proc.stdout + proc.stderr[-2000:]


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
