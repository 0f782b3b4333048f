"""The reference model's own noise floor: how many answers an imperceptible change of the input flips.

A fixed top-1 agreement cannot judge fidelity on anyone's data: how many answers a
faithful int8 model changes depends on how many images the model is unsure about
(near-ties between its top two classes), which depends on the data. A 95%-accurate
model on Fashion-MNIST changes about 1% of its answers when each pixel moves by one
grey level; a 55%-accurate one on colour pictures of new objects changes about 5%.
So the parity gate measures that floor on the same held-out images and judges each
variant's flips against it (:func:`edgetl.stats.fidelity_check`).

Two perturbations, both seeded and both below what a person can see, applied to the
uint8 RGB image at the model's input size -- the pixels the device hands to the model
after its decode and resize, before normalisation and input quantization:

- ``noise``: every channel of every pixel moves by −1, 0 or +1 grey level (uniform,
  seeded per run), the sensor noise of a still scene between two frames;
- ``jpeg95``: the image re-saved as JPEG at quality 95 (cv2), what storing or
  streaming the frame does.

Perturbing at the input size makes the floor independent of the source resolution
(a large photo's pixel noise would vanish in the area resize; a 28-px image's would be
blown up by the upscale). The floor the gate judges against is ``noise``: one grey
level is the smallest change a uint8 input can make, the device's own quantum. The
JPEG re-save is reported beside it for scale, not gated on: at 96 px on colourful
pictures OpenCV's q95 (4:2:0 chroma) flipped 13.3% of answers where ±1 grey level
flipped 5.3%, and a floor that large let int8 with nearest rounding (12.2%) through.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

SEED = 0
JPEG_QUALITY = 95
DESCRIPTIONS = {
    "noise": "moving every pixel by ±1 grey level",
    "jpeg95": f"re-saving the images as JPEG (quality {JPEG_QUALITY})",
}
PERTURBATIONS = tuple(DESCRIPTIONS)


def _noise(pixels: np.ndarray, seed: int) -> np.ndarray:
    step = np.random.default_rng(seed).integers(-1, 2, size=pixels.shape, dtype=np.int16)
    return np.clip(pixels.astype(np.int16) + step, 0, 255).astype(np.uint8)


def _jpeg(pixels: np.ndarray, _: int) -> np.ndarray:
    import cv2

    out = np.empty_like(pixels)
    for i, rgb in enumerate(pixels):
        ok, data = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise ValueError("cv2 could not encode an image as JPEG")
        out[i] = cv2.imdecode(data, cv2.IMREAD_COLOR)[:, :, ::-1]
    return out


_APPLY: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {"noise": _noise, "jpeg95": _jpeg}


def perturb(pixels: np.ndarray, kind: str, seed: int = SEED) -> np.ndarray:
    """A perturbed copy of uint8 RGB images (N, H, W, 3); ``kind`` is one of ``PERTURBATIONS``."""
    return _APPLY[kind](np.asarray(pixels, np.uint8), seed)


def floor_flips(
    predict: Callable[[np.ndarray], np.ndarray],
    pixels: np.ndarray,
    clean: np.ndarray,
    perturbed: Optional[dict[str, np.ndarray]] = None,
) -> dict[str, np.ndarray]:
    """Per perturbation, per image: does ``predict``'s top-1 change from ``clean``'s?

    Args:
        predict: uint8 images -> class probabilities (the reference model).
        pixels: the held-out images as the model reads them (uint8 RGB at input size).
        clean: the reference's probabilities on ``pixels``.
        perturbed: a cache of the perturbed images by kind, filled on first use (so a
            second reference model reuses them).

    Returns:
        ``{perturbation: bool array}``; under ``"<kind>_shift"`` each image's probability
        shift (:func:`shift`); under ``"<kind>_dprob"`` the mean |Δprob|.
    """
    top = clean.argmax(1)
    out: dict[str, np.ndarray] = {}
    perturbed = {} if perturbed is None else perturbed
    for kind in PERTURBATIONS:
        if kind not in perturbed:
            perturbed[kind] = perturb(pixels, kind)
        probs = predict(perturbed[kind])
        out[kind] = probs.argmax(1) != top
        out[f"{kind}_shift"] = shift(probs, clean)
        out[f"{kind}_dprob"] = np.asarray(float(np.abs(probs - clean).mean()))
    return out


def shift(probs: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per image, how far the class probabilities moved: half the sum of |Δprob| (total variation).

    0 for the same scores, 1 for disjoint ones; equal to the largest change any set of
    classes sees, so 0.02 reads "no class's probability moved by more than 2 points".
    Every image contributes, not only the few near a tie whose top-1 flips, so a mean of
    shifts resolves a variant against the noise floor on far fewer images than flip
    counts do (``edgetl.stats.shift_check``).
    """
    return 0.5 * np.abs(np.asarray(probs, np.float64) - np.asarray(reference, np.float64)).sum(axis=1)


GATING = "noise"


def chosen(floor: dict[str, np.ndarray]) -> str:
    """The perturbation the gate judges against: ``GATING`` (±1 grey level) when measured."""
    return GATING if GATING in floor else next(k for k in PERTURBATIONS if k in floor)
