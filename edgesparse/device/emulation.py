"""How latency measured on an emulated CPU (qemu-user, e.g. the emulated Raspberry Pi) is labelled.

The runner detects emulation on the device and says so in its JSON; ``profile`` and ``deploy`` label
such latency everywhere they show it, so no one quotes it as a figure of the hardware.
"""

from __future__ import annotations

from typing import Any

from edgesparse.device.runner import EMULATED_LABEL

__all__ = ["EMULATED_LABEL", "emulated_note", "latency_label"]


def latency_label(info: dict[str, Any]) -> str | None:
    """:data:`EMULATED_LABEL` when the runner's JSON (or a target's description) says the CPU is emulated."""
    return EMULATED_LABEL if (info or {}).get("emulated") else None


def emulated_note(info: dict[str, Any]) -> str | None:
    """The report's note on an emulated device: what is real (outputs, sizes) and what is not (latency)."""
    if not latency_label(info):
        return None
    evidence = "; ".join((info.get("emulation") or {}).get("evidence") or []) or "the runner detected emulation"
    return (f"Latency {EMULATED_LABEL}: {info.get('name', 'the target')} runs {info.get('machine', '?')} code on an "
            f"emulated CPU ({(info.get('emulation') or {}).get('emulator') or 'emulator'}; {evidence}), typically "
            "tens to hundreds of times slower than the real board, and not in the same proportions between "
            "models. Outputs, sizes and memory are the device's; time it on the hardware.")
