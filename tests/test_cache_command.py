"""One cache variable for both caches, `edgetl cache` to show and clean it, and a warning when pixels pile up."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from edgetl.cli.main import main
from edgetl.data import pixels as cache
from edgetl.model import weights


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGETL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("EDGETL_PIXEL_CACHE", raising=False)
    return tmp_path / "cache"


def test_edgetl_cache_moves_weights_and_pixels(root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert weights.cache_dir() == root / "weights" and cache.default_dir() == root / "pixels"
    monkeypatch.setenv("EDGETL_PIXEL_CACHE", str(tmp_path / "px"))  # the older variable still moves the pixels alone
    assert weights.cache_dir() == root / "weights" and cache.default_dir() == tmp_path / "px"
    monkeypatch.delenv("EDGETL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights.cache_dir() == tmp_path / "xdg" / "edgetl" / "weights"


def test_cache_shows_sizes_and_clean_empties_the_pixels(root: Path) -> None:
    (root / "pixels").mkdir(parents=True)
    (root / "weights").mkdir()
    (root / "pixels" / "96px-area-x.npy").write_bytes(b"\0" * 2_000_000)
    (root / "weights" / "w.h5").write_bytes(b"\0" * 1_000_000)
    shown = CliRunner().invoke(main, ["cache", "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output) == {
        "weights": {"path": str(root / "weights"), "bytes": 1_000_000, "files": 1},
        "pixels": {"path": str(root / "pixels"), "bytes": 2_000_000, "files": 1},
    }
    table = CliRunner().invoke(main, ["cache"]).output.splitlines()
    assert table[1].split()[:3] == ["pixels", "2.0", "MB"]
    cleaned = CliRunner().invoke(main, ["cache", "clean"])
    assert (cleaned.exit_code, cleaned.output) == (0, "freed 2.0 MB\n")
    assert not (root / "pixels").exists() and (root / "weights" / "w.h5").exists()
    assert CliRunner().invoke(main, ["cache", "clean", "--weights"]).output == "freed 1.0 MB\n"
    assert not (root / "weights").exists()


def test_a_large_pixel_cache_warns_once_per_new_entry(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    from edgetl import data

    for label, colour in (("a", 0), ("b", 255)):
        (tmp_path / "d" / label).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "d" / label / "x.png"), np.full((8, 8, 3), colour, np.uint8))
    dataset = data.discover(str(tmp_path / "d"))
    assert cache.size_warning(root / "pixels") is None
    monkeypatch.setenv("EDGETL_PIXEL_CACHE_WARN_GB", "0.0000001")  # 100 bytes
    cache.load_split(dataset, dataset.items, 32)
    err = capfd.readouterr().err
    assert "the pixel cache" in err and "`edgetl cache clean` empties it" in err
    cache.load_split(dataset, dataset.items, 32)  # reused, not grown: no second warning
    assert "the pixel cache" not in capfd.readouterr().err
