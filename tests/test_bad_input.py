"""Bad input (#7): one clear line and exit 1/2, or a counted skip; never a traceback, never half-written output.

Each case goes through the real command line (``CliRunner`` on ``edgetl``) or the
library function it calls, and asserts the exact message. Data cases stop at
data discovery or decoding, before TensorFlow is imported, so each takes
milliseconds; one tiny real training run checks what a run records about skips.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import clicheck
import cv2
import numpy as np
import pytest
from click.testing import Result
from edgetl import data
from edgetl.runtime import decode
from edgetl.runtime.decode import ImageDecodeError

TINY = ["--weights", "none", "--alpha", "0.35", "--image-size", "32", "--epochs", "1", "--fine-tune-epochs", "0", "-q"]
NOT_DECODABLE = "not a decodable image (truncated, or not an image format cv2 reads)"


# ---- helpers ---------------------------------------------------------------------------------------------------------


def _run(*args: Any) -> Result:
    return clicheck.run(*args)


def _fails(result: Result, code: int) -> str:
    """The one error line of a failed command; no traceback, nothing on stdout (``clicheck.fails``)."""
    return clicheck.fails(result, code)


def _train_fails(data_path: Path, tmp_path: Path, *extra: Any, code: int = 3) -> str:
    """``edgetl train`` on bad data: the error line, and no run or partial run left behind."""
    run = tmp_path / "run"
    message = _fails(_run("train", data_path, "-o", run, *TINY, *extra), code)
    assert not run.exists() and not (tmp_path / ".run.partial").exists()
    return message


def _image(path: Path, value: Any = 128, shape: tuple[int, ...] = (20, 24, 3), ext: str = ".png") -> Path:
    """Write an image with cv2 through numpy, so non-ASCII paths work too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buffer = cv2.imencode(ext, np.full(shape, value, np.uint8))
    assert ok
    buffer.tofile(str(path))
    return path


def _folder(root: Path, classes: tuple[str, ...] = ("a", "b"), per_class: int = 4) -> Path:
    for k, name in enumerate(classes):
        for i in range(per_class):
            _image(root / name / f"{i}.png", (40 * k + 10 * i) % 256)
    return root


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_bytes(
    width: int, height: int, depth: int, colour: int, rows: bytes, extra: bytes = b"", level: int = 6
) -> bytes:
    """A PNG built by hand: IHDR, optional chunks, one IDAT of ``rows`` (each row already has its filter byte)."""
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + extra
        + _chunk(b"IDAT", zlib.compress(rows, level))
        + _chunk(b"IEND", b"")
    )


def _exif_jpeg(path: Path, orientation: int) -> Path:
    """A 40x60 JPEG (left half red, right half blue) with an EXIF orientation tag, APP1 built by hand."""
    bgr = np.zeros((40, 60, 3), np.uint8)
    bgr[:, :30] = (0, 0, 255)
    bgr[:, 30:] = (255, 0, 0)
    jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    ifd = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0)
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + ifd
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 6 + len(tiff)) + b"Exif\x00\x00" + tiff
    path.write_bytes(jpeg[:2] + app1 + jpeg[2:])
    return path


# ---- data sources ----------------------------------------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    message = _train_fails(tmp_path / "nope", tmp_path)
    assert (
        message
        == f"{tmp_path / 'nope'} does not exist; pass a folder of class sub-folders, a .csv of path,label, or a .npz"
    )


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    message = _train_fails(tmp_path / "d", tmp_path)
    assert (
        message
        == f"{tmp_path / 'd'} has no class sub-folders; put each class's images in {tmp_path / 'd'}/<class name>/"
    )


