"""``edgetl parity``'s typed configuration: per-variant thresholds, overrides, the inconclusive policy.

Thresholds are in one unit (percent; drops in percentage points) and validated here,
so a value like ``--min-agreement 0.99`` (meant as 99%) is refused in one line
instead of silently meaning 0.99%.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Optional, Union

from edgetl.config.checks import check_types
from edgetl.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """What one variant must hold, in one unit: percent (points for drops).

    Attributes:
        max_drop: largest allowed top-1 drop vs ``model.keras``, in percentage points.
        min_agreement: the hard floor of top-1 agreement with the model the variant was
            converted from, in percent: a catastrophe whatever the model (fidelity proper
            is judged against the noise floor, ``max_flip_ratio``).
        max_class_drop: largest allowed top-1 drop of any class, in points; raised to the
            noise floor's flip rate (in points) when that is larger.
        max_flip_ratio: the variant may move its source's probabilities at most this many
            times as far as an imperceptible perturbation of the input does (mean per-image
            probability shift, ``edgetl.gate.noise_floor.shift``; top-1 flips for a floor measured
            without per-image shifts).
    """

    max_drop: float
    min_agreement: float
    max_class_drop: float
    max_flip_ratio: float = 1.5


# Per-variant defaults (docs/parity.md). A check fails only on evidence (its 95% interval
# lies beyond the threshold), so a strict threshold costs inconclusive verdicts on small test
# sets, never false alarms. Drops carry the promise "as good as the float model", in accuracy
# points whatever the model: 0.3 pt for every quantized variant (stricter than MLPerf's 99% of
# FP32 and Intel Neural Compressor's 1% relative). How many answers a faithful conversion
# changes depends on how unsure the model is, so fidelity is judged against the source's own
# noise floor (how far its probabilities move when every pixel moves by ±1 grey level, measured
# on the same images): at most 1.5x the floor. Measured (BENCHMARKS.md, "Parity gate"): healthy
# int8 0.52-1.19x its floor on three datasets and their weak models; nearest-rounding int8
# 2.0-2.7x. Agreement keeps a hard floor that
# catches a catastrophe however unsure the model (constant-image calibration agrees ~12%);
# fp32 is the same function in another runtime, anything below 99.5% is a bug.
DEFAULT_THRESHOLDS: dict[str, Thresholds] = {
    "fp32": Thresholds(max_drop=0.1, min_agreement=99.5, max_class_drop=1.0),
    "fp16": Thresholds(max_drop=0.2, min_agreement=80.0, max_class_drop=2.0),
    "dynamic": Thresholds(max_drop=0.3, min_agreement=80.0, max_class_drop=3.0),
    "int8": Thresholds(max_drop=0.3, min_agreement=80.0, max_class_drop=3.0),
    "qat_int8": Thresholds(max_drop=0.3, min_agreement=80.0, max_class_drop=3.0),
}
LIMITS = ("max_drop", "min_agreement", "max_class_drop", "max_flip_ratio")
FALLBACK_THRESHOLDS = DEFAULT_THRESHOLDS["int8"]  # a variant name edgetl does not know (a renamed file)
Limit = Optional[Union[float, dict[str, float]]]


class Inconclusive(str, enum.Enum):
    """What the parity gate exits with when its data cannot resolve a check."""

    PASS = "pass"  # exit 0, reported as inconclusive with the images it would take
    FAIL = "fail"  # exit 4


def variant_name(text: str) -> str:
    """``int8``, ``qat-int8``, ``model_int8.tflite`` -> the variant name used in file names."""
    name = text.strip().lower().replace("-", "_")
    name = name.removesuffix(".tflite").removesuffix(".json")
    return name.removeprefix("model_")


@dataclasses.dataclass(frozen=True)
class ParityConfig:
    """``edgetl parity``: what to check and against which thresholds.

    Attributes:
        run: the run folder (``model.keras`` + ``model_*.tflite`` with cards).
        data: another labelled folder or CSV to evaluate on; default the run's test split.
        models: variant names (``int8``, ``fp16``...); default every ``model_*.tflite``.
        max_drop, min_agreement, max_class_drop, max_flip_ratio: None keeps each variant's default
            (``DEFAULT_THRESHOLDS``); a number applies to every variant; a dict
            ``{variant: value}`` (``"*"`` for all) to some. Drops in points, agreement in percent.
        inconclusive: exit 0 (``pass``) or 4 (``fail``) when the data cannot resolve a check.
        threads: interpreter threads; None: all cores (edge-classify's default too).
        junit: also write a JUnit XML report here (never a file of the run or of the data).
        data_root: the folder holding the run's images, when the run folder was not trained
            on this machine (its recorded root is then not used; ``edgetl.untrusted``).
    """

    run: str
    data: Optional[str] = None
    models: Optional[tuple[str, ...]] = None
    max_drop: Limit = None
    min_agreement: Limit = None
    max_class_drop: Limit = None
    max_flip_ratio: Limit = None
    inconclusive: Inconclusive = Inconclusive.PASS
    threads: Optional[int] = None
    junit: Optional[str] = None
    data_root: Optional[str] = None

    def __post_init__(self) -> None:
        check_types(self)
        if self.models is not None:
            object.__setattr__(self, "models", tuple(dict.fromkeys(variant_name(m) for m in self.models if m.strip())))
            if not self.models:
                raise ConfigError("--variants needs at least one variant name, e.g. int8,fp16")
        object.__setattr__(self, "inconclusive", Inconclusive(self.inconclusive))
        for name in LIMITS:
            for value in _limit_values(getattr(self, name)):
                _check_limit(name, value)
        if self.threads is not None and not 1 <= self.threads <= 64:
            raise ConfigError(f"--threads must be between 1 and 64 (got {self.threads})")

    @property
    def report_name(self) -> str:
        """``parity``, or ``parity_<variants>`` for a --models subset (the full report is kept)."""
        return "parity" if self.models is None else "parity_" + "_".join(self.models)

    def thresholds_for(self, variant: str) -> Thresholds:
        """The variant's default thresholds with this config's overrides applied."""
        base = DEFAULT_THRESHOLDS.get(variant, FALLBACK_THRESHOLDS)
        changes = {}
        for name in LIMITS:
            value = getattr(self, name)
            if isinstance(value, dict):
                value = value.get(variant, value.get("*"))
            if value is not None:
                changes[name] = float(value)
        return dataclasses.replace(base, **changes)


def _limit_values(limit: Limit) -> list[float]:
    if limit is None:
        return []
    return list(limit.values()) if isinstance(limit, dict) else [limit]


def _check_limit(name: str, value: float) -> None:
    option = "--" + name.replace("_", "-")
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{option} must be a number (got {value!r})")
    if name == "min_agreement":
        if 0 < value <= 1:
            raise ConfigError(f"{option} is a percentage: give {100 * value:g} for {100 * value:g}% (got {value:g})")
        if not 0 <= value <= 100:
            raise ConfigError(f"{option} must be a percentage between 0 and 100 (got {value:g})")
    elif name == "max_flip_ratio":
        if not 1 <= value <= 100:
            raise ConfigError(
                f"{option} is a multiple of the noise floor, between 1 and 100 (got {value:g}); 1.5 allows "
                "a variant 1.5 times as many changed answers as an imperceptible change of the input"
            )
    elif not 0 <= value <= 100:
        raise ConfigError(f"{option} is in percentage points, between 0 and 100 (got {value:g})")


def parse_limit(option: str, text: Optional[str]) -> Limit:
    """``"0.5"`` -> 0.5; ``"int8=0.5,fp16=0.2"`` -> ``{"int8": 0.5, "fp16": 0.2}`` (``*=`` for every variant)."""
    if text is None:
        return None
    try:
        if "=" not in text:
            return float(text)
        pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
        return {("*" if k.strip() == "*" else variant_name(k)): float(v) for k, v in pairs}
    except ValueError:
        raise ConfigError(
            f"{option} takes a number or VARIANT=NUMBER pairs, e.g. 0.5 or int8=0.5,fp16=0.2 (got {text!r})"
        ) from None
