"""Dataset discovery, splits and robust decoding on real files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from edgetl import data
from edgetl.errors import DataError


def _png(path: Path, value: int = 128, shape=(20, 24, 3)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full(shape, value, np.uint8))
    return path


def _folder(root: Path, classes=("cat", "dog"), per_class: int = 10) -> Path:
    for c in classes:
        for i in range(per_class):
            _png(root / c / f"{i}.png", 10 * i)
    return root


def test_class_folders_sorted_and_recursive(tmp_path: Path) -> None:
    _folder(tmp_path / "d", ("zebra", "ant"), 3)
    _png(tmp_path / "d" / "ant" / "nested" / "deep.png")
    (tmp_path / "d" / "ant" / "notes.txt").write_text("not an image")
    ds = data.discover(str(tmp_path / "d"))
    assert ds.class_names == ["ant", "zebra"]
    assert sum(it.label == 0 for it in ds.items) == 4


def test_split_is_seeded_stratified_and_disjoint(tmp_path: Path) -> None:
    ds = data.discover(str(_folder(tmp_path / "d", ("a", "b", "c"), 20)))
    first = data.split(ds, 0.1, 0.1, seed=7)
    again = data.split(ds, 0.1, 0.1, seed=7)
    other = data.split(ds, 0.1, 0.1, seed=8)
    assert first == again and first != other
    refs = [{it.ref for it in first[s]} for s in data.SPLITS]
    assert not (refs[0] & refs[1]) and not (refs[0] & refs[2]) and not (refs[1] & refs[2])
    assert sum(map(len, refs)) == 60
    assert data.class_balance(first["test"], 3) == [2, 2, 2]


def test_presplit_folder_is_respected(tmp_path: Path) -> None:
    _folder(tmp_path / "d" / "train", ("a", "b"), 8)
    _folder(tmp_path / "d" / "test", ("a", "b"), 2)
    ds = data.discover(str(tmp_path / "d"))
    splits = data.split(ds, 0.25, 0.1, seed=0)
    assert all("/test/" in it.ref for it in splits["test"]) and len(splits["test"]) == 4
    assert len(splits["val"]) == 4 and all("/train/" in it.ref for it in splits["val"])


def test_csv_relative_paths_and_confinement(tmp_path: Path) -> None:
    _folder(tmp_path / "d", ("a", "b"), 2)
    (tmp_path / "d" / "list.csv").write_text("path,label\na/0.png,a\na/1.png,a\nb/0.png,b\nb/1.png,b\n")
    ds = data.discover(str(tmp_path / "d" / "list.csv"))
    assert ds.class_names == ["a", "b"] and len(ds.items) == 4
    _png(tmp_path / "outside.png")
    (tmp_path / "d" / "bad.csv").write_text("../outside.png,a\nb/0.png,b\n")
    with pytest.raises(DataError, match="points outside .*--allow-outside-root"):
        data.discover(str(tmp_path / "d" / "bad.csv"))
    assert len(data.discover(str(tmp_path / "d" / "bad.csv"), allow_outside_root=True).items) == 2
    (tmp_path / "d" / "missing.csv").write_text("a/0.png,a\nnope.png,b\n")
    with pytest.raises(DataError, match="missing.csv:2: image 'nope.png' does not exist"):
        data.discover(str(tmp_path / "d" / "missing.csv"))


def test_npz_arrays(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 255, (12, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=images, labels=np.repeat([0, 1, 2], 4), class_names=np.array(["x", "y", "z"]))
    ds = data.discover(str(tmp_path / "d.npz"))
    pixels, kept, skipped = ds.pixels(ds.items[:3], 32)
    assert ds.class_names == ["x", "y", "z"] and pixels.shape == (3, 32, 32, 3) and not skipped
    np.savez(tmp_path / "bad.npz", images=images.astype(np.float32), labels=np.zeros(12))
    with pytest.raises(DataError, match="must be uint8"):
        data.discover(str(tmp_path / "bad.npz"))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p, "does not exist"),
        (lambda p: (p.mkdir(), p)[1], "no class sub-folders"),
        (lambda p: _folder(p, ("only",), 3), "at least two"),
        (lambda p: (_folder(p, ("a",), 3), (p / "empty").mkdir(), p)[2], "empty have no images"),
    ],
)
def test_bad_datasets_say_how_to_fix(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(DataError, match=message):
        data.discover(str(make(tmp_path / "d")))


def test_unreadable_images_are_skipped_and_listed(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", ("a", "b"), 3)
    (root / "a" / "empty.png").write_bytes(b"")
    (root / "a" / "text.jpg").write_text("hello, not a jpeg")
    good = (root / "b" / "0.png").read_bytes()
    (root / "b" / "truncated.png").write_bytes(good[: len(good) // 2])
    ds = data.discover(str(root))
    pixels, kept, skipped = ds.pixels(ds.items, 16)
    reasons = {Path(s["ref"]).name: s["reason"] for s in skipped}
    assert {"empty.png", "text.jpg"} <= set(reasons) and "empty file" in reasons["empty.png"]
    assert len(pixels) == len(kept) == len(ds.items) - len(skipped)
