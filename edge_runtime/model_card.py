"""The JSON model card: what a model file expects and what it produced.

Every artifact edgetl writes (the Keras model, each .tflite) has a card beside it
with the same stem (``model_int8.tflite`` -> ``model_int8.json``; the Keras model's
card is ``model_card.json``). The next stage and the Pi read the card instead of
repeating flags, so the preprocessing contract (size, colour order, normalisation,
input quantization) travels with the model. This module has no TensorFlow in it:
the toolchain writes cards with it and the device reads them with it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
from edgetl.runtime.errors import EdgeTLError

SCHEMA_VERSION = 1


class CardError(EdgeTLError, ValueError):
    """A card is missing, unreadable, or does not describe the file beside it."""


@dataclasses.dataclass(frozen=True)
class Normalization:
    """Per-channel ``(pixel - mean) / std`` applied to RGB uint8 pixels before the model."""

    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)

    @property
    def description(self) -> str:
        """A short human name for the common cases, e.g. ``[-1, 1]``."""
        if set(self.mean) == {127.5} and set(self.std) == {127.5}:
            return "[-1, 1] (x / 127.5 - 1)"
        if set(self.mean) == {0.0} and set(self.std) == {255.0}:
            return "[0, 1] (x / 255)"
        return f"(x - {list(self.mean)}) / {list(self.std)}"


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """The dtype and affine quantization of a model input or output tensor.

    For float tensors ``scale`` is 0 and ``zero_point`` 0 (TFLite's convention).
    """

    dtype: str = "float32"
    scale: float = 0.0
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return self.dtype in ("uint8", "int8") and self.scale > 0

    @classmethod
    def from_detail(cls, detail: dict[str, Any]) -> "TensorSpec":
        """The spec of an interpreter's tensor detail (``get_input_details()[0]`` and the like)."""
        scale, zero_point = detail.get("quantization", (0.0, 0))
        return cls(np.dtype(detail["dtype"]).name, float(scale), int(zero_point))


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """What a model file needs fed and what it returns; the contract between stages.

    Attributes:
        labels: class names in output order.
        height, width: model input size in pixels.
        color_order: channel order the model was trained on (always ``RGB`` here).
        normalization: float normalisation applied before the model (or before
            input quantization for integer-input models).
        input, output: tensor dtypes and quantization parameters.
        quantization: ``keras``, ``fp32``, ``fp16``, ``dynamic``, ``int8`` or ``qat_int8``.
        model_file: file name of the model beside the card.
        model_sha256: sha256 of that file; loaders refuse a mismatch.
        interpolation: cv2 resize interpolation name used by preprocessing.
        extra: everything else (training config, metrics, versions, source hashes).
    """

    labels: tuple[str, ...]
    height: int
    width: int
    model_file: str
    model_sha256: str
    quantization: str = "keras"
    color_order: str = "RGB"
    normalization: Normalization = Normalization()
    input: TensorSpec = TensorSpec()
    output: TensorSpec = TensorSpec()
    interpolation: str = "area"
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["labels"] = list(self.labels)
        data["normalization"]["description"] = self.normalization.description
        data["how_to_feed"] = how_to_feed(self)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelCard":
        try:
            version = int(data.get("schema_version", 0))
            if version != SCHEMA_VERSION:
                raise CardError(
                    f"card schema version {version} is not {SCHEMA_VERSION}; "
                    "re-run the edgetl stage that wrote it with this version"
                )
            _check_shapes(data)
            norm = data.get("normalization", {})
            card = cls(
                labels=tuple(str(x) for x in data["labels"]),
                height=int(data["height"]),
                width=int(data["width"]),
                model_file=str(data["model_file"]),
                model_sha256=str(data["model_sha256"]),
                quantization=str(data.get("quantization", "keras")),
                color_order=str(data.get("color_order", "RGB")),
                normalization=Normalization(
                    mean=tuple(float(x) for x in norm.get("mean", (127.5,) * 3)),
                    std=tuple(float(x) for x in norm.get("std", (127.5,) * 3)),
                ),
                input=_tensor_spec(data.get("input", {})),
                output=_tensor_spec(data.get("output", {})),
                interpolation=str(data.get("interpolation", "area")),
                extra=dict(data.get("extra", {})),
                schema_version=version,
            )
            check_values(card)
            return card
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            if isinstance(exc, CardError):
                raise
            raise CardError(f"model card is malformed ({exc!r}); regenerate it with edgetl") from None

    def save(self, path: Path) -> None:
        """Write the card atomically as indented JSON."""
        write_json_atomic(Path(path), self.to_dict())

    def replace(self, **changes: Any) -> "ModelCard":
        return dataclasses.replace(self, **changes)


INTERPOLATIONS = ("area", "linear", "nearest", "cubic", "lanczos4")
TENSOR_DTYPES = ("float32", "float16", "uint8", "int8")
MAX_SIDE = 8192


def _check_shapes(data: dict[str, Any]) -> None:
    """Each field has its JSON kind (a string where an object belongs is caught here, not as a crash later)."""
    kinds = {"labels": list, "normalization": dict, "input": dict, "output": dict, "extra": dict}
    for key, kind in kinds.items():
        if key in data and not isinstance(data[key], kind):
            raise CardError(
                f"model card field {key!r} must be a JSON {'list' if kind is list else 'object'}, got "
                f"{type(data[key]).__name__}; regenerate the card with edgetl"
            )


def check_values(card: ModelCard, fix: str = "model card is malformed ({}); regenerate it with edgetl") -> None:
    """Refuse values that would misbehave on every frame (std 0 gives inf/NaN scores, which rank nothing).

    The same checks run on a JSON card and on a card built from a model's TFLite
    metadata (``fix`` words the message for where the values came from).

    Raises:
        CardError: empty labels, a size, normalisation, tensor type, colour order or interpolation out of range.
    """

    norm, problems = card.normalization, []
    if not card.labels:
        problems.append("labels is empty")
    if not (1 <= card.height <= MAX_SIDE and 1 <= card.width <= MAX_SIDE):
        problems.append(f"input size {card.width}x{card.height} is not within 1..{MAX_SIDE}")
    if len(norm.mean) != 3 or len(norm.std) != 3:
        problems.append(f"normalization needs 3 means and 3 stds, got {len(norm.mean)} and {len(norm.std)}")
    elif not all(math.isfinite(v) for v in norm.mean + norm.std) or any(abs(v) < 1e-12 for v in norm.std):
        problems.append(f"normalization mean {list(norm.mean)} / std {list(norm.std)} must be finite with no zero std")
    for name, spec in (("input", card.input), ("output", card.output)):
        if spec.dtype not in TENSOR_DTYPES:
            problems.append(f"the {name} tensor is {spec.dtype}; edge_runtime feeds {', '.join(TENSOR_DTYPES)} only")
        elif not math.isfinite(spec.scale) or spec.scale < 0:
            problems.append(f"{name} tensor {spec.dtype} scale {spec.scale} is not a finite scale >= 0")
    if card.color_order not in ("RGB", "BGR"):
        problems.append(f"color_order {card.color_order!r} is not RGB or BGR")
    if card.interpolation not in INTERPOLATIONS:
        problems.append(f"interpolation {card.interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")
    if card.input.dtype in ("uint8", "int8") and card.input.scale <= 0:
        problems.append(
            f"the {card.input.dtype} input has no quantization parameters (scale 0): pixels cannot be mapped onto it"
        )
    if problems:
        raise CardError(fix.format(problems[0]))


def _tensor_spec(data: dict[str, Any]) -> TensorSpec:
    return TensorSpec(
        dtype=str(data.get("dtype", "float32")),
        scale=float(data.get("scale", 0.0)),
        zero_point=int(data.get("zero_point", 0)),
    )


def how_to_feed(card: ModelCard) -> str:
    """One sentence telling a device programmer how to build the input tensor."""
    base = (
        f"Decode to {card.color_order} uint8, resize to {card.width}x{card.height} "
        f"(cv2 INTER_{card.interpolation.upper()}), normalise {card.normalization.description}"
    )
    if card.input.quantized:
        return (
            f"{base}, then quantize: q = floor(x / {card.input.scale:.8g} + 0.5) + {card.input.zero_point} (halves round up), "
            f"clipped to {card.input.dtype}. edgetl.runtime.Classifier does all of this."
        )
    return f"{base}; feed {card.input.dtype}. edgetl.runtime.Classifier does all of this."


def card_path_for(model_path: Path) -> Path:
    """The card that belongs beside a model file (same stem, ``.json``)."""
    model_path = Path(model_path)
    if model_path.suffix == ".keras":
        return model_path.with_name("model_card.json")
    return model_path.with_suffix(".json")


def load_card(path: Path) -> ModelCard:
    """Read a card from JSON.

    Raises:
        CardError: the file is missing, not JSON, or not a card of this schema.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CardError(f"no model card at {path}; pass --card or keep the .json beside the model") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CardError(f"model card {path} is not readable JSON ({exc}); regenerate it with edgetl") from None
    if not isinstance(data, dict):
        raise CardError(f"model card {path} is not a JSON object; regenerate it with edgetl")
    return ModelCard.from_dict(data)


def verify_model_file(card: ModelCard, model_path: Path) -> None:
    """Refuse a model file whose sha256 is not the one its card records.

    Raises:
        CardError: the hash differs (a truncated copy, or a card from another model).
    """
    actual = sha256_file(model_path)
    if actual != card.model_sha256:
        raise CardError(
            f"{model_path} does not match its card (sha256 {actual[:12]}… vs {card.model_sha256[:12]}… "
            "recorded): the copy is incomplete or the card belongs to another model; copy both again"
        )


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` to write; renamed onto ``path`` when the block succeeds.

    The one atomic-write mechanism of edgetl (JSON, bytes, Keras models and weights):
    a reader, or a Pi copying the folder, never sees a half-written file, only the
    old content or the new. On an exception the temporary file is removed. The
    file gets the permissions a plain ``open`` would give it (not mkstemp's 0600).

    Args:
        path: the final file.
        suffix: ending of the temporary name (writers that pick a format by
            extension, as Keras does, need ``.keras`` or ``.h5``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`), flushed to disk before the rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: Path, data: Any) -> None:
    """Atomically write ``data`` as indented UTF-8 JSON.

    A string holding a file name that is not UTF-8 (``surrogateescape``) is written
    with JSON's ``\\udcXX`` escapes, which read back to the same string.
    """
    try:
        text = (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        text = (json.dumps(data, indent=2) + "\n").encode("ascii")
    write_bytes_atomic(Path(path), text)


def read_json(path: Path) -> Optional[Any]:
    """Parsed JSON of ``path``, or None when it does not exist."""
    path = Path(path)
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
