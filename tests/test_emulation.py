"""The runner's CPU description and emulation detection, on /proc texts recorded on real machines.

The live check (aarch64 under qemu-user) is in tests/test_pi.py; these run everywhere.
"""

from __future__ import annotations

import platform

from edgesparse.device import runner
from edgesparse.device.emulation import EMULATED_LABEL, emulated_note, latency_label

# /proc/cpuinfo of a Raspberry Pi 4 (64-bit Raspberry Pi OS bookworm), first core and the trailer
PI4_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3

Revision\t: c03114
Serial\t\t: 10000000abcdef01
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""

# the host's /proc/cpuinfo, as a process under qemu-user reads it (this project's CI machine)
X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep sse sse2
"""

# /proc/PID/task/PID/maps of a python3 under binfmt_misc qemu-aarch64 (the host's view of the process)
QEMU_MAPS = """00400000-00401000 r--p 00000000 00:2a 123 /usr/libexec/qemu-binfmt/aarch64-binfmt-P
00401000-00800000 r-xp 00001000 00:2a 456 /usr/bin/qemu-aarch64-static
5500000000-5500001000 r--p 00000000 00:2a 789 /usr/bin/python3.11
"""
NATIVE_MAPS = "5500000000-5500001000 r--p 00000000 b3:02 789 /usr/bin/python3.11\n"


def test_raspberry_pi_cpu_model_names_board_and_core() -> None:
    assert runner.cpu_model(PI4_CPUINFO) == "Raspberry Pi 4 Model B Rev 1.4, ARM Cortex-A72"
    assert runner.cpu_model(X86_CPUINFO) == "AMD EPYC"  # the numeric x86 "model" is not a name
    assert runner.cpu_model("") is None


def test_cpu_features_keep_the_simd_flags_that_pick_kernels() -> None:
    assert runner.cpu_features(PI4_CPUINFO) == ["asimd"]  # a Cortex-A72: no dot product instructions
    vnni = X86_CPUINFO.replace("sse sse2", "sse sse2 sse4_1 avx avx2 fma avx512f avx512_vnni")
    assert runner.cpu_features(vnni) == ["sse4_1", "avx", "avx2", "fma", "avx512f", "avx512_vnni"]
    assert runner.cpu_features("") == []


def test_real_pi_is_not_emulated() -> None:
    got = runner.detect_emulation("aarch64", PI4_CPUINFO, NATIVE_MAPS)
    assert got == {"emulated": False, "emulator": None, "evidence": []}


def test_qemu_user_is_detected_by_either_signal() -> None:
    both = runner.detect_emulation("aarch64", X86_CPUINFO, QEMU_MAPS)
    assert both["emulated"] and both["emulator"] == "qemu-user" and len(both["evidence"]) == 2
    # a Pi's cpuinfo bind-mounted over /proc/cpuinfo (an ai-edge-litert workaround) hides one signal only
    maps_only = runner.detect_emulation("aarch64", PI4_CPUINFO, QEMU_MAPS)
    assert maps_only["emulated"] and maps_only["evidence"] == [
        "the process's memory map holds /usr/libexec/qemu-binfmt/aarch64-binfmt-P"]
    cpuinfo_only = runner.detect_emulation("aarch64", X86_CPUINFO, NATIVE_MAPS)
    assert cpuinfo_only["emulated"] and "x86 CPU (AMD EPYC) but Python runs as aarch64" in cpuinfo_only["evidence"][0]


def test_this_machine_is_not_emulated() -> None:
    d = runner.describe()
    assert d["emulated"] is False and "latency_label" not in d and d["machine"] == platform.machine()


def test_labels_follow_the_runner() -> None:
    info = {"name": "ssh://root@127.0.0.1:2222", "machine": "aarch64", "emulated": True,
            "emulation": runner.detect_emulation("aarch64", X86_CPUINFO, QEMU_MAPS)}
    assert latency_label(info) == EMULATED_LABEL == runner.EMULATED_LABEL
    note = emulated_note(info) or ""
    assert note.startswith(f"Latency {EMULATED_LABEL}: ssh://root@127.0.0.1:2222 runs aarch64 code") and "qemu" in note
    assert latency_label({"emulated": False}) is None and emulated_note({}) is None


def test_a_runtime_that_crashes_on_the_device_is_named() -> None:
    """ai-edge-litert 2.3 under qemu dies with SIGSEGV before printing anything (measured on the emulated Pi)."""
    import pytest

    from edgesparse.device.targets.base import interpret_runner_output
    from edgesparse.errors import DeviceError

    stderr = "qemu: uncaught target signal 11 (Segmentation fault) - core dumped\n"
    with pytest.raises(DeviceError, match=r"crashed \(segmentation fault, exit code 139\)") as info:
        interpret_runner_output("", stderr, 139, "ssh://pi@host:22", "/opt/venv/bin/python")
    assert "uncaught target signal 11" in str(info.value) and "ai-edge-litert==2.1.*" in str(info.value)
