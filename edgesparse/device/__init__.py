"""Devices: the runner that runs on them, the targets that reach them, and deploy.

* ``runner.py`` runs ON the device (standard library + numpy + a TFLite runtime, Python 3.7+).
* ``targets`` reaches a device: ``local``, ``ssh://user@host[:port][/dir]``, ``adb[://SERIAL]``
  (``from edgesparse.device.targets import parse_target``).
* ``benchmark_model`` parses the output of TFLite's benchmark_model and LiteRT's litert-benchmark.

Nothing is imported here, so importing ``edgesparse.device`` stays instant.
"""
