"""The Python API: ``edgetl.train``, ``edgetl.qat``, ``edgetl.convert``, ``edgetl.parity``.

Each function takes either a config object or keyword arguments that build one
(the same names as the dataclass fields and, with ``-`` as ``_``, the CLI
options), runs one stage exactly as the ``edgetl`` command does, and returns that
stage's result object. Strings are accepted where the config holds an enum
(``pooling="avg"``, ``quantizations=("fp32", "int8")``). Errors are
``edgetl.errors.EdgeTLError`` subclasses whose message names the fix. Progress
and stage lines go through :mod:`logging` (logger ``edgetl``); the library
configures no handler, so they stay silent unless the application adds one.

Example::

    import edgetl

    run = edgetl.train(data="photos/", output="runs/pets", epochs=5).run_dir
    edgetl.convert(run, quantizations=("fp32", "int8"))
    report = edgetl.parity(run)           # raises edgetl.errors.ParityError on a crossed threshold
    print(report.to_dict()["models"]["int8"]["top1"])
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, TypeVar, Union

if TYPE_CHECKING:
    from edgetl.calibration import Manifest
    from edgetl.config import TrainConfig
    from edgetl.convert import ConvertResult
    from edgetl.parity import ParityReport
    from edgetl.qat import QatResult
    from edgetl.train import TrainResult

C = TypeVar("C")
PathLike = Union[str, Path]


def train(config: Optional[TrainConfig] = None, *, resume: bool = False, **options: Any) -> TrainResult:
    """Train a classifier into a new run folder (``edgetl train``).

    Args:
        config: a ``TrainConfig``; or None and ``options`` (at least ``data`` and ``output``).
        resume: continue the interrupted run at ``output`` instead of starting one.
        **options: ``TrainConfig`` fields, or overrides of ``config``'s.

    Returns:
        ``TrainResult``: ``run_dir``, ``metrics`` (val/test top-1, per class, confusion), ``seconds``.

    Raises:
        DataError, WeightsError, ConfigError, RunFolderError: bad input, each naming its fix.
    """
    from edgetl.config import TrainConfig  # noqa: PLC0415
    from edgetl.train import train as run  # noqa: PLC0415

    return run(_config(TrainConfig, config, options), resume=resume)


def qat(run: PathLike, **options: Any) -> QatResult:
    """Quantization-aware fine-tune of ``RUN/model.keras`` into ``RUN/model_qat.keras`` (``edgetl qat``).

    Args:
        run: the run folder.
        **options: ``QatConfig`` fields (``epochs``, ``learning_rate``, ``batch_size``, ``patience``, ``augment``, ``seed``).

    Returns:
        ``QatResult``: ``model_path``, ``card_path``, ``metrics``, ``float_metrics``, ``seconds``.
    """
    from edgetl.config import QatConfig  # noqa: PLC0415
    from edgetl.qat import qat as stage  # noqa: PLC0415

    return stage(_config(QatConfig, None, {"run": str(run), **options}))


def calibrate(run: PathLike, **options: Any) -> Manifest:
    """Choose and write the int8 representative set ``RUN/calibration.json`` (``edgetl calibrate``).

    Args:
        run: the run folder.
        **options: ``CalibrationConfig`` fields (``size``, ``seed``).
    """
    from edgetl.calibrate import calibrate as stage  # noqa: PLC0415
    from edgetl.config import CalibrationConfig  # noqa: PLC0415

    return stage(_config(CalibrationConfig, None, {"run": str(run), **options}))


def convert(run: PathLike, **options: Any) -> ConvertResult:
    """Write the TFLite variants of a run, each with its card (``edgetl convert``, without the parity gate).

    Args:
        run: the run folder.
        **options: ``ConvertConfig`` fields (``quantizations``, ``io``, ``calib_size``, ``calib_seed``,
            ``debug``, ``keep_float``, ``rounding``).

    Returns:
        ``ConvertResult``: ``variants`` (path, card, size of each), ``manifest``, ``table()``, ``to_dict()``.
    """
    from edgetl.config import ConvertConfig  # noqa: PLC0415
    from edgetl.convert import convert as stage  # noqa: PLC0415

    return stage(_config(ConvertConfig, None, {"run": str(run), **options}))


def parity(run: PathLike, **options: Any) -> ParityReport:
    """Check every .tflite of a run against the float model through the device code (``edgetl parity``).

    Args:
        run: the run folder.
        **options: ``ParityConfig`` fields (``data``, ``max_drop``, ``max_flip_ratio``, ``min_agreement``, ``max_class_drop``,
            ``threads``, ``models``, ``junit``).

    Returns:
        ``ParityReport``; ``RUN/parity.json`` and ``RUN/parity.md`` are written.

    Raises:
        ParityError: a threshold was crossed (after the reports are written).
    """
    from edgetl.parity import ParityConfig, run_parity  # noqa: PLC0415

    return run_parity(_config(ParityConfig, None, {"run": str(run), **options}))


def _config(kind: type[C], config: Optional[C], options: dict[str, Any]) -> C:
    """``config`` with ``options`` applied, or a new ``kind`` from them; enum fields take their string values."""
    hints = typing.get_type_hints(kind)
    values = {name: _coerce(hints.get(name), value) for name, value in options.items()}
    if config is not None:
        return dataclasses.replace(config, **values)  # type: ignore[type-var]
    return kind(**values)


def _coerce(hint: Any, value: Any) -> Any:
    """``value`` as the enum (or tuple of enums) ``hint`` names, when it is given as strings."""
    for arg in (hint, *typing.get_args(hint)):
        if isinstance(arg, type) and issubclass(arg, enum.Enum) and isinstance(value, str):
            return arg(value)
        inner = typing.get_args(arg)
        if (
            inner
            and isinstance(inner[0], type)
            and issubclass(inner[0], enum.Enum)
            and isinstance(value, (list, tuple))
        ):
            return tuple(inner[0](v) if isinstance(v, str) else v for v in value)
    if isinstance(value, list):
        return tuple(value)
    return value