def test_one_class_only(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", ("only",))
    message = _train_fails(root, tmp_path)
    assert (
        message
        == f"{root.resolve()}: found only class 'only'; a classifier needs at least two, add images of another class"
    )


def test_class_folder_without_images(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", ("a", "b"))
    (root / "empty").mkdir()
    (root / "empty" / "notes.txt").write_text("no pictures here")
    message = _train_fails(root, tmp_path)
    assert message == f"{root.resolve()}: class(es) empty have no images; add images or remove the folder"


def test_class_with_no_readable_image(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", ("a",))
    for i in range(4):
        (root / "b").mkdir(exist_ok=True)
        (root / "b" / f"{i}.png").write_text("not a picture")
    message = _train_fails(root, tmp_path)
    prefix = f"{root.resolve()}: class(es) b have no readable training image, 4 skipped (e.g. {root.resolve()}/b/"
    assert message.startswith(prefix)
    assert message.endswith(f".png: {NOT_DECODABLE}); replace or remove the unreadable files")


def test_every_image_unreadable(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / "d" / name).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "d" / name / f"{i}.jpg").write_bytes(b"")
    message = _train_fails(tmp_path / "d", tmp_path)
    assert re.fullmatch(
        re.escape(
            f"{(tmp_path / 'd').resolve()}: no readable training or validation images left, 6 skipped "
            f"(e.g. {(tmp_path / 'd').resolve()}/"
        )
        + r"[ab]/\d\.jpg: empty file\); "
        r"replace or remove the unreadable files",
        message,
    )


def test_symlink_loop_in_the_data_folder(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d").resolve()
    (root / "a" / "up").symlink_to("..")  # a folder link inside a class: not followed
    (root / "a" / "self.png").symlink_to("self.png")  # a file link to itself: not a regular file, not listed
    ds = data.discover(str(root))
    assert ds.class_names == ["a", "b"] and len(ds.items) == 8
    _, kept, skipped = ds.pixels(ds.items, 16)
    assert len(kept) == 8 and skipped == []
    (root / "loop").symlink_to(".")  # a class-level link back to the data folder would duplicate every class
    message = _train_fails(root, tmp_path)
    assert (
        message
        == f"{root / 'loop'} is a symlink to {root}, which holds the data folder itself (a loop); remove the link"
    )


def test_symlinked_class_folder_elsewhere_is_used(tmp_path: Path) -> None:
    _folder(tmp_path / "elsewhere", ("c",))
    root = _folder(tmp_path / "d", ("a",))
    (root / "c").symlink_to(tmp_path / "elsewhere" / "c")
    assert data.discover(str(root)).class_names == ["a", "c"]


def test_non_ascii_and_space_names(tmp_path: Path) -> None:
    root = tmp_path / "données d"
    _image(root / "chat noir" / "ça va 1.png", 10)
    _image(root / "chat noir" / "été, 2.png", 20)
    _image(root / "chien ☕" / "hund 1.jpg", 200, ext=".jpg")
    _image(root / "chien ☕" / "狗 2.png", 220)
    ds = data.discover(str(root))
    assert ds.class_names == ["chat noir", "chien ☕"]
    pixels, kept, skipped = ds.pixels(ds.items, 8)
    assert not skipped and pixels.shape == (4, 8, 8, 3)
    splits = {"train": ds.items[:1] + ds.items[2:3], "val": ds.items[1:2], "test": ds.items[3:]}
    data.write_splits(tmp_path / "run", ds, splits, [])
    for name, items in splits.items():
        assert data.load_split(tmp_path / "run", name)[1] == items  # the comma in "été, 2.png" is quoted


# ---- CSV -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ("a/0.png,a\nnope.png,b\n", "{csv}:2: image 'nope.png' does not exist (paths are relative to the CSV)"),
        (
            "file,class\na/0.png,a\n",
            "{csv}:1: image 'file' does not exist (paths are relative to the CSV) "
            "(a header row must read 'path,label')",
        ),
        (
            "a/0.png,a\nb/0.png,\n",
            "{csv}:2: expected 'path,label' with both set, got 'b/0.png,'; fix or delete the row",
        ),
        (
            "a/0.png,a\nb/0.png,   \n",
            "{csv}:2: expected 'path,label' with both set, got 'b/0.png,   '; fix or delete the row",
        ),
        ("a/0.png,a\nb/0.png\n", "{csv}:2: expected 'path,label' with both set, got 'b/0.png'; fix or delete the row"),
        ("a/0.png,a\nb,b\n", "{csv}:2: 'b' is a folder; list one image file per row"),
        ("path,label\n", "{csv} has no path,label rows; write one row per image, e.g. 'cat/1.jpg,cat'"),
        (
            'a/0.png,a\n"b/0.png","b\nc"\n',
            "{root}: class name 'b\\nc' is blank or has control characters "
            "(labels.txt holds one name per line); rename it",
        ),
        (
            "a/0.png,a\n../outside.png,b\n",
            "{csv}:2: '../outside.png' points outside {root}; keep images under the CSV's "
            "folder or pass --allow-outside-root",
        ),
        (
            "a/0.png,a\n/etc/hostname,b\n",
            "{csv}:2: '/etc/hostname' points outside {root}; keep images under the CSV's "
            "folder or pass --allow-outside-root",
        ),
    ],
    ids=[
        "missing-image",
        "wrong-header",
        "empty-label",
        "blank-label",
        "one-column",
        "folder",
        "no-rows",
        "newline-label",
        "escapes-root",
        "absolute-outside",
    ],
)
def test_bad_csv(tmp_path: Path, text: str, message: str) -> None:
    root = _folder(tmp_path / "d").resolve()
    _image(tmp_path / "outside.png")
    csv = root / "list.csv"
    csv.write_text(text, encoding="utf-8")
    assert _train_fails(csv, tmp_path) == message.format(csv=csv, root=root)


def test_csv_not_utf8(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d").resolve()
    (root / "list.csv").write_bytes("a/0.png,caf\xe9\nb/0.png,b\n".encode("latin-1"))
    assert _train_fails(root / "list.csv", tmp_path) == f"{root / 'list.csv'} is not UTF-8 text; save the CSV as UTF-8"


def test_allow_outside_root_reaches_discovery(tmp_path: Path) -> None:
    """--allow-outside-root (flag or config key) goes through TrainConfig to data.discover."""
    root = _folder(tmp_path / "d", ("a",)).resolve()
    _image(tmp_path / "outside.png")
    csv = root / "list.csv"
    csv.write_text("a/0.png,a\n../outside.png,a\n")  # one class: discovery fails after the root check
    refused = f"{csv}:2: '../outside.png' points outside {root}; keep images under the CSV's folder or pass --allow-outside-root"
    allowed = f"{root}: found only class 'a'; a classifier needs at least two, add images of another class"
    assert _train_fails(csv, tmp_path) == refused
    assert _train_fails(csv, tmp_path, "--allow-outside-root") == allowed
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"data": str(csv), "output": str(tmp_path / "run"), "allow_outside_root": True}))
    assert _fails(_run("train", "--config", config, "-q"), 3) == allowed


