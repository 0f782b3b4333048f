"""Image files to RGB pixels, under one pixel budget for every format.

A small file can hold a huge image (a 9.8 KB WebP of 16000x16000 pixels makes
OpenCV allocate 768 MB): so before anything is decoded, the width and height are
read from the file's own header, for every format edgetl accepts
(:data:`IMAGE_EXTENSIONS`: JPEG, PNG, WebP, TIFF, BMP, PBM/PGM/PPM/PNM), and the
image is refused with one line when it is over the budget. Files whose header is
none of these are refused too, unread, even if OpenCV could decode them: the
guard fails closed. Within the budget:

- up to ``MAX_DECODE_PIXELS`` (40 MP), any format decodes at full size;
- above it, JPEGs shrink inside libjpeg (``IMREAD_REDUCED_*``) and PNGs are
  inflated and shrunk a strip at a time (``_decode_large_png``), so a
  20000x20000 scan never needs gigabytes; other formats cannot be decoded
  shrunk and are refused;
- above ``MAX_SOURCE_PIXELS`` (1 gigapixel) every file is refused.

numpy + cv2 only. The colour conversion is :func:`preprocess.to_rgb`'s.
"""

from __future__ import annotations

import math
import os
import stat
import struct
import zlib
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

import numpy as np
from edgetl.runtime.headers import PNG_SIGNATURE, dimensions, image_format
from edgetl.runtime.preprocess import _cv2, resize, to_rgb

# The one set of image file extensions for the whole project (training folders, calibration,
# parity, edge-classify --image): formats OpenCV 4.8+ decodes on every platform and whose
# header the pixel budget below can read. (GIF: only OpenCV >= 4.11 decodes it; convert to PNG.)
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".tif", ".tiff", ".bmp", ".dib", ".pbm", ".pgm", ".ppm", ".pnm"}
)
# Images larger than this are decoded at a reduced scale instead of allocating
# gigabytes for a 20000x20000 scan; classifiers want a few hundred pixels anyway.
# JPEGs shrink inside libjpeg; PNGs are inflated and shrunk a strip at a time.
MAX_DECODE_PIXELS = 40_000_000
# Beyond this (a decompression bomb, or a scan no camera makes) a file is refused.
MAX_SOURCE_PIXELS = 1 << 30
STRIP_BYTES = 16 << 20  # raw PNG bytes inflated per strip
MAX_FILE_BYTES = 1 << 30  # no image edgetl reads is larger; a bigger file is refused unread
HEAD_BYTES = 1 << 20  # read first: every header the budget needs is in it (a JPEG's EXIF may push its size later)
NOT_DECODABLE = "not a decodable image (truncated, or not an image format cv2 reads)"


def is_run_folder(folder: Union[str, Path]) -> bool:
    """Whether ``folder`` is an edgetl run folder: it holds ``model_card.json``, or ``data.json`` beside ``splits/``.

    Its plots are images too, so a run saved inside a data folder would otherwise become a class.
    """
    return os.path.isfile(os.path.join(folder, "model_card.json")) or (
        os.path.isfile(os.path.join(folder, "data.json")) and os.path.isdir(os.path.join(folder, "splits"))
    )


def image_files(root: Union[str, Path], skipped_runs: Optional[list[Path]] = None) -> list[Path]:
    """The image files under ``root``: recursive, sorted; hidden files and folders, symlinked folders, run folders
    and anything but regular files (FIFOs, devices, a link to ``/dev/zero``) skipped.

    The one listing of "the images in this folder" for training data, ``--image DIR --csv`` and the
    like, so a folder edgetl trains on is a folder edge-classify reads the same way. A FIFO named
    ``x.png`` would block the first read forever, a device never ends: only regular files are listed.
    Run folders (:func:`is_run_folder`) found below ``root`` are appended to ``skipped_runs``.
    """
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if is_run_folder(dirpath) and os.path.normpath(dirpath) != os.path.normpath(root):
            if skipped_runs is not None:
                skipped_runs.append(Path(dirpath))
            dirnames[:] = []
            continue
        found += [
            Path(dirpath) / n
            for n in sorted(filenames)
            if Path(n).suffix.lower() in IMAGE_EXTENSIONS and not n.startswith(".") and _regular(Path(dirpath) / n)
        ]
    return found


