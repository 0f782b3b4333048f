"""Check a ``.keras`` file is one edgetl wrote before any Keras code touches it.

``tf_keras.models.load_model(path, safe_mode=True)`` is not enough on its own:
safe mode applies only to the zip format, so a legacy HDF5 file named
``model.keras`` goes to the legacy loader, which unmarshals a ``Lambda`` layer's
bytecode and runs it; and even in a zip, a config may name any installed module,
which the deserialiser imports (``TFOpLambda`` also calls TensorFlow ops by name,
file writes included). So this module reads the file as data: a zip whose
members are exactly those ``model.save`` writes, and a ``config.json`` whose every
serialised object is a class edgetl builds (tf_keras layers of MobileNetV2 and its
head, tfmot's quantize wrappers and edgetl's own quantize configs). Anything
else is refused with one line; nothing here imports TensorFlow.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Iterator

from edgetl.errors import RunFolderError

ZIP_MAGIC = b"PK\x03\x04"
MEMBERS = frozenset({"metadata.json", "config.json", "model.weights.h5"})
MAX_CONFIG_BYTES = 64 << 20  # a MobileNetV2 1.4 QAT config is ~1 MB

_TFMOT = "tensorflow_model_optimization.python.core.quantization.keras."
# (module, class_name) of every object a saved edgetl model holds; module None is how
# tfmot serialises its quantize configs and quantizers inside a wrapper.
ALLOWED: frozenset[tuple[Any, str]] = frozenset(
    [("tf_keras.src.engine.functional", "Functional"), ("keras", "Functional")]
    + [
        ("keras.layers", name)
        for name in (
            "InputLayer",
            "Conv2D",
            "DepthwiseConv2D",
            "BatchNormalization",
            "ReLU",
            "ZeroPadding2D",
            "Add",
            "GlobalAveragePooling2D",
            "GlobalMaxPooling2D",
            "Dropout",
            "Dense",
        )
    ]
    + [
        ("keras.initializers", name)
        for name in ("GlorotUniform", "Zeros", "Ones", "RandomNormal", "TruncatedNormal", "VarianceScaling", "HeNormal")
    ]
    + [("keras.regularizers", "L2"), ("keras.optimizers", "Adam")]  # Adam: the compile_config of a compiled model
    + [
        (_TFMOT + "quantize_wrapper", "QuantizeWrapperV2"),
        (_TFMOT + "quantize_layer", "QuantizeLayer"),
        (_TFMOT + "quantize_aware_activation", "QuantizeAwareActivation"),
    ]
    + [
        (None, name)
        for name in (
            "FoldedConvConfig",
            "Default8BitQuantizeConfig",
            "Default8BitOutputQuantizeConfig",
            "NoOpQuantizeConfig",
            "AllValuesQuantizer",
            "LastValueQuantizer",
            "MovingAverageQuantizer",
            "KernelQuantizer",
        )
    ]
)


def check(path: Path | str) -> None:
    """Refuse ``path`` unless it is a zip ``.keras`` holding only classes edgetl builds.

    Raises:
        RunFolderError: missing or unreadable file, not a zip (legacy HDF5 and every
            other format run code on load), unexpected members, a Lambda layer,
            or an object of a class or module edgetl does not build.
    """
    path = Path(path)
    config = _read_config(path)
    try:
        objects = list(_objects(config))
    except RecursionError:
        raise RunFolderError(
            f"{path}: config.json is nested too deeply for a Keras model; use a model made by `edgetl train`"
        ) from None
    for module, class_name, registered in objects:
        if "lambda" in class_name.lower():
            raise RunFolderError(
                f"{path} holds a Lambda layer (Python code), which edgetl never loads; "
                "rebuild the model without Lambda layers, e.g. with `edgetl train`"
            )
        if (module, class_name) not in ALLOWED or registered not in (None, class_name):
            where = f" from module {module}" if module else ""
            raise RunFolderError(
                f"{path} holds a {class_name}{where}, which edgetl does not build and never loads; "
                "use a model made by `edgetl train` / `edgetl qat`"
            )


def _read_config(path: Path) -> Any:
    """The parsed ``config.json`` of a zip ``.keras``, after checking the magic and the members."""
    fix = "re-run `edgetl train` (or `edgetl qat`) to write it again"
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
        if magic == b"\x89HDF":
            raise RunFolderError(
                f"{path} is a legacy HDF5 file, not a zip .keras model; edgetl never loads HDF5 models "
                f"(their Lambda layers run code on load): {fix}"
            )
        if magic != ZIP_MAGIC:
            raise RunFolderError(f"{path} is not a zip .keras model (edgetl loads no other format); {fix}")
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if names != MEMBERS:
                extra = sorted(names - MEMBERS) or sorted(MEMBERS - names)
                raise RunFolderError(
                    f"{path} is not a .keras model edgetl wrote (members {', '.join(extra)[:120]} "
                    f"differ from {', '.join(sorted(MEMBERS))}); {fix}"
                )
            info = archive.getinfo("config.json")
            if info.file_size > MAX_CONFIG_BYTES:
                raise RunFolderError(
                    f"{path}: config.json is {info.file_size} bytes, far beyond a MobileNetV2's; {fix}"
                )
            return json.loads(archive.read(info).decode("utf-8"))
    except FileNotFoundError:
        raise RunFolderError(f"{path} does not exist; {fix}") from None
    except (OSError, zipfile.BadZipFile, ValueError, RuntimeError) as exc:  # RuntimeError: encrypted member
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise RunFolderError(f"{path} is not a readable .keras model ({first}); {fix}") from None


def _objects(node: Any) -> Iterator[tuple[Any, str, Any]]:
    """Every serialised object in a Keras config: (module, class_name, registered_name), depth first.

    A ``class_name`` that is not a string is itself malformed and reported as such.
    """
    if isinstance(node, dict):
        if "class_name" in node:
            name = node["class_name"]
            yield node.get("module"), name if isinstance(name, str) else repr(name), node.get("registered_name")
        for value in node.values():
            yield from _objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value)
