"""The representative dataset the TFLite converter calibrates with.

Each image is prepared by the device's own functions (``edgetl.runtime.preprocess``:
decode, RGB, resize, normalise with the card's normalisation), so int8 ranges are
set on exactly the values the Pi will feed. One image per step, as the converter
expects: a list holding one float32 (1, H, W, 3) array.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional

import numpy as np
from edgetl.calibration.manifest import Manifest
from edgetl.runtime import decode, preprocess
from edgetl.runtime.model_card import ModelCard

PixelLoader = Callable[[str], np.ndarray]


def representative_dataset(
    manifest: Manifest, card: ModelCard, load: Optional[PixelLoader] = None
) -> Callable[[], Iterator[list[np.ndarray]]]:
    """A converter-ready generator factory over the manifest's images.

    Args:
        manifest: the chosen images, in order.
        card: the float model's card (input size, interpolation, normalisation).
        load: ``ref -> RGB uint8 (H, W, 3)`` at the card's size, for refs that are
            not files (``#N`` rows of an image array); default decodes files with
            ``decode.load_image``.

    Returns:
        A zero-argument callable; each call yields every image once, in order.
    """

    def read(ref: str) -> np.ndarray:
        if load is not None:
            return load(ref)
        return decode.load_image(ref, card.height, card.width, card.interpolation)

    def generate() -> Iterator[list[np.ndarray]]:
        for ref in manifest.refs:
            pixels = read(ref)
            if pixels.shape != (card.height, card.width, 3):
                raise ValueError(
                    f"calibration image {ref} is {pixels.shape}, expected ({card.height}, {card.width}, 3)"
                )
            yield [preprocess.normalize(pixels, card.normalization)[None].astype(np.float32)]

    return generate
