"""The one preprocessing contract: decode, colour order, resize, normalise, quantize.

Training-side evaluation, calibration, parity and the Pi all call these functions,
so a model never sees pixels prepared one way in training and another on the
device (the mismatch behind tensorflow#60072 and teachablemachine#356). The
conversion from OpenCV's BGR to the model's RGB happens here and nowhere else.
numpy + cv2 only: no TensorFlow, no Pillow.
"""

from __future__ import annotations

import functools
import math
import struct
import zlib
from pathlib import Path
from typing import Callable, Iterator, Union

import numpy as np

from edgetl.runtime.model_card import ModelCard, Normalization, TensorSpec

# Images larger than this are decoded at a reduced scale instead of allocating
# gigabytes for a 20000x20000 scan; classifiers want a few hundred pixels anyway.
# JPEGs shrink inside libjpeg; PNGs are inflated and shrunk a strip at a time.
MAX_DECODE_PIXELS = 40_000_000
# Beyond this (a decompression bomb, or a scan no camera makes) a file is refused.
MAX_SOURCE_PIXELS = 1 << 30
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STRIP_BYTES = 16 << 20  # raw PNG bytes inflated per strip
TIE_SLACK = 1e-3  # of a quantization step: float32 normalisation lands within ~1e-5 of a true half


class ImageDecodeError(ValueError):
    """A file is not a readable image (empty, truncated, not an image at all)."""


def _cv2():
    import cv2  # noqa: PLC0415 - cv2 costs ~100 ms; only pay it when pixels are touched

    return cv2


def decode_image(path: Union[str, Path]) -> np.ndarray:
    """Read an image file of any common mode into an RGB uint8 array (H, W, 3).

    Grey, RGBA, palette, CMYK and 16-bit files become 8-bit RGB; EXIF orientation
    is applied; non-ASCII paths work (bytes are read by numpy, decoded by cv2).
    Images over ``MAX_DECODE_PIXELS`` come back shrunk (JPEG inside libjpeg, PNG a
    strip at a time), so a 20000x20000 scan never needs gigabytes.

    Raises:
        ImageDecodeError: the file is empty, truncated, not an image, or over
            ``MAX_SOURCE_PIXELS``.
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
    if pixels > MAX_SOURCE_PIXELS:
        raise ImageDecodeError(f"{path}: {pixels / 1e6:.0f} megapixels is too large to decode; downscale it first")
    if pixels > MAX_DECODE_PIXELS and raw[:8].tobytes() == PNG_SIGNATURE:
        return _decode_large_png(raw, math.ceil(math.sqrt(pixels / MAX_DECODE_PIXELS)), path)
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


def _png_chunks(raw: np.ndarray) -> Iterator[tuple[bytes, memoryview]]:
    """``(type, data)`` of each PNG chunk, without copying the data."""
    view = memoryview(raw)
    i = 8
    while i + 8 <= len(view):
        length = int.from_bytes(view[i : i + 4], "big")
        kind = bytes(view[i + 4 : i + 8])
        yield kind, view[i + 8 : i + 8 + length]
        if kind == b"IEND":
            return
        i += 12 + length


def _png(width: int, height: int, depth: int, colour: int, extra: list[tuple[bytes, bytes]], rows: bytes) -> np.ndarray:
    """A small PNG file (as a uint8 array for cv2.imdecode) holding already-filtered ``rows``."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    body = chunk(b"IHDR", header) + b"".join(chunk(k, d) for k, d in extra) + chunk(b"IDAT", zlib.compress(rows, 0))
    return np.frombuffer(PNG_SIGNATURE + body + chunk(b"IEND", b""), dtype=np.uint8)


def _inflate(parts: Iterator[memoryview], path: Path) -> Callable[[int], bytes]:
    """A ``read(n)`` over the concatenated zlib stream of ``parts``, never inflating more than asked."""
    inflater, tail = zlib.decompressobj(), b""

    def read(size: int) -> bytes:
        nonlocal tail
        out = bytearray()
        while len(out) < size:
            if not tail:
                tail = next(parts, b"")
                if not tail:
                    raise ImageDecodeError(f"{path}: not a decodable image (truncated PNG data)")
            try:
                out += inflater.decompress(tail, size - len(out))
            except zlib.error as exc:
                raise ImageDecodeError(f"{path}: not a decodable image (corrupt PNG data: {exc})") from None
            tail = inflater.unconsumed_tail
        return bytes(out)

    return read


# Bytes per pixel -> (bit depth, colour type) of a PNG with the same filter arithmetic
# that cv2 returns unchanged: its decoded rows are the source's unfiltered bytes.
_RAW_LAYOUT = {1: (8, 0), 2: (16, 0), 3: (8, 2), 4: (8, 6), 6: (16, 2), 8: (16, 6)}


