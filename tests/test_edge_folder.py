"""``edge-classify --image DIR --csv``: one row per image, accuracy and a confusion matrix from class
sub-folders, computed as ``Classifier`` (and ``edgetl parity --data``) compute it image by image.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from edgetl.runtime import Classifier, ClassifierOptions
from edgetl.runtime.__main__ import main
from edgetl.runtime.decode import decode_image
from edgetl.runtime.folder import wilson
from edgetl.runtime.session import EXIT_OK, EXIT_USAGE

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"
MODEL = GOLDEN / "golden_int8.tflite"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())


@pytest.fixture()
def class_tree(tmp_path: Path, fm_folder: Path) -> Path:
    """The golden images in class sub-folders named like the golden model's labels, plus real
    Fashion-MNIST photos (grey sneakers) filed under "red": wrong answers the matrix must show."""
    root = tmp_path / "tree"
    for name, want in EXPECTED["images"].items():
        (root / want["top1"]).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(GOLDEN / name, root / want["top1"] / name)
    photos = sorted((fm_folder / "sneaker").iterdir())[:6]
    (root / "red" / "shoes").mkdir()
    for photo in photos:
        shutil.copyfile(photo, root / "red" / "shoes" / photo.name)
    (root / "stripes" / "notes.txt").write_text("not an image")
    return root


def per_image(root: Path, paths: list[str]) -> tuple[list[int], list[int]]:
    """Truth and argmax for each image, one ``Classifier.scores`` call per decoded file (as parity does it)."""
    classifier = Classifier(ClassifierOptions(model_path=str(MODEL)))
    truth = [classifier.labels.index(Path(p).parts[0]) for p in paths]
    pred = [int(np.argmax(classifier.scores(decode_image(root / p), "RGB"))) for p in paths]
    return truth, pred


def test_class_folders_give_rows_accuracy_and_a_confusion_png(
    class_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out, png, summary = tmp_path / "out.csv", tmp_path / "confusion.png", tmp_path / "summary.json"
    code = main(
        [
            "--model",
            str(MODEL),
            "--image",
            str(class_tree),
            "--csv",
            str(out),
            "--confusion",
            str(png),
            "--summary-json",
            str(summary),
            "--top-k",
            "2",
        ]
    )
    stdout, err = capsys.readouterr()
    assert code == EXIT_OK and stdout == ""  # the rows are in the CSV, no JSON lines, no window needed
    rows = list(csv.reader(out.read_text().splitlines()))
    assert rows[0] == ["path", "label", "score", "label_2", "score_2"]
    paths = [r[0] for r in rows[1:]]
    assert len(paths) == 8 + 6 == len(set(paths)) and not any(p.startswith("/") or p.endswith(".txt") for p in paths)
    assert paths == sorted(paths, key=lambda p: (Path(p).parts[0], len(Path(p).parts), p))  # folder by folder, sorted
    truth, pred = per_image(class_tree, paths)
    labels = list(EXPECTED["labels"])
    assert [r[1] for r in rows[1:]] == [labels[i] for i in pred]
    correct = sum(t == p for t, p in zip(truth, pred))
    data = json.loads(summary.read_text())
    accuracy = data["accuracy"]
    assert (
        accuracy["n"] == 14
        and accuracy["correct"] == correct
        and accuracy["top1"] == pytest.approx(correct / 14, abs=1e-6)
    )
    assert accuracy["ci95"] == pytest.approx(list(wilson(correct, 14)), abs=1e-6) and accuracy["labels"] == labels
    expected_matrix = np.zeros((4, 4), int)
    np.add.at(expected_matrix, (truth, pred), 1)
    assert accuracy["confusion"] == expected_matrix.tolist() and data["csv"] == str(out) and data["exit_code"] == 0
    assert 8 <= correct < 14  # the golden images are right; grey sneakers filed as red are not red
    assert f"[edge-classify] top-1 accuracy {100 * correct / 14:.2f}% ({correct}/14 images, 95% Wilson interval " in err
    assert "[edge-classify] true \\ predicted" in err
    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] > 200 and image.shape[1] > 200 and float(image.std()) > 20


def test_plain_folder_rows_without_accuracy_and_csv_to_stdout(
    fm_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Fashion-MNIST class names are not the golden model's labels: every photo gets a row, no accuracy is claimed."""
    summary = tmp_path / "s.json"
    code = main(
        [
            "--model",
            str(MODEL),
            "--image",
            str(fm_folder),
            "--csv",
            "-",
            "--top-k",
            "1",
            "-q",
            "--summary-json",
            str(summary),
        ]
    )
    stdout, err = capsys.readouterr()
    rows = list(csv.reader(io.StringIO(stdout)))
    assert code == EXIT_OK and err == ""
    assert rows[0] == ["path", "label", "score"] and len(rows) - 1 == sum(1 for _ in fm_folder.rglob("*.png")) == 400
    assert {Path(r[0]).parts[0] for r in rows[1:]} == {p.name for p in fm_folder.iterdir()}
    assert {r[1] for r in rows[1:]} <= set(EXPECTED["labels"]) and all(0 <= float(r[2]) <= 1 for r in rows[1:])
    assert "accuracy" not in json.loads(summary.read_text())


