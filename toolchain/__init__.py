"""edgetl: train, quantize, convert and check parity of MobileNetV2 classifiers for the Raspberry Pi.

The Python API (see :mod:`edgetl.api`)::

    import edgetl

    result = edgetl.train(data="photos/", output="runs/pets")   # -> TrainResult
    edgetl.qat(result.run_dir)                                 # -> QatResult (optional)
    edgetl.convert(result.run_dir)                             # -> ConvertResult
    edgetl.parity(result.run_dir)                              # -> ParityReport, or ParityError

    from edgetl.runtime import Classifier                      # the device side

The repository's ``toolchain/`` folder is this package; ``edge_runtime/`` installs as
``edgetl.runtime`` and ``calibration/`` as ``edgetl.calibration``. Imports point one way:
``edgetl -> edgetl.calibration -> edgetl.runtime``; nothing under ``edgetl.runtime``
imports the rest. Everything here loads lazily, so ``import edgetl`` and
``import edgetl.runtime`` never import TensorFlow, and ``edgetl --help`` is instant.

The stage modules ``edgetl.train``, ``edgetl.qat``, ``edgetl.convert`` and ``edgetl.parity``
share their names with the API functions; the attribute is always the function (import
the modules with ``from edgetl.train.stage import ...``).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from edgetl.runtime.version import __version__

__all__ = ["__version__", "train", "qat", "calibrate", "convert", "parity", "runtime", "calibration"]

_API = frozenset({"train", "qat", "calibrate", "convert", "parity"})
_SUBPACKAGES = frozenset({"runtime", "calibration", "errors", "config"})


def __getattr__(name: str) -> Any:
    """``edgetl.train`` and the other API functions, and the sub-packages, imported on first use."""
    if name in _API:
        return getattr(importlib.import_module("edgetl.api"), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"edgetl.{name}")
    raise AttributeError(f"module 'edgetl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _API | _SUBPACKAGES)


class _Package(types.ModuleType):
    """Keeps ``edgetl.train`` (etc.) the API function when the same-named stage module is imported.

    Python's import system sets ``edgetl.<child>`` to every imported sub-module;
    for the five API names that would replace the function with a module.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