def test_parity_data_with_unknown_labels(tmp_path: Path, tiny_run: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "model_fp32.tflite").write_bytes(b"")  # parity checks the labels before it opens any model
    (run / "model_fp32.json").write_text("{}")
    root = _folder(tmp_path / "d", ("zebra", "bag")).resolve()
    labels = json.loads((run / "model_card.json").read_text())["labels"]
    message = _fails(_run("parity", run, "--data", root, "-q"), 3)
    assert message == (
        f"{root}: classes zebra are not among the model's labels {labels}; "
        "name the class folders/labels as in the run's labels.txt, or leave those classes out"
    )


# ---- image arrays ----------------------------------------------------------------------------------------------------

IMAGES = np.zeros((6, 8, 8, 3), np.uint8)
LABELS = np.array([0, 0, 0, 1, 1, 1])


@pytest.mark.parametrize(
    "arrays, message",
    [
        (
            {"images": np.zeros((6, 8, 8, 2), np.uint8), "labels": LABELS},
            "{p}: images must be (N, H, W[, 1|3|4]), got shape (6, 8, 8, 2); save RGB as (N, H, W, 3) or grey as (N, H, W)",
        ),
        (
            {"images": np.zeros((6, 64), np.uint8), "labels": LABELS},
            "{p}: images must be (N, H, W[, 1|3|4]), got shape (6, 64); save RGB as (N, H, W, 3) or grey as (N, H, W)",
        ),
        (
            {"images": IMAGES.astype(np.float32), "labels": LABELS},
            "{p}: images must be uint8 pixels 0-255, got float32; if they are 0..1, scale them: (images * 255).round().astype(np.uint8)",
        ),
        (
            {"images": IMAGES.astype(np.uint16), "labels": LABELS},
            "{p}: images must be uint8 pixels 0-255, got uint16; convert with .astype(np.uint8)",
        ),
        (
            {"images": IMAGES, "labels": LABELS[:4]},
            "{p}: labels must be shape (6,), got (4,); save one label per image",
        ),
        (
            {"images": IMAGES, "labels": LABELS[:, None]},
            "{p}: labels must be shape (6,), got (6, 1); save one label per image",
        ),
        (
            {"images": IMAGES, "labels": LABELS + 0.5},
            "{p}: labels must be integers or strings, got float64; convert them with .astype(int)",
        ),
        (
            {"images": IMAGES, "labels": np.array(list("aaabbb")), "class_names": np.array(["a", "b"])},
            "{p}: labels must be integer indices into class_names, got <U1; store indices, or leave class_names out to use "
            "the labels as names",
        ),
        (
            {"images": IMAGES, "labels": LABELS + 5, "class_names": np.array(["a", "b"])},
            "{p}: labels must index class_names (0..1), got 5..6; fix the labels or class_names",
        ),
        ({"images": IMAGES[:0], "labels": LABELS[:0]}, "{p} holds no images; save at least a few per class"),
        (
            {"pixels": IMAGES},
            "{p} needs arrays named 'images' and 'labels' (has: pixels); "
            "save with np.savez(path, images=..., labels=...)",
        ),
        (
            {"images": np.array([IMAGES[0], IMAGES[0][:3]], dtype=object), "labels": LABELS[:2]},
            "{p} is not a numpy file edgetl reads (not .npz/.npy, truncated, or pickled objects, which are never loaded); "
            "save uint8 arrays with np.savez / np.save",
        ),
    ],
    ids=[
        "2-channels",
        "flat",
        "float-pixels",
        "16-bit",
        "short-labels",
        "2d-labels",
        "float-labels",
        "string-labels",
        "labels-out-of-range",
        "empty",
        "no-images-key",
        "pickled-objects",
    ],
)
def test_bad_npz(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    assert _train_fails(path, tmp_path) == message.format(p=path)


def test_bad_npy_and_fake_npz(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", IMAGES)
    assert (
        _train_fails(tmp_path / "x.npy", tmp_path)
        == f"{tmp_path / 'x.npy'}: name the arrays <name>images.npy and <name>labels.npy side by side"
    )
    np.save(tmp_path / "set_images.npy", IMAGES)
    np.save(tmp_path / "set_labels.npy", LABELS[:3])
    assert (
        _train_fails(tmp_path / "set_images.npy", tmp_path)
        == f"{tmp_path / 'set_images.npy'}: labels must be shape (6,), got (3,); save one label per image"
    )
    for name, body in (("text.npz", b"hello"), ("cut.npz", None)):
        if body is None:
            np.savez(tmp_path / name, images=IMAGES, labels=LABELS)
            body = (tmp_path / name).read_bytes()[:100]
        (tmp_path / name).write_bytes(body)
        assert _train_fails(tmp_path / name, tmp_path) == (
            f"{tmp_path / name} is not a numpy file edgetl reads (not .npz/.npy, truncated, or pickled objects, which are "
            "never loaded); save uint8 arrays with np.savez / np.save"
        )


# ---- unreadable and unusual image files ------------------------------------------------------------------------------


def test_zero_byte_file(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(ImageDecodeError) as info:
        decode.decode_image(tmp_path / "x.png")
    assert str(info.value) == f"{tmp_path / 'x.png'}: empty file"


@pytest.mark.parametrize("fraction", [0.3, 0.9, 0.99])
def test_truncated_jpeg(tmp_path: Path, fraction: float) -> None:
    noise = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8), (5, 5), 0)
    jpeg = cv2.imencode(".jpg", noise)[1].tobytes()
    (tmp_path / "x.jpg").write_bytes(jpeg[: int(len(jpeg) * fraction)])
    with pytest.raises(ImageDecodeError) as info:
        decode.decode_image(tmp_path / "x.jpg")
    assert str(info.value) == f"{tmp_path / 'x.jpg'}: {NOT_DECODABLE}"


def test_text_file_named_jpg(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_text("hello, I am not a JPEG")
    with pytest.raises(ImageDecodeError) as info:
        decode.decode_image(tmp_path / "x.jpg")
    assert str(info.value) == f"{tmp_path / 'x.jpg'}: {NOT_DECODABLE}"


def _palette_png(path: Path) -> Path:
    """An 8-bit palette PNG (cv2 cannot write one): index 0 = (10, 20, 30), index 1 = (200, 100, 50)."""
    rows = b"".join(b"\x00" + bytes([0] * 6 + [1] * 6) for _ in range(10))
    path.write_bytes(_png_bytes(12, 10, 8, 3, rows, extra=_chunk(b"PLTE", bytes([10, 20, 30, 200, 100, 50]))))
    return path


def _cmyk_jpeg(path: Path) -> Path:
    image = pytest.importorskip("PIL.Image", reason="Pillow writes the CMYK JPEG")
    image.new("CMYK", (12, 10), (0, 255, 255, 0)).save(path)  # pure red in CMYK
    return path


@pytest.mark.parametrize(
    "write, rgb",
    [
        (
            lambda p: (
                cv2.imwrite(str(p / "x.png"), np.full((10, 12, 3), (30, 20, 10), np.uint16) * 257) and p / "x.png"
            ),
            (10, 20, 30),
        ),
        (lambda p: cv2.imwrite(str(p / "x.png"), np.full((10, 12), 77, np.uint8)) and p / "x.png", (77, 77, 77)),
        (
            lambda p: cv2.imwrite(str(p / "x.png"), np.full((10, 12, 4), (50, 60, 70, 0), np.uint8)) and p / "x.png",
            (70, 60, 50),
        ),
        (lambda p: _palette_png(p / "x.png"), (10, 20, 30)),
        (lambda p: _cmyk_jpeg(p / "x.jpg"), (255, 0, 0)),
    ],
    ids=["16-bit", "grey", "rgba", "palette", "cmyk-jpeg"],
)
def test_image_modes_become_8bit_rgb(tmp_path: Path, write: Any, rgb: tuple[int, int, int]) -> None:
    pixels = decode.decode_image(write(tmp_path))
    assert pixels.shape == (10, 12, 3) and pixels.dtype == np.uint8
    assert np.abs(pixels[0, 0].astype(int) - rgb).max() <= 2


def test_exif_rotated_jpeg(tmp_path: Path) -> None:
    plain = decode.decode_image(_exif_jpeg(tmp_path / "plain.jpg", 1))
    rotated = decode.decode_image(_exif_jpeg(tmp_path / "rotated.jpg", 6))
    assert plain.shape == (40, 60, 3) and rotated.shape == (60, 40, 3)
    assert plain[20, 5, 0] > 200 and rotated[5, 20, 0] > 200 and rotated[55, 20, 2] > 200  # red went from left to top


def test_exif_rotation_survives_the_reduced_decode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode, "MAX_DECODE_PIXELS", 1000)  # as if it were a huge photo: libjpeg decodes at 1/2
    rotated = decode.decode_image(_exif_jpeg(tmp_path / "rotated.jpg", 6))
    assert rotated.shape == (30, 20, 3) and rotated[3, 10, 0] > 200 and rotated[27, 10, 2] > 200


def _huge_png(path: Path, size: int, rgb: tuple[int, int, int]) -> Path:
    """A valid size x size single-colour PNG, ~1 MB on disk, compressed a block of rows at a time."""
    block = (b"\x00" + bytes(rgb) * size) * 100
    deflate = zlib.compressobj(1)
    stream = b"".join(deflate.compress(block) for _ in range(size // 100)) + deflate.flush()
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", stream) + _chunk(b"IEND", b""))
    return path


def test_20000px_png_is_decoded_downscaled_in_bounded_memory(tmp_path: Path) -> None:
    path = _huge_png(tmp_path / "huge.png", 20000, (10, 200, 30))
    code = (
        "import json, resource, sys\nfrom edgetl.runtime import decode\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "pixels = decode.decode_image(sys.argv[1])\n"
        "grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024\n"
        "print(json.dumps({'shape': pixels.shape, 'rgb': pixels[2500, 2500].tolist(), 'grown_mb': grown}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["shape"] == [5000, 5000, 3] and result["rgb"] == [10, 200, 30]
    assert result["grown_mb"] < 400, result  # decoding at full size would take 1.2 GB


@pytest.mark.parametrize("kind", ["rgb", "grey", "rgba", "16-bit", "grey+alpha", "palette", "1-bit"])
def test_strip_decoder_matches_full_decode(tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The strip-by-strip path for huge PNGs gives what a full decode and INTER_AREA would (real row filters)."""
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), (7, 7), 0)
    path = tmp_path / "x.png"
    if kind in ("grey+alpha", "palette", "1-bit"):
        image = pytest.importorskip("PIL.Image", reason="Pillow writes these PNG modes")
        rgb = image.fromarray(np.ascontiguousarray(base[:, :, ::-1]))
        {
            "grey+alpha": lambda: rgb.convert("LA"),
            "palette": lambda: rgb.convert("P", palette=image.ADAPTIVE),
            "1-bit": lambda: rgb.convert("1"),
        }[kind]().save(path)
    else:
        pixels = {
            "rgb": base,
            "grey": base[:, :, 0],
            "rgba": np.dstack([base, base[:, :, 1]]),
            "16-bit": base.astype(np.uint16) * 257 + 3,
        }[kind]
        cv2.imwrite(str(path), pixels)
    full = cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]
    monkeypatch.setattr(decode, "MAX_DECODE_PIXELS", 120 * 160 // 16)
    monkeypatch.setattr(decode, "STRIP_BYTES", 3000)
    strips = decode.decode_image(path)
    assert strips.shape == (30, 40, 3)
    assert np.array_equal(strips, cv2.resize(full, (40, 30), interpolation=cv2.INTER_AREA))


def test_decompression_bomb_header_is_refused(tmp_path: Path) -> None:
    header = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    (tmp_path / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IEND", b""))
    with pytest.raises(ImageDecodeError) as info:
        decode.decode_image(tmp_path / "bomb.png")
    assert str(info.value) == f"{tmp_path / 'bomb.png'}: 1600 megapixels is too large to decode; downscale it first"


@pytest.mark.parametrize(
    "interlace, colour, reason",
    [
        (1, 2, "a 200x200 interlaced PNG is too large to decode; save it non-interlaced or smaller"),
        (0, 5, "not a decodable image (PNG colour type 5)"),
    ],
)
def test_large_png_that_cannot_be_streamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interlace: int, colour: int, reason: str
) -> None:
    header = struct.pack(">IIBBBBB", 200, 200, 8, colour, 0, 0, interlace)
    (tmp_path / "x.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"")) + _chunk(b"IEND", b"")
    )
    monkeypatch.setattr(decode, "MAX_DECODE_PIXELS", 1000)
    with pytest.raises(ImageDecodeError) as info:
        decode.decode_image(tmp_path / "x.png")
    assert str(info.value) == f"{tmp_path / 'x.png'}: {reason}"


def test_large_png_cut_short_is_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cv2.imwrite(str(tmp_path / "x.png"), np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8))
    (tmp_path / "x.png").write_bytes((tmp_path / "x.png").read_bytes()[:-5000])
    monkeypatch.setattr(decode, "MAX_DECODE_PIXELS", 1000)
    with pytest.raises(ImageDecodeError) as info:
        decode.decode_image(tmp_path / "x.png")
    assert str(info.value) == f"{tmp_path / 'x.png'}: not a decodable image (truncated PNG data)"


def test_skips_are_counted_and_listed_in_the_run(tmp_path: Path) -> None:
    """A real (tiny) training run: unreadable files are skipped, counted in metrics.json, listed in data.json."""
    root = tmp_path / "données"
    for k, name in enumerate(("chat noir", "chien ☕")):
        for i in range(10):
            _image(root / name / f"été {i}.png", 60 + 120 * k + i, (32, 32, 3))
    (root / "chat noir" / "zero.png").write_bytes(b"")
    (root / "chat noir" / "text.jpg").write_text("not a jpeg")
    jpeg = cv2.imencode(".jpg", np.full((64, 64, 3), 90, np.uint8))[1].tobytes()
    (root / "chien ☕" / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    run = tmp_path / "run"
    result = _run("train", root, "-o", run, *TINY, "--json")
    assert result.exit_code == 0, result.output
    assert (
        "warning: skipped 3 unreadable image(s) (listed in data.json), e.g. " in result.stderr
        and "Traceback" not in result.output
    )
    assert json.loads(result.stdout)["run"] == str(run)
    recorded = json.loads((run / "data.json").read_text())
    reasons = {Path(s["ref"]).name: s["reason"] for s in recorded["skipped"]}
    assert reasons == {
        "zero.png": f"{root.resolve() / 'chat noir' / 'zero.png'}: empty file",
        "text.jpg": f"{root.resolve() / 'chat noir' / 'text.jpg'}: {NOT_DECODABLE}",
        "cut.jpg": f"{root.resolve() / 'chien ☕' / 'cut.jpg'}: {NOT_DECODABLE}",
    }
    assert json.loads((run / "metrics.json").read_text())["skipped"] == 3
    assert sum(sum(c) for c in recorded["counts"].values()) == 20  # the split lists hold only readable images
    listed = "".join((run / "splits" / f"{s}.csv").read_text(encoding="utf-8") for s in data.SPLITS)
    assert "été 3.png" in listed and not any(name in listed for name in reasons)
    assert (run / "labels.txt").read_text(encoding="utf-8") == "chat noir\nchien ☕\n"


# ---- convert and run folders -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["convert", "calibrate"])
@pytest.mark.parametrize("size", ["0", "-5"])
def test_calib_size_must_be_positive(tmp_path: Path, command: str, size: str) -> None:
    message = _fails(_run(command, tmp_path, "--calib-size", size), 2)
    assert message == f"--calib-size must be >= 1 (got {size}); a few hundred images is typical"


def test_unknown_option_values_are_usage_errors(tmp_path: Path) -> None:
    result = _run("convert", tmp_path, "--quant", "int4")
    assert (
        _fails(result, 2) == "Invalid value for '--variants': 'int4' is not one of fp32, fp16, dynamic, int8, qat-int8"
    )
    assert "Usage: main convert [OPTIONS] RUN" in result.stderr
    assert (
        _fails(_run("convert", tmp_path, "--io", "float64"), 2)
        == "Invalid value for '--io': 'float64' is not one of 'uint8', 'int8', 'float32'."
    )
    assert (
        _fails(_run("convert", tmp_path, "--quant", ","), 2)
        == "--variants needs at least one of: fp32, fp16, dynamic, int8, qat-int8"
    )
    assert (
        _fails(_run("convert", tmp_path / "nope"), 2)
        == f"Invalid value for 'RUN': Directory '{tmp_path / 'nope'}' does not exist."
    )


def _fake_run(folder: Path, card: dict[str, Any] | None, model: bool = True) -> Path:
    folder.mkdir()
    if model:
        (folder / "model.keras").write_bytes(b"not really a model")
    if card is not None:
        (folder / "model_card.json").write_text(json.dumps(card))
    return folder


@pytest.mark.parametrize("missing", ["model.keras", "model_card.json", "both"])
def test_convert_on_a_folder_that_is_not_a_run(tmp_path: Path, missing: str) -> None:
    run = _fake_run(tmp_path / "r", None if missing != "model.keras" else {}, model=missing == "model_card.json")
    message = _fails(_run("convert", run, "-q", "--no-parity"), 3)
    assert message == f"{run} has no model.keras and model_card.json; is it an `edgetl train` run folder?"
    assert not list(run.glob("model_*.tflite"))


def test_convert_refuses_a_file_that_is_not_a_keras_model(tmp_path: Path) -> None:
    from edgetl.runtime.model_card import sha256_file

    run = _fake_run(tmp_path / "r", None)
    card = {
        "schema_version": 1,
        "labels": ["a", "b"],
        "height": 96,
        "width": 96,
        "model_file": "model.keras",
        "model_sha256": sha256_file(run / "model.keras"),
    }
    (run / "model_card.json").write_text(json.dumps(card))
    message = _fails(_run("convert", run, "-q", "--no-parity", "--quant", "fp32"), 3)
    assert (
        message
        == f"{run / 'model.keras'} is not a zip .keras model (edgetl loads no other format); re-run `edgetl train` (or `edgetl qat`) to write it again"
    )
    assert not list(run.glob("model_*.tflite")) and not list(run.glob(".convert-*"))


@pytest.mark.parametrize("version", [0, 2])
def test_convert_refuses_a_card_of_another_schema(tmp_path: Path, version: int) -> None:
    card = {"labels": ["a", "b"], "height": 96, "width": 96, "model_file": "model.keras", "model_sha256": "0" * 64}
    run = _fake_run(tmp_path / "r", {**card, **({"schema_version": version} if version else {})})
    message = _fails(_run("convert", run, "-q", "--no-parity"), 3)
    assert (
        message
        == f"{run / 'model_card.json'}: card schema version {version} is not 1; re-run the edgetl stage that wrote it with this version"
    )


def test_convert_refuses_a_model_that_is_not_its_card(tmp_path: Path, tiny_run: Path) -> None:
    run = tmp_path / "r"
    shutil.copytree(tiny_run, run)
    with open(run / "model.keras", "ab") as handle:
        handle.write(b"\0")
    message = _fails(_run("convert", run, "-q", "--no-parity", "--quant", "fp32"), 3)
    assert re.fullmatch(
        re.escape(f"{run / 'model.keras'} does not match its card (sha256 ")
        + r"[0-9a-f]{12}… vs [0-9a-f]{12}… "
        + re.escape("recorded): the copy is incomplete or the card belongs to another model; copy both again"),
        message,
    )
    assert not list(run.glob("model_*.tflite"))


# ---- security: models and config files are data ---------------------------------------------------------------------


def test_keras_model_with_a_lambda_layer_is_refused(tmp_path: Path) -> None:
    from edgetl.model import classifier as model
    from edgetl.runtime.model_card import ModelCard, sha256_file

    k = model.keras()
    marker = tmp_path / "ran"
    payload = eval(f"lambda x: (__import__('pathlib').Path({str(marker)!r}).touch(), x)[1]")
    inputs = k.Input((96, 96, 3))
    outputs = k.layers.Lambda(payload)(inputs)  # code that must never run on load
    run = tmp_path / "r"
    run.mkdir()
    k.Model(inputs, outputs).save(str(run / "model.keras"))
    marker.unlink(missing_ok=True)
    ModelCard(
        labels=("a", "b"), height=96, width=96, model_file="model.keras", model_sha256=sha256_file(run / "model.keras")
    ).save(run / "model_card.json")
    message = _fails(_run("convert", run, "-q", "--no-parity", "--quant", "fp32"), 3)
    assert message == (
        f"{run / 'model.keras'} holds a Lambda layer (Python code), which edgetl never loads; "
        "rebuild the model without Lambda layers, e.g. with `edgetl train`"
    )
    assert not marker.exists() and not list(run.glob("model_*.tflite"))


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("c.toml", 'data = "x"\noutput = "y"\nlearning_rat = 1\n', "unknown config key(s) learning_rat; valid keys: "),
        (
            "c.json",
            '{"data": "x", "output": "y", "epochs": "ten"}',
            "config key epochs='ten' must be an integer; fix the config file",
        ),
        (
            "c.json",
            '{"data": "x", "output": "y", "augment": "yes"}',
            "config key augment='yes' must be true or false; fix the config file",
        ),
        (
            "c.toml",
            'data = "x"\noutput = "y"\npooling = "median"\n',
            "config key pooling='median' is not one of: avg, max",
        ),
        ("c.json", '["data", "x"]', "config file {path} must hold an object of option names to values"),
        (
            "c.json",
            '{"data": "x",',
            "config file {path} is not valid JSON (Expecting property name enclosed in double quotes: "
            "line 1 column 14 (char 13)); fix its syntax",
        ),
        (
            "c.toml",
            "data = x\n",
            "config file {path} is not valid TOML (Invalid value (at line 1, column 8)); fix its syntax",
        ),
        (
            "missing.json",
            None,
            "config file {path} does not exist; pass an existing JSON/TOML file (e.g. RUN/config.json)",
        ),
    ],
    ids=["toml-unknown-key", "wrong-type", "bool-type", "enum", "not-an-object", "bad-json", "bad-toml", "missing"],
)
def test_bad_config_files(tmp_path: Path, name: str, text: str | None, message: str) -> None:
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    got = _fails(_run("train", "--config", path, "-q"), 2)
    assert got.startswith(message.format(path=path)) if message.endswith(": ") else got == message.format(path=path)


def test_config_files_are_parsed_as_data_never_run(tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    (tmp_path / "c.toml").write_text(
        f"data = \"__import__('os').system('touch {pwned}')\"\noutput = \"{tmp_path / 'run'}\"\n"
    )
    message = _fails(_run("train", "--config", tmp_path / "c.toml", "-q"), 3)
    assert message.startswith("__import__('os').system(") and message.endswith(
        ") does not exist; pass a folder of class sub-folders, a .csv of path,label, or a .npz"
    )
    assert not pwned.exists()
