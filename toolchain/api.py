"""The Python API: ``edgetl.train``, ``edgetl.qat``, ``edgetl.convert``, ``edgetl.parity``.

Each function takes either a config object or keyword arguments that build one
(the same names as the dataclass fields and, with ``-`` as ``_``, the CLI
options), runs one stage exactly as the ``edgetl`` command does, and returns that
stage's result object. Strings are accepted where the config holds an enum
(``pooling="avg"``, ``variants=("fp32", "int8")``). Errors are
``edgetl.errors.EdgeTLError`` subclasses whose message names the fix. Progress
and stage lines go through :mod:`logging` (logger ``edgetl``); the library
configures no handler, so they stay silent unless the application adds one.

Example::

    import edgetl

    run = edgetl.train(data="photos/", output="runs/pets", epochs=5).run_dir
    edgetl.convert(run, variants=("fp32", "int8"))
    report = edgetl.parity(run)           # raises edgetl.errors.ParityError on a crossed threshold
    print(report.to_dict()["models"]["int8"]["top1"])
"""

from __future__ import annotations

import dataclasses
import enum
import os
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, TypeVar, Union

from edgetl.config import CalibrationConfig, ConvertConfig, QatConfig, TrainConfig
from edgetl.errors import ConfigError
from edgetl.parity.stage import ParityConfig, run_parity

if TYPE_CHECKING:
    from edgetl.calibration import Manifest
    from edgetl.config import TrainConfig
    from edgetl.convert.stage import ConvertResult
    from edgetl.parity.stage import ParityReport
    from edgetl.qat.stage import QatResult
    from edgetl.train.stage import TrainResult

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
    from edgetl.train.stage import train as run

    if not isinstance(resume, bool):
        raise ConfigError(f"resume must be True or False (got {resume!r})")
    return run(_config(TrainConfig, config, options), resume=resume)


def qat(run: PathLike, **options: Any) -> QatResult:
    """Quantization-aware fine-tune of ``RUN/model.keras`` into ``RUN/model_qat.keras`` (``edgetl qat``).

    Args:
        run: the run folder.
        **options: ``QatConfig`` fields (``epochs``, ``learning_rate``, ``batch_size``, ``patience``, ``augment``, ``seed``).

    Returns:
        ``QatResult``: ``model_path``, ``card_path``, ``metrics``, ``float_metrics``, ``seconds``.
    """
    from edgetl.qat.stage import qat as stage

    return stage(_config(QatConfig, None, {"run": check_run(run), **options}))


def calibrate(run: PathLike, **options: Any) -> Manifest:
    """Choose and write the int8 representative set ``RUN/calibration.json`` (``edgetl calibrate``).

    Args:
        run: the run folder.
        **options: ``CalibrationConfig`` fields (``size``, ``seed``).
    """
    from edgetl.convert.calibrate import calibrate as stage

    return stage(_config(CalibrationConfig, None, {"run": check_run(run), **options}))


def convert(run: PathLike, **options: Any) -> ConvertResult:
    """Write the TFLite variants of a run, each with its card (``edgetl convert --no-parity``).

    Unlike the command, this does not run the parity gate afterwards: call :func:`parity` on the
    run next (``edgetl convert`` without ``--no-parity`` does both).

    Args:
        run: the run folder.
        **options: ``ConvertConfig`` fields (``quantizations``, ``io``, ``calib_size``, ``calib_seed``,
            ``debug``, ``keep_float``, ``rounding``, and ``max_drop``, ``max_evals``, ``max_seconds``: the
            search for the cheapest int8 model within a top-1 budget on the val split); ``variants=`` is the
            same as ``quantizations=``, the name ``edgetl convert --variants`` and ``edgetl.parity(variants=...)`` use.

    Returns:
        ``ConvertResult``: ``variants`` (path, card, size of each), ``manifest``, ``search`` (under
        ``max_drop``), ``table()``, ``to_dict()``.

    Raises:
        BudgetError: under ``max_drop``, no int8 model within the caps keeps the budget (nothing written).
    """
    from edgetl.convert.stage import convert as stage

    if "variants" in options:
        options["quantizations"] = options.pop("variants")
    return stage(_config(ConvertConfig, None, {"run": check_run(run), **options}))


