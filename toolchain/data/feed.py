"""Feeding pixels to Keras: normalised batches and seeded augmentation, in numpy + cv2.

Normalisation is ``edgetl.runtime.preprocess.normalize``, the function the device
runs, so training sees exactly the values the Pi will feed. Augmentation (flip,
small rotation, contrast) is applied to uint8 pixels before that, as a camera
would deliver them.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np
from edgetl.model.graph import keras
from edgetl.runtime.model_card import Normalization
from edgetl.runtime.preprocess import normalize


def augment(
    images: np.ndarray, rng: np.random.Generator, max_degrees: float = 10.0, contrast: float = 0.2
) -> np.ndarray:
    """Random horizontal flip, rotation within ±``max_degrees`` and contrast in 1±``contrast``."""
    import cv2

    out = np.empty_like(images)
    h, w = images.shape[1:3]
    for i, image in enumerate(images):
        if rng.random() < 0.5:
            image = image[:, ::-1]
        angle = rng.uniform(-max_degrees, max_degrees)
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        image = cv2.warpAffine(np.ascontiguousarray(image), matrix, (w, h), borderMode=cv2.BORDER_REFLECT_101)
        factor = rng.uniform(1 - contrast, 1 + contrast)
        mean = image.mean(axis=(0, 1), keepdims=True)
        out[i] = np.clip((image - mean) * factor + mean, 0, 255).astype(np.uint8)
    return out


def normalized_batches(images: np.ndarray, normalization: Normalization, batch_size: int) -> Iterator[np.ndarray]:
    """Yield float batches of ``images`` in order, normalised as the device does."""
    for start in range(0, len(images), batch_size):
        yield normalize(images[start : start + batch_size], normalization)


def predict(model: Any, images: np.ndarray, normalization: Normalization, batch_size: int = 64) -> np.ndarray:
    """Model outputs for uint8 images, batch by batch (never a whole float copy in memory)."""
    outputs = [
        np.asarray(model.predict_on_batch(batch)) for batch in normalized_batches(images, normalization, batch_size)
    ]
    if not outputs:
        return np.zeros((0,) + tuple(int(d) for d in model.output_shape[1:]), dtype=np.float32)
    return np.concatenate(outputs).astype(np.float32)


def make_sequence(
    images: np.ndarray,
    labels: np.ndarray,
    normalization: Normalization,
    batch_size: int,
    seed: int,
    augmented: bool,
    shuffle: bool = True,
) -> Any:
    """A ``keras.utils.Sequence`` of (normalised images, labels), reshuffled and re-augmented each epoch."""

    class _Batches(keras().utils.Sequence):
        def __init__(self) -> None:
            super().__init__()
            self.epoch = 0
            self.order = np.arange(len(images))
            self.on_epoch_end()

        def __len__(self) -> int:
            return math.ceil(len(images) / batch_size)

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            chosen = np.sort(self.order[index * batch_size : (index + 1) * batch_size])
            batch = images[chosen]
            if augmented:
                batch = augment(batch, np.random.default_rng((seed, self.epoch, index)))
            return normalize(batch, normalization), labels[chosen]

        def on_epoch_end(self) -> None:
            self.epoch += 1
            if shuffle:
                self.order = np.random.default_rng((seed, self.epoch)).permutation(len(images))

    return _Batches()


def augmented_views(images: np.ndarray, views: int, seed: int) -> Iterator[np.ndarray]:
    """The original images, then ``views - 1`` seeded augmented copies (for cached features)."""
    yield images
    for view in range(1, views):
        yield augment(images, np.random.default_rng((seed, 1000 + view)))
