"""Devices: the runner that runs on them, the targets that reach them, and deploy."""
