"""One pixel budget for every image format edgetl reads (issue #18 item 5): bombs are refused before decoding.

``tests/data/bomb_16000x16000.webp`` (9,836 bytes) is a real lossless WebP of a
16000x16000 black image, made with
``cv2.imencode(".webp", np.zeros((16000, 16000, 3), np.uint8), [cv2.IMWRITE_WEBP_QUALITY, 101])``
(15 s and 1.7 GB to write, hence stored); decoded, it takes 768 MB. The TIFF bomb
is written here, deflate-compressed a block of rows at a time, never held whole.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from edgetl.runtime import decode
from edgetl.runtime.decode import IMAGE_EXTENSIONS, ImageDecodeError

REPO = Path(__file__).resolve().parents[1]
WEBP_BOMB = REPO / "tests" / "data" / "bomb_16000x16000.webp"
GOLDEN_MODEL = REPO / "tests" / "golden" / "golden_int8.tflite"
RSS_LIMIT_MB = 60  # decoding either bomb would take 768 MB


def _tiff(path: Path, width: int, height: int, rows_per_block: int = 1000) -> Path:
    """A valid single-strip, deflate-compressed, 8-bit grey TIFF of a black image, streamed by zlib."""
    deflate = zlib.compressobj(9)
    parts, done = [], 0
    while done < height:
        rows = min(rows_per_block, height - done)
        parts.append(deflate.compress(bytes(width * rows)))
        done += rows
    strip = b"".join(parts) + deflate.flush()
    entries = [
        (256, 4, width),
        (257, 4, height),
        (258, 3, 8),
        (259, 3, 8),
        (262, 3, 1),
        (273, 4, 8),
        (277, 3, 1),
        (278, 4, height),
        (279, 4, len(strip)),
    ]
    ifd = (
        struct.pack("<H", len(entries))
        + b"".join(
            struct.pack("<HHI", tag, kind, 1)
            + (struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value))
            for tag, kind, value in entries
        )
        + struct.pack("<I", 0)
    )
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8 + len(strip)) + strip + ifd)
    return path


@pytest.mark.parametrize("ext", sorted(IMAGE_EXTENSIONS))
def test_every_accepted_extension_is_decoded_and_its_header_read(tmp_path: Path, ext: str) -> None:
    image = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8), (5, 5), 0)
    grey_only = ext in (".pbm", ".pgm")
    ok, encoded = cv2.imencode(".ppm" if ext == ".pnm" else ext, image[:, :, 0] if grey_only else image)
    assert ok
    assert decode.dimensions(encoded) == (53, 37)
    (tmp_path / f"x{ext}").write_bytes(encoded.tobytes())
    assert decode.decode_image(tmp_path / f"x{ext}").shape == (37, 53, 3)


def test_small_tiff_written_like_the_bomb_decodes(tmp_path: Path) -> None:
    pixels = decode.decode_image(_tiff(tmp_path / "small.tif", 64, 48, rows_per_block=7))
    assert pixels.shape == (48, 64, 3) and not pixels.any()


def _decode_in_fresh_process(path: Path) -> dict:
    code = (
        "import json, resource, sys\nfrom edgetl.runtime import decode\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n    decode.decode_image(sys.argv[1])\n    error = None\n"
        "except decode.ImageDecodeError as exc:\n    error = str(exc)\n"
        "grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024\n"
        "print(json.dumps({'error': error, 'grown_mb': grown}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_webp_bomb_is_refused_unread_in_bounded_memory() -> None:
    assert WEBP_BOMB.stat().st_size < 10_000 and decode.dimensions(np.fromfile(WEBP_BOMB, np.uint8)) == (16000, 16000)
    result = _decode_in_fresh_process(WEBP_BOMB)
    assert result["error"] == (
        f"{WEBP_BOMB}: a 16000x16000 WebP (256 megapixels) is too large to decode (over 40; only JPEG "
        "and PNG shrink while decoding); downscale it or save it as JPEG/PNG"
    )
    assert result["grown_mb"] < RSS_LIMIT_MB, result


def test_tiff_bomb_is_refused_unread_in_bounded_memory(tmp_path: Path) -> None:
    bomb = _tiff(tmp_path / "bomb.tiff", 16000, 16000)
    assert bomb.stat().st_size < 400_000
    result = _decode_in_fresh_process(bomb)
    assert result["error"].startswith(f"{bomb}: a 16000x16000 TIFF (256 megapixels) is too large to decode")
    assert result["grown_mb"] < RSS_LIMIT_MB, result


@pytest.mark.parametrize(
    "name, header",
    [
        ("bomb.bmp", b"BM" + bytes(12) + struct.pack("<Iii", 40, 16000, -16000) + bytes(28)),
        ("bomb.pgm", b"P5\n# a comment\n16000 16000\n255\n"),
        (
            "bomb.jpg",
            b"\xff\xd8\xff\xe0\x00\x04ab\xff\xc0\x00\x0b\x08" + struct.pack(">HH", 40000, 40000) + b"\x01\x01\x11\x00",
        ),
    ],
)
def test_header_only_bombs_of_other_formats_are_refused(tmp_path: Path, name: str, header: bytes) -> None:
    (tmp_path / name).write_bytes(header + bytes(64))
    with pytest.raises(ImageDecodeError, match="megapixels.* too large to decode"):
        decode.decode_image(tmp_path / name)


def test_formats_without_a_header_reader_are_refused_unread(tmp_path: Path) -> None:
    """GIF and the rest decode in some OpenCV builds, but their size is not checked: fail closed."""
    ok, gif = cv2.imencode(".gif", np.zeros((8, 8, 3), np.uint8)) if cv2.haveImageWriter("x.gif") else (False, None)
    (tmp_path / "x.gif").write_bytes(gif.tobytes() if ok else b"GIF89a" + struct.pack("<HH", 8, 8) + bytes(32))
    with pytest.raises(ImageDecodeError, match="not a decodable image"):
        decode.decode_image(tmp_path / "x.gif")


def test_edge_classify_refuses_the_webp_bomb_with_one_line_and_bounded_memory(tmp_path: Path) -> None:
    code = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run([sys.executable, '-m', 'edgetl.runtime', '--model', sys.argv[1], '--image', sys.argv[2], '--headless'],"
        " capture_output=True, text=True)\n"
        "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)\n"
        "sys.stderr.write(done.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(GOLDEN_MODEL), str(WEBP_BOMB)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    exit_code, peak_mb = map(int, done.stdout.split())
    assert exit_code == 4, done.stderr  # EXIT_SOURCE: nothing could be read
    assert "16000x16000 WebP (256 megapixels) is too large to decode" in done.stderr
    assert "Traceback" not in done.stderr
    assert peak_mb < 250, peak_mb  # the whole edge-classify process; the issue measured 1.58 GB before
