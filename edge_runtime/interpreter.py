"""The TFLite interpreter, without TensorFlow: ai-edge-litert first, tflite-runtime as fallback.

``ai_edge_litert`` is Google's current package (wheels for x86-64 and aarch64,
Python 3.9-3.13); ``tflite_runtime`` is the older one some Pi images still carry.
TensorFlow's own ``tf.lite.Interpreter`` is deliberately never tried: a device that
needs TensorFlow to classify is the problem this package exists to avoid.
"""

from __future__ import annotations

import importlib
import os
import signal
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
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


PROBE_TIMEOUT = 60.0  # seconds for a child to load a model and run it once (a 1.0/224 fp32 model: ~0.1 s)


def default_probe_timeout() -> Optional[float]:
    """``$EDGETL_PROBE_TIMEOUT`` seconds (``off`` skips the probe), else :data:`PROBE_TIMEOUT`."""
    value = os.environ.get("EDGETL_PROBE_TIMEOUT", "").strip().lower()
    if value in ("off", "none", "0"):
        return None
    try:
        return float(value) if value and float(value) > 0 else PROBE_TIMEOUT
    except ValueError:
        return PROBE_TIMEOUT


def probe(model_path: Path, num_threads: Optional[int] = None, timeout: Optional[float] = PROBE_TIMEOUT) -> None:
    """Load and invoke a model once in a forked child, so a hostile file cannot crash or hang this process.

    LiteRT trusts the flatbuffer: one changed byte can make it segfault (exit 139,
    no message), and a ``WHILE`` whose condition never turns false invokes forever
    in native code that Ctrl-C cannot interrupt. The child loads the model, feeds
    one all-zero input and exits; this process waits at most ``timeout`` seconds.
    A crash or a timeout is one :class:`ModelLoadError`; an ordinary load error is
    left to the real load in this process (which words it). The check covers the
    first invoke: a model whose loop depends on the pixels is not caught (see
    docs/untrusted-input.md). Skipped where ``os.fork`` does not exist, or when
    ``timeout`` is None.

    Raises:
        ModelLoadError: the child died of a signal or did not finish in time.
    """
    if timeout is None or not hasattr(os, "fork") or not Path(model_path).is_file():
        return
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's code
        code = 1
        try:
            import faulthandler

            faulthandler.disable()  # its dump of the child's crash would reach the parent's stderr
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            code = _invoke_once(model_path, num_threads)
        finally:
            os._exit(code)
    status = _wait(pid, timeout)
    path = Path(model_path)
    if status is None:
        raise ModelLoadError(
            f"{path}: one invoke did not finish within {timeout:g} s (a model that loops forever?); "
            "the model was stopped; use a model written by edgetl convert"
        )
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        raise ModelLoadError(
            f"{path}: the interpreter crashed on this model ({name}): the file is damaged or hostile; "
            "copy it again or re-run edgetl convert"
        )


def _invoke_once(model_path: Path, num_threads: Optional[int]) -> int:
    """The child's work: 0 when the model loads and runs once, 1 when it raises."""

    try:
        interpreter = load_interpreter(model_path, num_threads)
        detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], dtype=detail["dtype"]))
        interpreter.invoke()
    except Exception:  # noqa: BLE001 - reported by the parent's own load
        return 1
    return 0


def _wait(pid: int, timeout: float) -> Optional[int]:
    """The child's wait status, or None after killing it at ``timeout`` (or on Ctrl-C, re-raised)."""
    deadline, pause = time.monotonic() + timeout, 0.001
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status
            if time.monotonic() >= deadline:
                break
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
    except BaseException:
        _kill(pid)
        raise
    _kill(pid)
    return None


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


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
            interpreter.get_input_details(), interpreter.get_output_details()  # a tensor name that is not UTF-8
    except (ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"{path}: the interpreter cannot load it ({first}); copy it again or re-run edgetl convert"
        ) from None
    return interpreter