def parity(run: PathLike, **options: Any) -> ParityReport:
    """Check every .tflite of a run against the float model through the device code (``edgetl parity``).

    Args:
        run: the run folder.
        **options: ``ParityConfig`` fields (``data``, ``max_drop``, ``max_flip_ratio``, ``min_agreement``,
            ``max_class_drop``, ``threads``, ``models``, ``junit``); ``variants=`` is the same as ``models=``.

    Returns:
        ``ParityReport``; ``RUN/parity.json`` and ``RUN/parity.md`` are written.

    Raises:
        ParityError: a threshold was crossed (after the reports are written).
    """

    if "variants" in options:
        options["models"] = options.pop("variants")
    return run_parity(_config(ParityConfig, None, {"run": check_run(run), **options}))


def _config(kind: type[C], config: Optional[C], options: dict[str, Any]) -> C:
    """``config`` with ``options`` applied, or a new ``kind`` from them; enum fields take their string values.

    Raises:
        ConfigError: ``config`` of another kind, an unknown keyword, a value of the wrong kind
            (every refusal names the keyword and what it takes).
    """

    if config is not None and not isinstance(config, kind):
        raise ConfigError(f"config must be a {kind.__name__} (got {type(config).__name__}); or pass keyword arguments")
    hints = typing.get_type_hints(kind)
    unknown = sorted(set(options) - set(hints))
    if unknown:
        raise ConfigError(f"unknown argument(s) {', '.join(unknown)}; valid: {', '.join(hints)}")
    values = {name: _coerce(name, hints[name], value) for name, value in options.items()}
    try:
        if config is not None:
            return dataclasses.replace(config, **values)  # type: ignore[type-var]
        return kind(**values)
    except TypeError as exc:  # a required field missing
        raise ConfigError(f"{kind.__name__}: {exc}; pass it as a keyword argument") from None


def check_run(run: Any) -> str:
    """A run folder argument as a string path.

    Raises:
        ConfigError: not a ``str`` or ``os.PathLike``.
    """

    if isinstance(run, bool) or not isinstance(run, (str, os.PathLike)):
        raise ConfigError(f"run must be the path of a run folder, a str or pathlib.Path (got {type(run).__name__})")
    return os.fspath(run)


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """``value`` as the field ``hint`` declares, from the forms a Python caller naturally writes.

    Enum members from their strings; a tuple from a list, or from a comma-separated
    string (``quantizations="int8"`` or ``"fp32,int8"``, as the CLI's ``--quant``);
    ``pathlib.Path`` as ``str``. Anything else is left for the config's own checks.

    Raises:
        ConfigError: a string that is not one of an enum's values.
    """

    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    for arg in (hint, *typing.get_args(hint)):
        if typing.get_origin(arg) is tuple:
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if isinstance(value, list):
                value = tuple(value)
            inner = typing.get_args(arg)
            if isinstance(value, tuple) and inner and isinstance(inner[0], type) and issubclass(inner[0], enum.Enum):
                value = tuple(_member(name, inner[0], v) for v in value)
            return value
        if isinstance(arg, type) and issubclass(arg, enum.Enum) and isinstance(value, str):
            return _member(name, arg, value)
    if isinstance(value, list):
        raise ConfigError(f"{name}={value!r} must be a single value, not a list")
    return value


def _member(name: str, kind: Any, value: Any) -> Any:

    if not isinstance(value, str):
        return value
    try:
        return kind(value.strip().lower().replace("-", "_") if kind.__name__ == "Quantization" else value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not one of: {', '.join(m.value for m in kind)}") from None
