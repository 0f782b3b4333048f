"""Errors the toolchain raises on bad input; ``cli.py`` turns each into one clean line.

Every message says what was wrong and how to fix it. Nothing else in the library
prints errors or exits.
"""

from __future__ import annotations

import importlib.util

from edgetl.runtime.errors import EdgeTLError  # the family's root, shared with the device runtime


class DataError(EdgeTLError):
    """The dataset is missing, empty, malformed or has too few classes."""


class WeightsError(EdgeTLError):
    """Backbone weights are missing, unverifiable or do not fit the model."""


class RunFolderError(EdgeTLError):
    """A run folder lacks an artifact a stage needs, or it does not match its card."""


class ConfigError(EdgeTLError):
    """An option or config file value is invalid."""

    exit_code = 2


class ConversionError(EdgeTLError):
    """A TFLite conversion failed or produced a model that does not load."""


class ParityError(EdgeTLError):
    """A converted model crossed a parity threshold; the message carries the numbers."""

    exit_code = 1


class BudgetError(EdgeTLError):
    """``convert --max-drop``: no int8 model within the search's caps keeps the budget on the val split."""

    exit_code = 1


class ParityInconclusive(EdgeTLError):
    """The held-out images cannot resolve a parity check and ``--inconclusive fail`` was asked."""

    exit_code = 4


TRAIN_EXTRA_MODULES = ("tensorflow", "tf_keras", "tensorflow_model_optimization", "h5py", "matplotlib")


class MissingExtraError(EdgeTLError):
    """A module of the ``train`` extra is not installed (an ``[edge]``-only install, as on a Pi)."""

    exit_code = 3

    def __init__(self, module: str) -> None:
        super().__init__(
            f"{module} is not installed: this command needs edgetl's train extra (TensorFlow); "
            f'install it with: pip install "edgetl[train]"  (in a checkout: pip install ".[train]")'
        )


def require_train_extra() -> None:
    """Raise :class:`MissingExtraError` before any work when the ``train`` extra is missing.

    ``importlib.util.find_spec`` only looks the modules up; nothing is imported.
    """

    for name in TRAIN_EXTRA_MODULES:
        if importlib.util.find_spec(name) is None:
            raise MissingExtraError(name)