def _regular(path: Path) -> bool:
    """A regular file (after symlinks), never a FIFO, socket or device."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


class ImageDecodeError(ValueError):
    """A file is not a readable image (empty, truncated, not an image at all)."""


def decode_image(path: Union[str, Path]) -> np.ndarray:
    """Read an image file of any common mode into an RGB uint8 array (H, W, 3).

    Grey, RGBA, palette, CMYK and 16-bit files become 8-bit RGB; EXIF orientation
    is applied; non-ASCII paths work (bytes are read by numpy, decoded by cv2).
    Images over ``MAX_DECODE_PIXELS`` come back shrunk (JPEG inside libjpeg, PNG a
    strip at a time), so a 20000x20000 scan never needs gigabytes.

    Raises:
        ImageDecodeError: the file is empty, truncated, not an image of a format
            edgetl reads, or over the pixel budget (see the module docstring).
    """
    cv2 = _cv2()
    path = Path(path)
    raw = _read_checked(path)
    if raw.size == 0:
        raise ImageDecodeError(f"{path}: empty file")
    flag = _budget_flag(raw, path)
    if flag is None:
        return _decode_large_png(raw, math.ceil(math.sqrt(_pixels(raw) / MAX_DECODE_PIXELS)), path)
    try:
        bgr = cv2.imdecode(raw, flag)
    except cv2.error as exc:
        raise ImageDecodeError(f"{path}: not a decodable image ({str(exc).strip().splitlines()[-1]})") from None
    if bgr is None or bgr.size == 0:
        raise ImageDecodeError(f"{path}: {NOT_DECODABLE}")
    return to_rgb(bgr, "BGR")


def _read_checked(path: Path) -> np.ndarray:
    """The bytes of a regular file of at most ``MAX_FILE_BYTES``, read after its header passed the pixel budget.

    A FIFO or a device (``/dev/zero`` linked as ``x.png``) is refused without a read
    (the open does not block: ``O_NONBLOCK``); a huge uncompressed BMP or TIFF is
    refused from its first ``HEAD_BYTES``, before the rest is read.

    Raises:
        ImageDecodeError: not a regular file, too large, unreadable, or over the pixel budget.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except (OSError, ValueError) as exc:
        raise ImageDecodeError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    with os.fdopen(fd, "rb", buffering=0) as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ImageDecodeError(f"{path}: not a regular file (a FIFO, device or socket); only image files are read")
        if info.st_size > MAX_FILE_BYTES:
            raise ImageDecodeError(
                f"{path}: {info.st_size / 2**20:.0f} MiB is over the {MAX_FILE_BYTES >> 20} MiB limit for one image file"
            )
        raw = np.empty(info.st_size, dtype=np.uint8)
        try:
            got = handle.readinto(memoryview(raw)[:HEAD_BYTES])
            if dimensions(raw[:got]) is not None:
                _budget_flag(raw[:got], path)  # refuse from the header: the rest is never read
            while got < info.st_size and (more := handle.readinto(memoryview(raw)[got:])):
                got += more
        except OSError as exc:
            raise ImageDecodeError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return raw[:got]


def load_image(path: Union[str, Path], height: int, width: int, interpolation: str = "area") -> np.ndarray:
    """Decode a file and resize it: RGB uint8 (height, width, 3)."""
    return resize(decode_image(path), height, width, interpolation)


def _pixels(raw: np.ndarray) -> int:
    size = dimensions(raw)
    return size[0] * size[1] if size else 0


def _budget_flag(raw: np.ndarray, path: Path) -> Optional[int]:
    """The ``cv2.imdecode`` flag that keeps this file within the pixel budget; None for the PNG strip decoder.

    Raises:
        ImageDecodeError: no readable header of a format edgetl reads, or over the budget.
    """
    cv2 = _cv2()
    kind = image_format(raw)
    size = dimensions(raw)
    if kind is None or size is None:
        raise ImageDecodeError(f"{path}: {NOT_DECODABLE}")
    width, height = size
    pixels = width * height
    if pixels > MAX_SOURCE_PIXELS:
        raise ImageDecodeError(f"{path}: {pixels / 1e6:.0f} megapixels is too large to decode; downscale it first")
    if pixels <= MAX_DECODE_PIXELS:
        return cv2.IMREAD_COLOR
    if kind == "PNG":
        return None
    if kind != "JPEG":
        raise ImageDecodeError(
            f"{path}: a {width}x{height} {kind} ({pixels / 1e6:.0f} megapixels) is too large to decode "
            f"(over {MAX_DECODE_PIXELS / 1e6:.0f}; only JPEG and PNG shrink while decoding); "
            "downscale it or save it as JPEG/PNG"
        )
    for factor, reduced in ((2, cv2.IMREAD_REDUCED_COLOR_2), (4, cv2.IMREAD_REDUCED_COLOR_4)):
        if pixels <= MAX_DECODE_PIXELS * factor**2:
            return reduced
    return cv2.IMREAD_REDUCED_COLOR_8


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
    return np.frombuffer(out.astype(">u2").tobytes() if depth == 16 else out.tobytes(), np.uint8).reshape(
        rows, row_bytes
    )


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
        raise ImageDecodeError(
            f"{path}: a {width}x{height} interlaced PNG is too large to decode; save it non-interlaced or smaller"
        )
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


# ---- dimensions from headers, one reader per format -----------------------------------------------------------------


__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageDecodeError",
    "decode_image",
    "dimensions",
    "image_files",
    "image_format",
    "is_run_folder",
    "load_image",
]
