"""The one preprocessing contract: colour order, resize, normalise, quantize.

Training-side evaluation, calibration, parity and the Pi all call these functions,
so a model never sees pixels prepared one way in training and another on the
device (the mismatch behind tensorflow#60072 and teachablemachine#356). The
conversion from OpenCV's BGR to the model's RGB happens here and nowhere else.
Files become pixels in :mod:`edgetl.runtime.decode` (which hands them to ``to_rgb``).
numpy + cv2 only: no TensorFlow, no Pillow.
"""

from __future__ import annotations

import functools

import numpy as np
from edgetl.runtime.errors import ArgumentError
from edgetl.runtime.model_card import ModelCard, Normalization, TensorSpec

TIE_SLACK = 1e-3  # of a quantization step: float32 normalisation lands within ~1e-5 of a true half


def _cv2():
    import cv2  # cv2 costs ~100 ms; only pay it when pixels are touched

    return cv2


def _checked(frame: np.ndarray) -> np.ndarray:
    """``frame`` as uint8 (H, W, 1|3|4); 16-bit keeps its high byte."""
    if not isinstance(frame, np.ndarray):
        raise ArgumentError(
            f"expected an image as a numpy uint8 array (H, W[, 1|3|4]), got {type(frame).__name__}; "
            "decode files with edgetl.runtime.decode.load_image or cv2.imread"
        )
    if frame.dtype != np.uint8:
        if frame.dtype == np.uint16:
            frame = (frame >> 8).astype(np.uint8)
        else:
            raise ArgumentError(f"expected uint8 pixels, got {frame.dtype}; convert the image to uint8 (0-255)")
    if frame.ndim == 2:
        frame = frame[:, :, None]
    if frame.ndim != 3 or frame.shape[2] not in (1, 3, 4) or not frame.shape[0] or not frame.shape[1]:
        raise ArgumentError(f"expected an (H, W[, 1|3|4]) image with pixels, got shape {frame.shape}")
    return frame


def to_rgb(frame: np.ndarray, color_order: str = "BGR") -> np.ndarray:
    """Return an RGB uint8 (H, W, 3) view of a grey, BGR(A) or RGB(A) frame.

    Args:
        frame: uint8 array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4).
        color_order: ``BGR`` for OpenCV frames, ``RGB`` for Picamera2/Pillow arrays.
    """
    frame = _checked(frame)
    if not isinstance(color_order, str) or color_order.upper() not in ("BGR", "RGB"):
        raise ArgumentError(f"color_order must be 'BGR' (OpenCV frames) or 'RGB' (got {color_order!r})")
    if frame.shape[2] == 1:
        return np.repeat(frame, 3, axis=2)
    frame = frame[:, :, :3]
    if color_order.upper() == "BGR":
        return np.ascontiguousarray(frame[:, :, ::-1])
    return np.ascontiguousarray(frame)


def resize(rgb: np.ndarray, height: int, width: int, interpolation: str = "area") -> np.ndarray:
    """Resize to the model's input size (a stretch, no crop).

    ``area`` (the default) uses INTER_AREA when shrinking and INTER_LINEAR when
    enlarging, the antialiased choice for both directions.
    """
    cv2 = _cv2()
    if rgb.shape[0] == height and rgb.shape[1] == width:
        return rgb
    if interpolation == "area":
        shrinking = rgb.shape[0] * rgb.shape[1] > height * width
        flag = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    else:
        flag = getattr(cv2, f"INTER_{interpolation.upper()}")
    return cv2.resize(rgb, (width, height), interpolation=flag)


def normalize(pixels: np.ndarray, normalization: Normalization) -> np.ndarray:
    """Map RGB uint8 pixels (any leading shape, channels last) to the model's float range."""
    mean = np.asarray(normalization.mean, dtype=np.float32)
    std = np.asarray(normalization.std, dtype=np.float32)
    return (np.asarray(pixels, dtype=np.float32) - mean) / std


def quantize(values: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Affine-quantize float values to the tensor's integer dtype (identity for float tensors).

    Halves round up, as TensorFlow's fake-quant ops (QAT) round, not to even:
    MobileNet's ``x / 127.5 - 1`` puts every uint8 pixel exactly half a step
    between two codes of the 2/255 input scale, and round-half-to-even moved
    pixels up and down by parity, noise that flipped 1.05% of the float model's
    Fashion-MNIST answers; rounding every tie up is a uniform half-grey-level
    brightness shift that flipped 0.15%. ``TIE_SLACK`` absorbs float32 error.
    """
    if not spec.quantized:
        return np.asarray(values, dtype=np.dtype(spec.dtype))
    info = np.iinfo(np.dtype(spec.dtype))
    q = np.floor(np.asarray(values, dtype=np.float64) / spec.scale + (0.5 + TIE_SLACK)) + spec.zero_point
    return np.clip(q, info.min, info.max).astype(spec.dtype)


def dequantize(values: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Float values of a (possibly quantized) output tensor."""
    if not spec.quantized:
        return np.asarray(values, dtype=np.float32)
    return (np.asarray(values, dtype=np.float32) - spec.zero_point) * np.float32(spec.scale)


@functools.lru_cache(maxsize=16)
def _input_table(normalization: Normalization, spec: TensorSpec) -> np.ndarray:
    """``quantize(normalize(v))`` for every pixel value v and channel, as a (1, 256, 3) table."""
    values = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    return np.ascontiguousarray(quantize(normalize(values, normalization), spec)[None])


def prepare(frame: np.ndarray, card: ModelCard, color_order: str = "BGR") -> np.ndarray:
    """Build the model's input tensor (1, H, W, 3) from a camera frame or decoded image.

    Equal to ``quantize(normalize(resize(to_rgb(frame))))``, computed in the order
    that costs least on a Pi: resize first (per channel, so the channel order can
    wait), then swap channels on the small image, then one table lookup that both
    normalises and quantizes (640x480 frame to a 224x224 uint8 tensor: 2.0 ms
    on one x86 core, 4.4 ms in the plain order).

    Args:
        frame: uint8 image; ``color_order`` says how its channels are ordered.
        card: the model's card (size, normalisation, input dtype and quantization).
        color_order: ``BGR`` for OpenCV frames, ``RGB`` for already-decoded images.
    """
    frame = _checked(frame)
    small = resize(np.ascontiguousarray(frame), card.height, card.width, card.interpolation)
    pixels = to_rgb(small, color_order)
    if card.color_order.upper() == "BGR":  # a model trained on BGR pixels (Caffe-style ports)
        pixels = np.ascontiguousarray(pixels[:, :, ::-1])
    table = _input_table(card.normalization, card.input)  # frozen dataclasses: hashable cache keys
    if table.dtype in (np.uint8, np.int8, np.float32):
        return _cv2().LUT(pixels, table)[None]
    return table[0][pixels, np.arange(3)][None]
