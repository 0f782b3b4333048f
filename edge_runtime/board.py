"""What this device is, for figures measured on it: board, CPU core, OS, Python, runtime versions, peak memory.

The board comes from ``/proc/device-tree/model`` (a Raspberry Pi: ``Raspberry Pi 4 Model B
Rev 1.4``), else from ``/proc/cpuinfo`` (the Pi's ``Model`` line, or x86's ``model name``).
Under qemu-user emulation (``QEMU_CPU`` or ``QEMU_LD_PREFIX`` in the environment) the report
says so: an emulated rootfs may carry a Pi's cpuinfo while running 100-400x slower than one.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any, Optional

import numpy as np
from edgetl.runtime.interpreter import backend


def board_info() -> dict[str, Any]:
    """The board, CPU, OS, Python and runtime versions: what a figure needs beside it to mean anything."""

    name, _ = backend()
    runtime = name.replace("_", "-")
    cpu = _cpuinfo()
    qemu = os.environ.get("QEMU_CPU") or os.environ.get("QEMU_LD_PREFIX")
    info = {
        "board": _device_tree_model() or cpu.get("Model") or cpu.get("model name") or platform.processor() or None,
        "cpu": cpu.get("model name") or _arm_core(cpu) or platform.processor() or None,
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "os": _os_name(),
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "runtime": f"{runtime} {_version(runtime)}",
        "numpy": np.__version__,
        "opencv": _version_of_module("cv2"),
        "edgetl": _version("edgetl"),
    }
    if qemu:
        info["emulated"] = f"qemu (QEMU_CPU={os.environ.get('QEMU_CPU', '?')}): timings prove it runs, not a speed"
    return info


def _device_tree_model() -> Optional[str]:
    try:
        return Path("/proc/device-tree/model").read_bytes().rstrip(b"\0").decode("utf-8", "replace").strip() or None
    except OSError:
        return None


def _cpuinfo() -> dict[str, str]:
    """The first value of each key in /proc/cpuinfo (Linux), else empty."""
    found: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return found
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in found:
            found[key.strip()] = value.strip()
    return found


ARM_PARTS = {
    "0xd03": "Cortex-A53",
    "0xd04": "Cortex-A35",
    "0xd05": "Cortex-A55",
    "0xd08": "Cortex-A72",
    "0xd0b": "Cortex-A76",
}


def _arm_core(cpu: dict[str, str]) -> Optional[str]:
    part = cpu.get("CPU part", "").lower()
    return ARM_PARTS.get(part, f"ARM part {part}") if part else None


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}"


def _version(distribution: str) -> Optional[str]:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _version_of_module(name: str) -> Optional[str]:
    try:
        return str(importlib.import_module(name).__version__)
    except (ImportError, AttributeError):
        return None


def peak_rss_reset() -> bool:
    """Reset the kernel's resident-memory high-water mark (Linux >= 4.0); False where it cannot."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> Optional[float]:
    """This process's peak resident memory in MiB (VmHWM), None off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None
