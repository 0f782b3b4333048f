"""Width and height from an image file's own header, for every format edgetl reads, without decoding.

:mod:`edgetl.runtime.decode` checks them against its pixel budget before a byte is
decoded (a 9.8 KB WebP can declare 16000x16000 pixels). numpy and the standard library only.
"""

from __future__ import annotations

import struct
from typing import Callable, Optional

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def image_format(raw: np.ndarray) -> Optional[str]:
    """The format a file's first bytes announce (``JPEG``, ``PNG``, ``WebP``, ``TIFF``, ``BMP``, ``PNM``), or None."""
    head = raw[:16].tobytes()
    if head.startswith(PNG_SIGNATURE):
        return "PNG"
    if head.startswith(b"\xff\xd8"):
        return "JPEG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head[:2] == b"BM":
        return "BMP"
    if len(head) >= 2 and head[:1] == b"P" and head[1:2] in b"123456" and head[2:3].isspace():
        return "PNM"
    return None


def dimensions(raw: np.ndarray) -> Optional[tuple[int, int]]:
    """(width, height) from the file's header, without decoding; None when the header is unreadable or unknown."""
    kind = image_format(raw)
    reader = _READERS.get(kind) if kind else None
    try:
        size = reader(raw.tobytes() if kind in ("TIFF", "JPEG") else raw[: 1 << 16].tobytes()) if reader else None
    except (struct.error, IndexError, ValueError):
        return None
    return size if size and size[0] > 0 and size[1] > 0 else None


def _png_size(head: bytes) -> Optional[tuple[int, int]]:
    if len(head) < 24 or head[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", head[16:24])


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(head: bytes) -> Optional[tuple[int, int]]:
    """The frame header's size: walk the marker segments up to the first SOF (before the scan data)."""
    i = 2
    while i + 9 < len(head):
        if head[i] != 0xFF:
            i += 1
            continue
        marker = head[i + 1]
        if marker in _SOF:
            height, width = struct.unpack(">HH", head[i + 5 : i + 9])
            return width, height
        if marker == 0xDA:  # start of scan: no frame header came first
            return None
        if marker in (0xD8, 0x01, 0xFF) or 0xD0 <= marker <= 0xD7:
            i += 1 if marker == 0xFF else 2
            continue
        i += 2 + int.from_bytes(head[i + 2 : i + 4], "big")
    return None


def _webp_size(head: bytes) -> Optional[tuple[int, int]]:
    """VP8X (extended: canvas size), VP8L (lossless) or VP8 (lossy) first chunk."""
    chunk = head[12:16]
    if chunk == b"VP8X":
        return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
    if chunk == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


def _tiff_size(data: bytes) -> Optional[tuple[int, int]]:
    """ImageWidth (256) and ImageLength (257) of the first IFD (the page cv2 decodes); classic or BigTIFF."""
    order = "<" if data[:2] == b"II" else ">"
    big = struct.unpack(order + "H", data[2:4])[0] == 43
    offset = struct.unpack(order + "Q", data[8:16])[0] if big else struct.unpack(order + "I", data[4:8])[0]
    count_fmt, entry_size, count_size = ("Q", 20, 8) if big else ("H", 12, 2)
    (count,) = struct.unpack(order + count_fmt, data[offset : offset + count_size])
    found: dict[int, int] = {}
    for n in range(min(count, 4096)):
        entry = data[offset + count_size + n * entry_size : offset + count_size + (n + 1) * entry_size]
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):
            value = entry[12:] if big else entry[8:]
            fmt = {3: "H", 4: "I", 16: "Q"}.get(kind)
            if fmt is None:
                return None
            found[tag] = struct.unpack(order + fmt, value[: struct.calcsize(fmt)])[0]
    return (found[256], found[257]) if len(found) == 2 else None


def _bmp_size(head: bytes) -> Optional[tuple[int, int]]:
    """BITMAPCOREHEADER (16-bit sizes) or any later info header (signed 32-bit; negative height = top-down)."""
    if struct.unpack("<I", head[14:18])[0] == 12:
        return struct.unpack("<HH", head[18:22])
    width, height = struct.unpack("<ii", head[18:26])
    return abs(width), abs(height)


def _pnm_size(head: bytes) -> Optional[tuple[int, int]]:
    """Width and height: the first two numbers after the magic, skipping whitespace and ``#`` comments."""
    numbers: list[int] = []
    for line in head[2:].split(b"\n"):
        for token in line.split(b"#", 1)[0].split():
            numbers.append(int(token))
            if len(numbers) == 2:
                return numbers[0], numbers[1]
    return None


_READERS: dict[str, Callable[[bytes], Optional[tuple[int, int]]]] = {
    "PNG": _png_size,
    "JPEG": _jpeg_size,
    "WebP": _webp_size,
    "TIFF": _tiff_size,
    "BMP": _bmp_size,
    "PNM": _pnm_size,
}
