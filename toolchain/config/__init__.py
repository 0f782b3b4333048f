"""Typed configuration of each stage: frozen dataclasses and ``str`` Enums.

``enums.py`` holds the choices, ``stages.py`` the stage configs (train, calibrate, QAT, convert),
``checks.py`` the validation and ``config.json`` reading, ``parity.py`` the gate's thresholds.
The names below are the package's face: ``from edgetl.config import TrainConfig``.
"""

from edgetl.config.checks import (
    MAX_CALIB_SIZE,
    MAX_EPOCHS,
    SEED_MAX,
    check_calib_size,
    check_seed,
    check_types,
    from_dict,
    read_config_file,
    require,
)
from edgetl.config.enums import (
    DEFAULT_VARIANTS,
    IoType,
    KeepFineTune,
    MixedPrecision,
    Pooling,
    Quantization,
    Rounding,
    Strategy,
)
from edgetl.config.stages import (
    DEFAULT_CALIB_SEED,
    DEFAULT_CALIB_SIZE,
    CalibrationConfig,
    ConvertConfig,
    QatConfig,
    TrainConfig,
    check_budget,
)

__all__ = [
    "CalibrationConfig",
    "ConvertConfig",
    "DEFAULT_CALIB_SEED",
    "DEFAULT_CALIB_SIZE",
    "DEFAULT_VARIANTS",
    "IoType",
    "KeepFineTune",
    "MAX_CALIB_SIZE",
    "MAX_EPOCHS",
    "MixedPrecision",
    "Pooling",
    "QatConfig",
    "Quantization",
    "Rounding",
    "SEED_MAX",
    "Strategy",
    "TrainConfig",
    "check_budget",
    "check_calib_size",
    "check_seed",
    "check_types",
    "from_dict",
    "read_config_file",
    "require",
]
