"""Real sample data for the README default, the tests and the benchmarks.

Fashion-MNIST ships as a Debian package (``apt-get install dataset-fashion-mnist``:
70k real 28x28 grey product photos, 10 classes, MIT) and needs no network. This
module turns a seeded, class-balanced subset of it into an ordinary class-folder
dataset of PNG files, the layout users have.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
from edgetl.config import check_seed, require
from edgetl.errors import DataError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "t-shirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
)


def read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) IDX file of unsigned bytes into an array of its stated shape."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(part: str = "train", source: Optional[Path] = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) of the ``train`` (60k) or ``test`` (10k) part.

    Raises:
        DataError: the Debian package is not installed (the message says how to install it).
    """
    source = Path(source or FASHION_MNIST_DIR)
    prefix = "train" if part == "train" else "t10k"
    images, labels = source / f"{prefix}-images-idx3-ubyte.gz", source / f"{prefix}-labels-idx1-ubyte.gz"
    if not images.exists() or not labels.exists():
        raise DataError(f"Fashion-MNIST is not in {source}; install it with: apt-get install dataset-fashion-mnist")
    return read_idx(images), read_idx(labels)


def write_fashion_mnist_folder(
    output: Path, per_class: int, seed: int = 0, part: str = "train", source: Optional[Path] = None
) -> dict[str, int]:
    """Write ``per_class`` seeded images of each class as PNGs under ``output/<class>/``.

    The folder is built beside ``output`` and renamed into place, so an interrupted
    run never leaves a half-filled dataset that looks complete.

    Returns:
        Images written per class.
    """
    import cv2

    check_seed("--seed", seed)
    require(
        [
            (
                1 <= per_class <= 7000,
                f"--per-class must be in 1..7000 (got {per_class}); each class has 6000 train, 1000 test images",
            )
        ]
    )
    images, labels = load_fashion_mnist(part, source)
    rng = np.random.default_rng(seed)
    output = Path(output)
    if output.exists():
        raise DataError(f"{output} already exists; remove it or choose another folder")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    counts: dict[str, int] = {}
    try:
        for label, name in enumerate(FASHION_MNIST_CLASSES):
            indices = np.flatnonzero(labels == label)
            chosen = np.sort(rng.permutation(indices)[:per_class])
            (tmp / name).mkdir()
            for index in chosen:
                cv2.imwrite(str(tmp / name / f"{part}_{index:05d}.png"), images[index])
            counts[name] = len(chosen)
        os.replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return counts
