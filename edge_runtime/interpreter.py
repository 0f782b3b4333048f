"""The TFLite interpreter, without TensorFlow: ai-edge-litert first, tflite-runtime as fallback.

``ai_edge_litert`` is Google's current package (wheels for x86-64 and aarch64,
Python 3.9-3.13); ``tflite_runtime`` is the older one some Pi images still carry.
TensorFlow's own ``tf.lite.Interpreter`` is deliberately never tried: a device that
needs TensorFlow to classify is the problem this package exists to avoid.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Optional

from edgetl.runtime.errors import EdgeTLError
from edgetl.runtime.native_log import hide_native_logs

BACKENDS = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")
INSTALL_HINT = "pip install ai-edge-litert (or, where no wheel exists for this platform, pip install tflite-runtime)"


class RuntimeMissingError(EdgeTLError, ImportError):
    """Neither ai-edge-litert nor tflite-runtime is installed."""


class ModelLoadError(EdgeTLError, ValueError):
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
        raise ModelLoadError(
            f"{path}: not a TFLite model (no TFL3 header: truncated or another format); copy it again or re-run edgetl convert"
        )
    _, module = backend()
    # bounded: LiteRT segfaults creating 100,000 threads; more than 4 per core only adds contention
    threads = min(num_threads if num_threads and num_threads > 0 else (os.cpu_count() or 1), max_threads())
    try:
        with hide_native_logs():  # "Created TensorFlow Lite XNNPACK delegate for CPU." (shown with -v)
            interpreter = module.Interpreter(model_path=str(path), num_threads=threads)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"{path}: the interpreter cannot load it ({first}); copy it again or re-run edgetl convert"
        ) from None
    return interpreter