def _unfilter(previous: np.ndarray, strip: np.ndarray, bpp: int) -> np.ndarray:
    """Undo the PNG row filters of ``strip`` (rows, 1 + row bytes), given the unfiltered row before it."""
    if not strip[:, 0].any():  # every row filter None: the bytes are the pixels
        return strip[:, 1:]
    cv2 = _cv2()
    rows, row_bytes = strip.shape[0], strip.shape[1] - 1
    depth, colour = _RAW_LAYOUT[bpp]
    seeded = b"\x00" + previous.tobytes() + strip.tobytes()
    out = cv2.imdecode(_png(row_bytes // bpp, rows + 1, depth, colour, [], seeded), cv2.IMREAD_UNCHANGED)
    if out is None:
        raise ValueError("corrupt row filters")
    out = out.reshape(rows + 1, row_bytes // bpp, -1)[1:]
    if out.shape[2] >= 3:  # cv2 hands back BGR(A); put the channels back in file order
        out = np.concatenate([out[:, :, 2::-1], out[:, :, 3:]], axis=2)
    return np.frombuffer(out.astype(">u2").tobytes() if depth == 16 else out.tobytes(), np.uint8).reshape(rows, row_bytes)


def _strip_rgb(raw: np.ndarray, width: int, depth: int, colour: int, keep: list[tuple[bytes, bytes]]) -> np.ndarray:
    """RGB/grey uint8 pixels of unfiltered rows, converted as ``cv2.imdecode`` converts them."""
    if colour != 3 and depth in (8, 16):  # grey, grey+alpha, RGB, RGBA: slice the bytes (high byte of 16-bit)
        channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
        pixels = raw.reshape(len(raw), width, channels, depth // 8)[:, :, :, 0]
        return pixels[:, :, :1] if channels <= 2 else pixels[:, :, :3]
    cv2 = _cv2()  # palette and 1/2/4-bit: let libpng expand them
    body = np.concatenate([np.zeros((len(raw), 1), np.uint8), raw], axis=1).tobytes()
    bgr = cv2.imdecode(_png(width, len(raw), depth, colour, keep, body), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("pixels libpng cannot expand")
    return bgr[:, :, ::-1]


def _decode_large_png(raw: np.ndarray, factor: int, path: Path) -> np.ndarray:
    """RGB uint8 of a huge PNG shrunk ``factor`` times, holding only one strip at full size.

    The zlib stream is inflated a strip of rows at a time; each strip is unfiltered
    (by libpng, seeded with the row before it), converted to 8-bit as
    ``cv2.imdecode`` would, and shrunk with INTER_AREA before the next is read.

    Raises:
        ImageDecodeError: interlaced, truncated or corrupt.
    """
    cv2 = _cv2()
    chunks = list(_png_chunks(raw))
    header = next((bytes(d) for k, d in chunks if k == b"IHDR"), b"")
    if len(header) != 13:
        raise ImageDecodeError(f"{path}: not a decodable image (no PNG header)")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour)
    if channels is None:
        raise ImageDecodeError(f"{path}: not a decodable image (PNG colour type {colour})")
    if interlace:
        raise ImageDecodeError(f"{path}: a {width}x{height} interlaced PNG is too large to decode; save it non-interlaced or smaller")
    row_bytes, bpp = (width * depth * channels + 7) // 8, max(1, depth * channels // 8)
    keep = [(k, bytes(d)) for k, d in chunks if k in (b"PLTE", b"tRNS")]
    read = _inflate((d for k, d in chunks if k == b"IDAT"), path)
    step = factor * max(1, STRIP_BYTES // (row_bytes + 1) // factor)
    out_w, out_h = max(1, width // factor), max(1, height // factor)
    strips, done, previous = [], 0, np.zeros(row_bytes, np.uint8)
    for top in range(0, height, step):
        rows = min(step, height - top)
        strip = np.frombuffer(read(rows * (row_bytes + 1)), np.uint8).reshape(rows, row_bytes + 1)
        target = min(out_h, (top + rows) * out_h // height) - done
        try:
            unfiltered = _unfilter(previous, strip, bpp)
            pixels = np.ascontiguousarray(_strip_rgb(unfiltered, width, depth, colour, keep)) if target > 0 else None
        except ValueError as exc:
            raise ImageDecodeError(f"{path}: not a decodable image (corrupt PNG: {exc})") from None
        previous = unfiltered[-1]
        if pixels is not None:
            strips.append(cv2.resize(pixels, (out_w, target), interpolation=cv2.INTER_AREA).reshape(target, out_w, -1))
            done += target
    return to_rgb(np.concatenate(strips), "RGB")


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


def _checked(frame: np.ndarray) -> np.ndarray:
    """``frame`` as uint8 (H, W, 1|3|4); 16-bit keeps its high byte."""
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
    return frame


def to_rgb(frame: np.ndarray, color_order: str = "BGR") -> np.ndarray:
    """Return an RGB uint8 (H, W, 3) view of a grey, BGR(A) or RGB(A) frame.

    Args:
        frame: uint8 array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4).
        color_order: ``BGR`` for OpenCV frames, ``RGB`` for Picamera2/Pillow arrays.
    """
    frame = _checked(frame)
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
