"""Run folders independent of the working directory and movable (#18 item 2).

A run trained from a relative DATA path records its data root once, absolute, and
every image relative to it; calibrate, convert (int8) and parity then work from
another directory and after the run folder is moved, the calibration sha256 and
the int8 bytes are the same everywhere, and an edited split cannot point outside
the root.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import clicheck
import pytest
from edgetl import data

TINY = ["--weights", "none", "--alpha", "0.35", "--image-size", "32", "--epochs", "1", "--max-per-class", "8", "-q"]


def _small_data(fm_folder: Path, dest: Path, classes: int = 3) -> Path:
    for folder in sorted(fm_folder.iterdir())[:classes]:
        (dest / folder.name).mkdir(parents=True)
        for image in sorted(folder.iterdir())[:10]:
            shutil.copy(image, dest / folder.name / image.name)
    return dest


@pytest.fixture
def relative_run(tmp_path: Path, fm_folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real tiny run trained with ``cwd=tmp_path/work`` from the relative DATA ``data``."""
    work = tmp_path / "work"
    _small_data(fm_folder, work / "data")
    monkeypatch.chdir(work)
    result = clicheck.run("train", "data", "-o", "runs/a", *TINY)
    assert result.exit_code == 0, result.output
    return work / "runs" / "a"


@pytest.mark.slow
def test_relative_data_run_works_from_another_cwd_and_moved(
    relative_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    meta = json.loads((relative_run / "data.json").read_text())
    assert meta["root"] == str(tmp_path / "work" / "data") and meta["paths"] == "relative-to-root"
    rows = (relative_run / "splits" / "train.csv").read_text().splitlines()[1:]
    assert rows and all(not r.startswith("/") and "work" not in r for r in rows)
    assert str(tmp_path) not in (relative_run / "model_card.json").read_text()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    first = _int8(relative_run)
    manifest = json.loads((relative_run / "calibration.json").read_text())
    assert all(not r.startswith("/") for r in manifest["refs"])

    moved = tmp_path / "moved" / "a"
    moved.parent.mkdir()
    shutil.move(str(relative_run), moved)
    monkeypatch.chdir(tmp_path)
    (moved / "calibration.json").unlink()  # chosen again from the moved run: same images, same hash
    (moved / "model_int8.tflite").unlink()
    second = _int8(moved)
    assert json.loads((moved / "calibration.json").read_text())["sha256"] == manifest["sha256"]
    assert second == first  # byte-identical int8, whatever the cwd or the run's place
    result = clicheck.run(
        "parity",
        moved,
        "--models",
        "model_int8.tflite",
        "--max-drop",
        "100",
        "--min-agreement",
        "0",
        "--max-class-drop",
        "100",
        "-q",
    )
    # parity reads the moved run's test split and runs its checks (at 32 px a check may fail on its numbers, not on paths)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 0 or (len(errors) == 1 and errors[0].startswith("Error: int8: ")), result.output
    assert (
        moved / "parity_int8.json"
    ).is_file()  # the checks ran on the moved run's test split (a --models subset keeps parity.json)


def _int8(run: Path) -> bytes:
    assert clicheck.run("calibrate", run, "--calib-size", "6", "-q").exit_code == 0
    result = clicheck.run("convert", run, "--quant", "int8", "--rounding", "nearest", "--no-parity", "-q")
    assert result.exit_code == 0, result.output
    return (run / "model_int8.tflite").read_bytes()


@pytest.mark.parametrize(
    "ref, message",
    [
        ("/etc/passwd", "'/etc/passwd' is not a path inside the run's data root {root}"),
        ("../../etc/passwd", "'../../etc/passwd' is not a path inside the run's data root {root}"),
        ("#x", "'#x' is not an image-array row (#N)"),
    ],
    ids=["absolute", "dotdot", "bad-row"],
)
def test_an_edited_split_cannot_leave_the_data_root(tmp_path: Path, tiny_run: Path, ref: str, message: str) -> None:
    run = tmp_path / "r"
    shutil.copytree(tiny_run, run)
    root = json.loads((run / "data.json").read_text())["root"]
    (run / "splits" / "test.csv").write_text(f"ref,label\n{ref},0\n")
    got = clicheck.fails(clicheck.run("qat", run, "-q"), 3)
    assert got.startswith(f"{run / 'splits' / 'test.csv'}:2: " + message.format(root=root))


def test_a_run_folder_from_an_older_edgetl_still_reads(
    tmp_path: Path, tiny_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Absolute paths (older layout) are read while under the root; cwd-relative ones only from their cwd."""
    run = tmp_path / "r"
    shutil.copytree(tiny_run, run)
    meta = json.loads((run / "data.json").read_text())
    root = meta.pop("paths") and meta["root"]
    (run / "data.json").write_text(json.dumps(meta))

    def rewrite(prefix: str) -> None:
        for split in data.SPLITS:
            rows = (tiny_run / "splits" / f"{split}.csv").read_text().splitlines()
            (run / "splits" / f"{split}.csv").write_text("\n".join([rows[0]] + [prefix + r for r in rows[1:]]) + "\n")

    rewrite(root + "/")
    _, items = data.load_split(run, "test")
    assert items[0].ref.startswith(root + "/") and Path(items[0].ref).is_file()
    rewrite(Path(root).name + "/")  # trained from the root's parent with a relative DATA
    monkeypatch.chdir(Path(root).parent)
    assert Path(data.load_split(run, "test")[1][0].ref).is_file()
    monkeypatch.chdir(tmp_path)
    message = clicheck.fails(clicheck.run("calibrate", run, "-q"), 3)
    assert message == (
        f"{run / 'splits' / 'train.csv'}:2: this run folder (an older edgetl) records image paths relative to the "
        "directory it was trained from; run the command from there, or re-run `edgetl train` to write it again"
    )
