"""Validating config values and reading ``config.json``: one clear line per bad value."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from pathlib import Path
from typing import Any, Optional, TypeVar

from edgetl.config.enums import IoType, KeepFineTune, MixedPrecision, Pooling, Quantization, Rounding, Strategy
from edgetl.errors import ConfigError

T = TypeVar("T")


SEED_MAX = 2**32 - 1  # numpy and TensorFlow seeds are unsigned 32-bit
MAX_EPOCHS = 100_000
MAX_CALIB_SIZE = 100_000


def require(checks: list[tuple[bool, str]]) -> None:
    """Raise ConfigError with the message of the first failed ``(ok, message)`` check."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def check_seed(name: str, value: Optional[int]) -> None:
    """A seed is None (where allowed) or an integer in 0..2**32-1, what numpy and TensorFlow accept."""
    if value is not None and not 0 <= value <= SEED_MAX:
        raise ConfigError(f"{name} must be in 0..{SEED_MAX} (got {value}); pick a seed in that range")


def check_calib_size(size: int) -> None:
    if not 1 <= size <= MAX_CALIB_SIZE:
        raise ConfigError(
            f"--calib-size must be >= 1 (got {size}); a few hundred images is typical"
            if size < 1
            else f"--calib-size must be <= {MAX_CALIB_SIZE} (got {size}); a few hundred images is typical"
        )


def check_types(config: Any) -> None:
    """Every field of a config dataclass has its declared kind: enums are members, numbers finite, no stray nulls.

    The one place a value of the wrong kind is caught, whether it came from a flag,
    a config file or a library caller (``"pooling": null`` was max pooling, a NaN
    learning rate saved a NaN model).
    """
    for field in dataclasses.fields(config):
        value, kind = getattr(config, field.name), str(field.type)
        optional = kind.startswith("Optional[")
        base = kind[len("Optional[") : -1] if optional else kind
        shown = "null" if value is None else repr(value)
        enum_type = next((e for e in _ENUMS if e.__name__ == base), None)
        if enum_type is None and base not in ("int", "float", "str", "bool") and not base.startswith("tuple["):
            continue  # a kind the config checks itself (parity's limits)
        if value is None:
            if not optional:
                raise ConfigError(f"{_flag(field.name)} must be set (got null); remove the key to use the default")
        elif enum_type is not None and not isinstance(value, enum_type):
            if value not in {m.value for m in enum_type}:
                raise ConfigError(f"{_flag(field.name)}={shown} is not one of: {', '.join(m.value for m in enum_type)}")
            object.__setattr__(config, field.name, enum_type(value))  # a library caller's plain string: the member
        elif base in ("int", "float") and (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (base == "int" and not isinstance(value, int))
        ):
            raise ConfigError(f"{_flag(field.name)}={shown} must be {'an integer' if base == 'int' else 'a number'}")
        elif base == "float" and not math.isfinite(value):
            raise ConfigError(f"{_flag(field.name)} must be a finite number (got {value}); pass a real value")
        elif base in ("str", "bool") and not isinstance(value, str if base == "str" else bool):
            raise ConfigError(f"{_flag(field.name)}={shown} must be {'a string' if base == 'str' else 'true or false'}")
        elif base.startswith("tuple[") and base.endswith(", ...]"):
            object.__setattr__(
                config, field.name, _check_tuple(field.name, base[len("tuple[") : -len(", ...]")], value)
            )


def _check_tuple(name: str, inner: str, value: Any) -> tuple[Any, ...]:
    """A tuple field's value: a tuple (or list) of enum members / strings, as the field declares."""
    enum_type = next((e for e in _ENUMS if e.__name__ == inner), None)
    words = f"one of {', '.join(m.value for m in enum_type)}" if enum_type else "a string"
    if not isinstance(value, (tuple, list)):
        raise ConfigError(f"{_flag(name)}={value!r} must be a list of values, each {words}")
    out = []
    for item in value:
        if enum_type is not None and not isinstance(item, enum_type):
            if item not in {m.value for m in enum_type}:
                raise ConfigError(f"{_flag(name)}: {item!r} is not {words}")
            item = enum_type(item)
        elif enum_type is None and not isinstance(item, str):
            raise ConfigError(f"{_flag(name)}: {item!r} must be {words}")
        out.append(item)
    return tuple(out)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


_ENUMS: tuple[type[enum.Enum], ...] = (
    Pooling,
    MixedPrecision,
    Strategy,
    Quantization,
    IoType,
    Rounding,
    KeepFineTune,
)


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a config dataclass from plain JSON values, refusing unknown keys."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(unknown)}; valid keys: {', '.join(fields)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        kind = str(fields[name].type)
        enum_type = next((e for e in _ENUMS if e.__name__ in kind), None)
        try:
            kwargs[name] = enum_type(value) if enum_type else _checked(name, kind, value)
        except ValueError:
            choices = ", ".join(m.value for m in enum_type)  # type: ignore[union-attr]
            shown = "null" if value is None else repr(value)
            raise ConfigError(f"config key {name}={shown} is not one of: {choices}") from None
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"config is incomplete ({exc}); pass DATA and --output or set them in the file") from None


_JSON_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "int": ((int,), "an integer"),
    "float": ((int, float), "a number"),
    "bool": ((bool,), "true or false"),
    "str": ((str,), "a string"),
}


def _checked(name: str, kind: str, value: Any) -> Any:
    """``value`` when it has the field's plain type (``int``, ``Optional[int]``...), else ConfigError."""
    optional = kind.startswith("Optional[")
    base = kind[len("Optional[") : -1] if optional else kind
    if base not in _JSON_TYPES or (value is None and optional):
        return value
    allowed, words = _JSON_TYPES[base]
    if isinstance(value, bool) and base != "bool" or not isinstance(value, allowed):
        raise ConfigError(
            f"config key {name}={value!r} must be {'null or ' if optional else ''}{words}; fix the config file"
        )
    return float(value) if base == "float" else value


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse a JSON or TOML config file as data (never executed)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".toml":
            try:
                import tomllib
            except ImportError:  # Python < 3.11
                raise ConfigError(f"config file {path}: TOML needs Python 3.11+; write it as JSON") from None
            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist; pass an existing JSON/TOML file (e.g. RUN/config.json)"
        ) from None
    except (ValueError, OSError) as exc:  # JSONDecodeError, TOMLDecodeError and UnicodeDecodeError are ValueErrors
        raise ConfigError(
            f"config file {path} is not valid {'TOML' if path.suffix.lower() == '.toml' else 'JSON'} ({exc}); fix its syntax"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold an object of option names to values")
    return data