def test_threshold_empties_csv_cells_but_accuracy_still_uses_the_argmax(
    class_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out, summary = tmp_path / "out.csv", tmp_path / "s.json"
    assert (
        main(
            [
                "--model",
                str(MODEL),
                "--image",
                str(class_tree),
                "--csv",
                str(out),
                "--threshold",
                "0.99",
                "-q",
                "--summary-json",
                str(summary),
            ]
        )
        == EXIT_OK
    )
    rows = list(csv.reader(out.read_text().splitlines()))[1:]
    assert all(r[1:] == [""] * 6 for r in rows)  # no golden score reaches 0.99
    assert json.loads(summary.read_text())["accuracy"]["correct"] >= 8


def test_folder_errors_exit_2_and_write_nothing(
    class_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (class_tree / "purple").mkdir()
    shutil.copyfile(GOLDEN / "00_blue.png", class_tree / "purple" / "x.png")
    out = tmp_path / "out.csv"
    assert main(["--model", str(MODEL), "--image", str(class_tree), "--csv", str(out)]) == EXIT_USAGE
    assert (
        f"edge-classify: error: {class_tree}: sub-folders purple are not among the model's labels (blue, green, red, stripes); "
        "name each class folder as its label, or move the others out" in capsys.readouterr().err
    )
    assert not out.exists()
    assert main(["--model", str(MODEL), "--image", str(GOLDEN), "--confusion", str(tmp_path / "c.png")]) == EXIT_USAGE
    assert (
        f"edge-classify: error: --confusion needs class sub-folders named like the model's labels in {GOLDEN}"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "c.png").exists()


def test_interrupted_folder_run_writes_no_csv(tmp_path: Path) -> None:
    """Ctrl-C mid-folder: exit 130, the summary says why, and no partial CSV is left behind."""
    import signal
    import time

    folder = tmp_path / "many"
    folder.mkdir()
    cv2.imwrite(str(tmp_path / "noise.png"), np.random.default_rng(0).integers(0, 255, (600, 800, 3), np.uint8))
    for i in range(2000):  # hard links: 2,000 images to decode, one file on disk
        (folder / f"{i:04d}.png").hardlink_to(tmp_path / "noise.png")
    out = tmp_path / "out.csv"
    process = subprocess.Popen(
        [sys.executable, "-m", "edgetl.runtime", "--model", str(MODEL), "--image", str(folder), "--csv", str(out)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    started = time.monotonic()
    while (
        "[edge-classify] source: " not in process.stderr.readline()
    ):  # the loop is running, Python's SIGINT handler too
        assert process.poll() is None and time.monotonic() - started < 60
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    err = process.communicate(timeout=60)[1]
    assert process.returncode == 130, err[-2000:]
    assert "[edge-classify] CSV not written: interrupted" in err and not out.exists()
    assert list(tmp_path.glob(".out.csv*")) == []


def test_wilson_interval_known_values() -> None:
    assert wilson(0, 0) == (0.0, 1.0)
    low, high = wilson(81, 100)  # centre (0.81 + 1.96²/200) / (1 + 1.96²/100) = 0.7985, half-width 0.0763
    assert (round(low, 4), round(high, 4)) == (0.7222, 0.8749)
    assert wilson(10, 10)[1] == 1.0 and wilson(10, 10)[0] == pytest.approx(0.7225, abs=1e-3)


@pytest.mark.slow
def test_folder_accuracy_equals_parity_on_a_real_run(
    trained_run: Path, fm_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The same int8 model and class folders: edge-classify's accuracy and matrix are parity's, to the image."""
    from click.testing import CliRunner
    from edgetl.cli.main import main as edgetl

    run = Path(shutil.copytree(trained_run, tmp_path / "run"))
    result = CliRunner().invoke(
        edgetl, ["convert", str(run), "--quant", "int8", "--calib-size", "100", "--no-parity", "-q"]
    )
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(
        edgetl,
        [
            "parity",
            str(run),
            "--data",
            str(fm_folder),
            "--models",
            "model_int8.tflite",
            "--json",
            "-q",
            "--max-drop",
            "100",
            "--min-agreement",
            "0",
            "--max-class-drop",
            "100",
        ],
    )
    assert result.exit_code == 0, result.output
    parity = json.loads(result.stdout)["models"]["int8"]
    summary, out = tmp_path / "summary.json", tmp_path / "out.csv"
    code = main(
        [
            "--model",
            str(run / "model_int8.tflite"),
            "--image",
            str(fm_folder),
            "--csv",
            str(out),
            "-q",
            "--summary-json",
            str(summary),
        ]
    )
    capsys.readouterr()
    accuracy = json.loads(summary.read_text())["accuracy"]
    assert code == EXIT_OK and len(out.read_text().splitlines()) - 1 == accuracy["n"] == parity["count"] == 400
    assert accuracy["top1"] == pytest.approx(parity["top1"], abs=1e-9) and accuracy["confusion"] == parity["confusion"]
    print(
        f"int8 on {accuracy['n']} Fashion-MNIST photos: edge-classify {accuracy['top1']:.4f}, parity {parity['top1']:.4f}"
    )
