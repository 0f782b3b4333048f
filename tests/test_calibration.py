"""The representative set: balanced, seeded, bounded, train-only, recorded, fed as the device feeds."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from edgetl import calibration, data
from edgetl.cli.main import main
from edgetl.runtime import preprocess
from edgetl.runtime.model_card import load_card


def _items(per_class: dict[int, int]) -> list[tuple[str, int]]:
    return [(f"img/{label}/{i:03d}.png", label) for label, n in per_class.items() for i in range(n)]


def _split_refs(run: Path, name: str) -> set[str]:
    with open(run / "splits" / f"{name}.csv", newline="") as handle:
        return {row["ref"] for row in csv.DictReader(handle)}


def test_selection_is_balanced_seeded_and_order_independent() -> None:
    items = _items({0: 50, 1: 50, 2: 50, 3: 50})
    chosen = calibration.select_balanced(items, 30, seed=5)
    assert len(chosen) == 30 and len(set(chosen)) == 30
    counts = Counter(label for _, label in chosen)
    assert max(counts.values()) - min(counts.values()) <= 1
    assert Counter(label for _, label in chosen[:8]) == Counter(
        {0: 2, 1: 2, 2: 2, 3: 2}
    )  # interleaved: prefixes balanced
    assert calibration.select_balanced(list(reversed(items)), 30, seed=5) == chosen
    assert calibration.select_balanced(items, 30, seed=6) != chosen


def test_small_classes_are_filled_by_the_others_and_bounds_are_checked() -> None:
    items = _items({0: 2, 1: 20, 2: 20})
    chosen = calibration.select_balanced(items, 30, seed=0)
    assert Counter(label for _, label in chosen) == Counter({0: 2, 1: 14, 2: 14})
    assert len(calibration.select_balanced(items, 1000, seed=0)) == 42
    with pytest.raises(calibration.CalibrationError, match="calibration size must be >= 1"):
        calibration.select_balanced(items, 0, seed=0)
    with pytest.raises(calibration.CalibrationError, match="train split"):
        calibration.build_manifest(items, ["a", "b", "c"], 10, 0, split="test")


def test_manifest_checksum_round_trip_and_tamper(tmp_path: Path) -> None:
    manifest = calibration.build_manifest(_items({0: 5, 1: 5}), ["a", "b"], 6, seed=1)
    assert manifest.sha256 == calibration.list_sha256(manifest.refs, manifest.labels)
    assert manifest.per_class == {"a": 3, "b": 3}
    manifest.save(tmp_path / "calibration.json")
    assert calibration.load_manifest(tmp_path / "calibration.json") == manifest
    data = json.loads((tmp_path / "calibration.json").read_text())
    data["refs"][0] = "img/0/other.png"
    (tmp_path / "calibration.json").write_text(json.dumps(data))
    with pytest.raises(calibration.CalibrationError, match="does not match its sha256"):
        calibration.load_manifest(tmp_path / "calibration.json")


def test_calibrate_writes_a_deterministic_train_only_manifest(tiny_run: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    first = CliRunner().invoke(main, ["calibrate", str(run), "--calib-size", "50", "--seed", "1"])
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith(f"{run / 'calibration.json'}  50 images, 5 per class, seed 1, sha256 ")
    written = (run / "calibration.json").read_bytes()
    again = CliRunner().invoke(main, ["calibrate", str(run), "--calib-size", "50", "--seed", "1", "--json"])
    assert (run / "calibration.json").read_bytes() == written
    manifest = json.loads(again.stdout)
    assert manifest["size"] == 50 and manifest["split"] == "train" and set(manifest["per_class"].values()) == {5}
    refs = set(manifest["refs"])
    assert refs <= _split_refs(run, "train")
    assert not refs & (_split_refs(run, "val") | _split_refs(run, "test"))
    other = CliRunner().invoke(main, ["calibrate", str(run), "--calib-size", "50", "--seed", "2", "--json"])
    assert json.loads(other.stdout)["sha256"] != manifest["sha256"]


def test_asking_for_more_than_the_train_split_warns(tiny_run: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    train_size = len(_split_refs(run, "train"))
    result = CliRunner().invoke(main, ["calibrate", str(run), "--calib-size", "5000"])
    assert result.exit_code == 0
    assert (
        f"warning: the train split has only {train_size} images; calibrating on all of them, not 5000" in result.stderr
    )
    assert json.loads((run / "calibration.json").read_text())["size"] == train_size


def test_calibrate_error_messages(tiny_run: Path, tmp_path: Path) -> None:
    missing = CliRunner().invoke(main, ["calibrate", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and f"Directory '{tmp_path / 'nope'}' does not exist" in missing.output
    zero = CliRunner().invoke(main, ["calibrate", str(tiny_run), "--calib-size", "0"])
    assert zero.exit_code == 2
    assert (
        zero.stderr.strip().splitlines()[-1]
        == "Error: --calib-size must be >= 1 (got 0); a few hundred images is typical"
    )
    empty = CliRunner().invoke(main, ["calibrate", str(tmp_path)])
    assert empty.exit_code == 3
    assert (
        empty.stderr.strip()
        == f"Error: {tmp_path} has no model.keras and model_card.json; is it an `edgetl train` run folder?"
    )


def test_representative_images_are_device_preprocessed_one_at_a_time(tiny_run: Path) -> None:
    card = load_card(tiny_run / "model_card.json")
    with open(tiny_run / "splits" / "train.csv", newline="") as handle:
        items = [(row["ref"], int(row["label"])) for row in csv.DictReader(handle)]
    manifest = calibration.build_manifest(items, card.labels, 12, seed=0)
    loader = data.split_image_loader(tiny_run, 96, "area")  # refs are relative to the run's data root
    batches = list(calibration.representative_dataset(manifest, card, loader)())
    assert len(batches) == 12 and all(len(b) == 1 for b in batches)
    assert batches[0][0].shape == (1, 96, 96, 3) and batches[0][0].dtype == np.float32
    expected = preprocess.normalize(loader(manifest.refs[0]), card.normalization)
    np.testing.assert_array_equal(batches[0][0][0], expected)
    assert -1.0 <= batches[0][0].min() and batches[0][0].max() <= 1.0
