"""The TFLite interpreter, without TensorFlow: ai-edge-litert first, tflite-runtime as fallback.

``ai_edge_litert`` is Google's current package (wheels for x86-64 and aarch64,
Python 3.9-3.13); ``tflite_runtime`` is the older one some Pi images still carry.
TensorFlow's own ``tf.lite.Interpreter`` is deliberately never tried: a device that
needs TensorFlow to classify is the problem this package exists to avoid.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Optional

from edgetl.runtime.native_log import hide_native_logs

BACKENDS = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")
INSTALL_HINT = "pip install ai-edge-litert (or, where no wheel exists for this platform, pip install tflite-runtime)"


class RuntimeMissingError(ImportError):
    """Neither ai-edge-litert nor tflite-runtime is installed."""


class ModelLoadError(ValueError):
    """A .tflite file is missing, truncated, or not a TFLite flatbuffer."""


def backend() -> tuple[str, Any]:
    """The first importable interpreter module and its name.

    Raises:
        RuntimeMissingError: neither package imports; the message names the pip command.
    """
    errors = []
    for name in BACKENDS:
        try:
            return name.split(".")[0], importlib.import_module(name)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
    raise RuntimeMissingError(f"no TFLite interpreter is installed ({'; '.join(errors)}); {INSTALL_HINT}")


def max_threads() -> int:
    """The most interpreter threads edge_runtime creates: 4 per core, at most 64."""
    return min(64, 4 * (os.cpu_count() or 1))


def load_interpreter(model_path: Path, num_threads: Optional[int] = None) -> Any:
    """Create and allocate an interpreter for a .tflite file.

    XNNPACK is the runtimes' default CPU delegate for float and int8 kernels; it
    stays on, with ``num_threads`` threads (default: all cores, as the Pi has four).

    Raises:
        ModelLoadError: the file is missing or not a valid model.
        RuntimeMissingError: no interpreter package is installed.
    """
    path = Path(model_path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such model file; pass the path of a .tflite written by edgetl convert")
    if path.stat().st_size < 16 or path.read_bytes()[4:8] != b"TFL3":
        raise ModelLoadError(f"{path}: not a TFLite model (no TFL3 header: truncated or another format); copy it again or re-run edgetl convert")
    _, module = backend()
    # bounded: LiteRT segfaults creating 100,000 threads; more than 4 per core only adds contention
    threads = min(num_threads if num_threads and num_threads > 0 else (os.cpu_count() or 1), max_threads())
    try:
        with hide_native_logs():  # "Created TensorFlow Lite XNNPACK delegate for CPU." (shown with -v)
            interpreter = module.Interpreter(model_path=str(path), num_threads=threads)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{path}: the interpreter cannot load it ({first}); copy it again or re-run edgetl convert") from None
    return interpreter


@contextlib.contextmanager
def quiet_native_logs(enabled: bool = True) -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the block (a no-op when ``enabled`` is False).

    LiteRT's C++ side writes "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
    straight to fd 2 when an interpreter is created; no environment variable or Python
    logger silences it, so ``-q`` redirects the descriptor around the creation. Errors
    still reach the caller as Python exceptions carrying their message.
    """
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
