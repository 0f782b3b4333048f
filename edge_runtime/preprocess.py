"""The one preprocessing contract: decode, colour order, resize, normalise, quantize.

Training-side evaluation, calibration, parity and the Pi all call these functions,
so a model never sees pixels prepared one way in training and another on the
device (the mismatch behind tensorflow#60072 and teachablemachine#356). The
conversion from OpenCV's BGR to the model's RGB happens here and nowhere else.
numpy + cv2 only: no TensorFlow, no Pillow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np

from edge_runtime.model_card import ModelCard, Normalization, TensorSpec

# Images larger than this are decoded at a reduced scale instead of allocating
# gigabytes for a 20000x20000 scan; classifiers want a few hundred pixels anyway.
MAX_DECODE_PIXELS = 40_000_000


class ImageDecodeError(ValueError):
    """A file is not a readable image (empty, truncated, not an image at all)."""


def _cv2():
    import cv2  # noqa: PLC0415 - cv2 costs ~100 ms; only pay it when pixels are touched

    return cv2


def decode_image(path: Union[str, Path]) -> np.ndarray:
    """Read an image file of any common mode into an RGB uint8 array (H, W, 3).

    Grey, RGBA, palette, CMYK and 16-bit files become 8-bit RGB; EXIF orientation
    is applied; non-ASCII paths work (bytes are read by numpy, decoded by cv2).

    Raises:
        ImageDecodeError: the file is empty, truncated, or not an image.
    """
    cv2 = _cv2()
    path = Path(path)
    try:
        raw = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise ImageDecodeError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if raw.size == 0:
        raise ImageDecodeError(f"{path}: empty file")
    pixels = _header_pixels(raw)
    flag = cv2.IMREAD_COLOR
    for factor, reduced in ((2, cv2.IMREAD_REDUCED_COLOR_2), (4, cv2.IMREAD_REDUCED_COLOR_4), (8, cv2.IMREAD_REDUCED_COLOR_8)):
        if pixels <= MAX_DECODE_PIXELS * (factor // 2) ** 2:
            break
        flag = reduced
    try:
        bgr = cv2.imdecode(raw, flag)
    except cv2.error as exc:
        raise ImageDecodeError(f"{path}: not a decodable image ({str(exc).strip().splitlines()[-1]})") from None
    if bgr is None or bgr.size == 0:
        raise ImageDecodeError(f"{path}: not a decodable image (truncated, or not an image format cv2 reads)")
    return to_rgb(bgr, "BGR")


def _header_pixels(raw: np.ndarray) -> int:
    """Pixel count from a PNG/JPEG header without decoding; 0 when unknown."""
    head = raw[: 1 << 16].tobytes()
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
        return int.from_bytes(head[16:20], "big") * int.from_bytes(head[20:24], "big")
    if head[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(head):
            if head[i] != 0xFF:
                i += 1
                continue
            marker = head[i + 1]
            if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                h = int.from_bytes(head[i + 5 : i + 7], "big")
                w = int.from_bytes(head[i + 7 : i + 9], "big")
                return h * w
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            i += 2 + int.from_bytes(head[i + 2 : i + 4], "big")
    return 0


def to_rgb(frame: np.ndarray, color_order: str = "BGR") -> np.ndarray:
    """Return an RGB uint8 (H, W, 3) view of a grey, BGR(A) or RGB(A) frame.

    Args:
        frame: uint8 array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4).
        color_order: ``BGR`` for OpenCV frames, ``RGB`` for Picamera2/Pillow arrays.
    """
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        if frame.dtype == np.uint16:
            frame = (frame >> 8).astype(np.uint8)
        else:
            raise ValueError(f"expected uint8 pixels, got {frame.dtype}")
    if frame.ndim == 2:
        frame = frame[:, :, None]
    if frame.ndim != 3 or frame.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W[, 1|3|4]) image, got shape {frame.shape}")
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


def load_image(path: Union[str, Path], height: int, width: int, interpolation: str = "area") -> np.ndarray:
    """Decode a file and resize it: RGB uint8 (height, width, 3)."""
    return resize(decode_image(path), height, width, interpolation)


def normalize(pixels: np.ndarray, normalization: Normalization) -> np.ndarray:
    """Map RGB uint8 pixels (any leading shape, channels last) to the model's float range."""
    mean = np.asarray(normalization.mean, dtype=np.float32)
    std = np.asarray(normalization.std, dtype=np.float32)
    return (np.asarray(pixels, dtype=np.float32) - mean) / std


def quantize(values: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Affine-quantize float values to the tensor's integer dtype (identity for float tensors)."""
    if not spec.quantized:
        return np.asarray(values, dtype=np.dtype(spec.dtype))
    info = np.iinfo(np.dtype(spec.dtype))
    q = np.round(np.asarray(values, dtype=np.float32) / spec.scale) + spec.zero_point
    return np.clip(q, info.min, info.max).astype(spec.dtype)


def dequantize(values: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Float values of a (possibly quantized) output tensor."""
    if not spec.quantized:
        return np.asarray(values, dtype=np.float32)
    return (np.asarray(values, dtype=np.float32) - spec.zero_point) * np.float32(spec.scale)


def prepare(frame: np.ndarray, card: ModelCard, color_order: str = "BGR") -> np.ndarray:
    """Build the model's input tensor (1, H, W, 3) from a camera frame or decoded image.

    Args:
        frame: uint8 image; ``color_order`` says how its channels are ordered.
        card: the model's card (size, normalisation, input dtype and quantization).
        color_order: ``BGR`` for OpenCV frames, ``RGB`` for already-decoded images.
    """
    pixels = resize(to_rgb(frame, color_order), card.height, card.width, card.interpolation)
    if card.color_order.upper() == "BGR":  # a model trained on BGR pixels (Caffe-style ports)
        pixels = pixels[:, :, ::-1]
    return quantize(normalize(pixels, card.normalization), card.input)[None]
