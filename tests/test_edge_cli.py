"""``edge-classify`` (``python -m edgetl.runtime``): JSON lines, options, exit codes, signals, pipes, soak.

In-process ``main()`` with capsys where that is enough; a subprocess where the
process itself is the subject (the module entry point, Ctrl-C, a closed pipe, RSS).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from edgetl.runtime.__main__ import main
from edgetl.runtime.session import EXIT_INTERRUPTED, EXIT_MODEL, EXIT_OK, EXIT_SOURCE, EXIT_USAGE

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"
MODEL = GOLDEN / "golden_int8.tflite"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())
IMAGES = sorted(EXPECTED["images"])
EDGE_CLASSIFY = [sys.executable, "-m", "edgetl.runtime"]
LINE_KEYS = {"time", "frame", "source", "top_k", "preprocess_ms", "invoke_ms", "total_ms", "prepared_ahead"}
SUMMARY_KEYS = {
    "frames",
    "reason",
    "wall_s",
    "fps",
    "mean_ms",
    "p95_ms",
    "invoke_mean_ms",
    "dropped",
    "reconnects",
    "skipped",
    "skipped_files",
    "rss_first_mb",
    "rss_warm_mb",
    "rss_last_mb",
    "exit_code",
}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 camera-sized MJPG frames (320x240) in the golden colours, moving so every frame differs."""
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (320, 240))
    rng = np.random.default_rng(0)
    for i in range(60):
        frame = np.full((240, 320, 3), 70, np.uint8)
        frame[:, :, i % 3] = 190  # B, G, R in turn (OpenCV order)
        frame = np.clip(frame + rng.normal(0, 20, frame.shape), 0, 255).astype(np.uint8)
        cv2.putText(frame, str(i), (20 + i, 120), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
        writer.write(frame)
    writer.release()
    return path


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        EDGE_CLASSIFY + ["--model", str(MODEL), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def classify(capsys: pytest.CaptureFixture, *args: str, model: Path = MODEL) -> tuple[int, list[dict], str]:
    code = main(["--model", str(model), "--headless", *args])
    out, err = capsys.readouterr()
    return code, lines(out), err


# --- JSON lines and options ---------------------------------------------------------------------


def test_module_entry_point_prints_one_json_line_per_image(tmp_path: Path) -> None:
    result = run("--image", str(GOLDEN), "--headless", "--summary-json", str(tmp_path / "summary.json"))
    assert result.returncode == EXIT_OK, result.stderr
    frames = lines(result.stdout)
    assert [Path(f["source"]).name for f in frames] == IMAGES and [f["frame"] for f in frames] == list(range(8))
    for frame in frames:
        assert set(frame) == LINE_KEYS
        assert abs(frame["time"] - time.time()) < 60
        assert all(isinstance(frame[k], float) and frame[k] >= 0 for k in ("preprocess_ms", "invoke_ms", "total_ms"))
        assert frame["total_ms"] >= frame["invoke_ms"]
        assert len(frame["top_k"]) == 3 and all(set(c) == {"index", "label", "score"} for c in frame["top_k"])
        want = EXPECTED["images"][Path(frame["source"]).name]
        assert frame["top_k"][0]["label"] == want["top1"]
        for c in frame["top_k"]:
            assert c["label"] == EXPECTED["labels"][c["index"]] and c["score"] == pytest.approx(
                want["scores"][c["index"]], abs=0.01
            )
    assert "[edge-classify] summary (end of input): 8 frames, " in result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) == SUMMARY_KEYS
    assert summary["frames"] == 8 and summary["reason"] == "end of input" and summary["exit_code"] == 0
    assert summary["skipped"] == summary["dropped"] == summary["reconnects"] == 0 and summary["skipped_files"] == []
    assert summary["mean_ms"] > 0 and summary["p95_ms"] >= summary["invoke_mean_ms"] > 0 and summary["rss_last_mb"] > 0


def test_help_lists_the_exit_codes() -> None:
    result = subprocess.run(EDGE_CLASSIFY + ["--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert (
        "Exit codes: 0 done, 2 usage, 3 model/card unusable, 4 source failed or lost, 5 output not writable, 130 interrupted."
        in " ".join(result.stdout.split())
    )


def test_images_from_files_and_folders_in_the_order_given(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "more"
    folder.mkdir()
    for name in ("07_stripes.png", "02_red.png"):
        shutil.copyfile(GOLDEN / name, folder / name)
    (folder / "notes.txt").write_text("not an image, not looked at")
    code, frames, err = classify(capsys, "--image", str(GOLDEN / "05_green.png"), str(folder), "-q")
    assert code == EXIT_OK and err == ""
    assert [Path(f["source"]).name for f in frames] == ["05_green.png", "02_red.png", "07_stripes.png"]
    assert [f["top_k"][0]["label"] for f in frames] == ["green", "red", "stripes"]


def test_unreadable_image_among_readable_ones_is_skipped_counted_and_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "mixed"
    shutil.copytree(GOLDEN, folder, ignore=shutil.ignore_patterns("*.json", "*.tflite"))
    (folder / "03_broken.png").write_bytes((GOLDEN / "03_stripes.png").read_bytes()[:40])
    (folder / "09_empty.jpg").write_bytes(b"")
    summary = tmp_path / "summary.json"
    code, frames, err = classify(capsys, "--image", str(folder), "--summary-json", str(summary))
    assert code == EXIT_OK
    assert len(frames) == 8 and "03_broken.png" not in {Path(f["source"]).name for f in frames}
    assert f"[edge-classify] skipped: {folder / '03_broken.png'}: not a decodable image" in err
    assert f"[edge-classify] skipped: {folder / '09_empty.jpg'}: empty file" in err
    assert ", 2 skipped, " in err
    data = json.loads(summary.read_text())
    assert data["frames"] == 8 and data["skipped"] == 2 and len(data["skipped_files"]) == 2
    assert data["skipped_files"][1] == f"{folder / '09_empty.jpg'}: empty file"


def test_top_k_threshold_and_max_frames(capsys: pytest.CaptureFixture) -> None:
    code, frames, _ = classify(capsys, "--image", str(GOLDEN), "--top-k", "1", "-q")
    assert code == EXIT_OK and [len(f["top_k"]) for f in frames] == [1] * 8
    # 0.74 sits >= 4 output steps (1/256) from every golden top score, so the ±0.01 golden tolerance cannot flip it
    code, frames, _ = classify(capsys, "--image", str(GOLDEN), "--top-k", "4", "--threshold", "0.74", "-q")
    confident = [len(f["top_k"]) for f in frames]
    assert (
        confident == [int(max(EXPECTED["images"][name]["scores"]) >= 0.74) for name in IMAGES]
        and 0 < sum(confident) < 8
    )
    assert all(c["score"] >= 0.74 for f in frames for c in f["top_k"])
    code, frames, err = classify(capsys, "--image", str(GOLDEN), "--max-frames", "3")
    assert code == EXIT_OK and len(frames) == 3 and "summary (max-frames): 3 frames" in err


def test_video_frames_are_all_classified_in_order(clip: Path, capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    code, frames, _ = classify(
        capsys, "--video", str(clip), "--top-k", "1", "-q", "--summary-json", str(tmp_path / "s.json")
    )
    assert code == EXIT_OK and [f["frame"] for f in frames] == list(range(60))
    assert {f["source"] for f in frames} == {str(clip)}
    assert [f["top_k"][0]["label"] for f in frames[:3]] == ["blue", "green", "red"]  # BGR frames read as BGR
    assert json.loads((tmp_path / "s.json").read_text())["frames"] == 60


def test_video_tensors_prepared_on_the_reader_thread_score_as_in_the_loop(
    clip: Path, capsys: pytest.CaptureFixture
) -> None:
    """The reader thread builds each tensor ahead; top-k and scores must equal classify() on the same decoded frame."""
    from edgetl.runtime import Classifier, ClassifierOptions

    code, frames, _ = classify(capsys, "--video", str(clip), "--top-k", "4", "-q")
    assert code == EXIT_OK and all(f["prepared_ahead"] and f["preprocess_ms"] > 0 for f in frames)
    assert all(f["total_ms"] >= f["preprocess_ms"] + f["invoke_ms"] - 1e-3 for f in frames)
    classifier, capture = (
        Classifier(ClassifierOptions(model_path=str(MODEL), max_results=4)),
        cv2.VideoCapture(str(clip)),
    )
    for line in frames:
        ok, bgr = capture.read()
        assert ok
        expected = [{**c.to_dict(), "score": pytest.approx(c.score, abs=1e-6)} for c in classifier.classify(bgr, "BGR")]
        assert line["top_k"] == expected
    capture.release()
    _, images, _ = classify(capsys, "--image", str(GOLDEN), "-q")
    assert not any(f["prepared_ahead"] for f in images)  # image files are decoded and prepared in the loop


# --- exit codes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--image", "x.png"], "Error: Missing option '--model'."),
        (["--model", "m.tflite"], "Error: give exactly one source: --camera, --video, --image or --rtsp"),
        (
            ["--model", "m.tflite", "--image", "x", "--video", "y"],
            "Error: give exactly one source: --camera, --video, --image or --rtsp (got --video and --image)",
        ),
        (
            ["--model", "m.tflite", "--image", "x", "--top-k", "two"],
            "Error: Invalid value for '--top-k': 'two' is not a valid integer.",
        ),
        (
            ["--model", "m.tflite", "--video", "a.avi", "b.avi"],
            "Error: unexpected argument 'b.avi': only --image takes several paths",
        ),
        (
            ["--model", "m.tflite", "--video", "a.avi", "--csv", "out.csv"],
            "Error: --csv and --confusion classify a folder: add --image DIR",
        ),
        (
            ["--model", "m.tflite", "--image", "x", "--serve", "localhost"],
            "Error: Invalid value for '--serve': 'localhost' is not PORT or HOST:PORT; give e.g. 8080 (this machine only) or 0.0.0.0:8080 (the LAN)",
        ),
    ],
)
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = subprocess.run(EDGE_CLASSIFY + args, capture_output=True, text=True, timeout=60)
    assert result.returncode == EXIT_USAGE and result.stdout == ""
    assert result.stderr.startswith("Usage: edge-classify [OPTIONS] [PATH]...") and result.stderr.strip().endswith(
        message
    )


def test_version_and_edgetl_run_forwarding(capsys: pytest.CaptureFixture) -> None:
    from click.testing import CliRunner
    from edgetl.cli.main import main as edgetl
    from edgetl.runtime import __version__

    result = subprocess.run(EDGE_CLASSIFY + ["--version"], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"edge-classify {__version__}\n", "")
    result = CliRunner().invoke(
        edgetl,
        [
            "run",
            "--model",
            str(MODEL),
            "--image",
            str(GOLDEN / "02_red.png"),
            str(GOLDEN / "03_stripes.png"),
            "--headless",
            "-q",
            "--top-k",
            "1",
        ],
    )
    assert result.exit_code == EXIT_OK, result.output
    assert [json.loads(line)["top_k"][0]["label"] for line in result.stdout.splitlines()] == ["red", "stripes"]


def test_quiet_leaves_stderr_empty_even_the_native_xnnpack_line(clip: Path) -> None:
    """LiteRT's C++ "Created TensorFlow Lite XNNPACK delegate" goes to fd 2: only a real process shows it."""
    shown = subprocess.run(
        EDGE_CLASSIFY + ["--model", str(MODEL), "--video", str(clip), "--headless", "--max-frames", "5"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "EDGETL_NATIVE_LOGS": "1"},
    )
    assert (
        shown.returncode == EXIT_OK and "XNNPACK" in shown.stderr
    )  # the line this test is about exists (hidden by default since #20)
    loud = run("--video", str(clip), "--headless", "--max-frames", "5")
    assert loud.returncode == EXIT_OK and "XNNPACK" not in loud.stderr and "summary" in loud.stderr
    quiet = run("--video", str(clip), "--headless", "--max-frames", "5", "-q")
    assert (quiet.returncode, quiet.stderr) == (EXIT_OK, "") and len(lines(quiet.stdout)) == 5


def test_no_window_falls_back_to_json_lines_with_one_note(capsys: pytest.CaptureFixture) -> None:
    """The test venv has headless OpenCV (as edgetl[edge]): no window, so JSON lines and one note saying why."""
    assert main(["--model", str(MODEL), "--image", str(GOLDEN)]) == EXIT_OK
    captured = capsys.readouterr()
    notes = [line for line in captured.err.splitlines() if "no window" in line]
    assert notes == [
        "[edge-classify] no window: this OpenCV has no GUI (a headless wheel such as opencv-python-headless); "
        "printing JSON lines on stdout instead (--headless does so without this note, --serve PORT shows the frames "
        "in a browser; a window needs OpenCV with a GUI, see docs/raspberry-pi.md)"
    ]
    assert len(lines(captured.out)) == len(list(GOLDEN.glob("*.png")))
    assert main(["--model", str(MODEL), "--image", str(GOLDEN), "-q"]) == EXIT_OK
    assert capsys.readouterr().err == ""


def test_serve_alone_shows_no_window_and_prints_no_lines(capsys: pytest.CaptureFixture) -> None:
    assert main(["--model", str(MODEL), "--image", str(GOLDEN), "--serve", "127.0.0.1:0"]) == EXIT_OK
    captured = capsys.readouterr()
    assert captured.out == "" and "no window" not in captured.err and "preview: http://127.0.0.1:" in captured.err


def test_window_needs_a_gui_opencv_and_a_desktop(monkeypatch: pytest.MonkeyPatch) -> None:
    import cv2
    from edgetl.runtime import overlay

    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GUI:                           GTK3\n")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert overlay.window_unavailable() == "no desktop session ($DISPLAY and $WAYLAND_DISPLAY are unset)"
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    assert overlay.window_unavailable() is None
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: "  GUI:                           NONE\n")
    assert "no GUI" in overlay.window_unavailable()


def _model_copy(tmp_path: Path, data: bytes, card: dict) -> Path:
    model = tmp_path / "model.tflite"
    model.write_bytes(data)
    model.with_suffix(".json").write_text(json.dumps(card))
    return model


def test_unusable_model_or_card_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    card = json.loads((GOLDEN / "golden_int8.json").read_text())
    truncated = MODEL.read_bytes()[:2000]
    model = _model_copy(tmp_path, truncated, {**card, "model_sha256": hashlib.sha256(truncated).hexdigest()})
    code, frames, err = classify(capsys, "--image", str(GOLDEN), model=model)
    assert (code, frames) == (EXIT_MODEL, [])
    assert (
        f"edge-classify: error: {model}: the interpreter cannot load it (The model is not a valid Flatbuffer buffer)"
        in err
    )
    model = _model_copy(tmp_path, MODEL.read_bytes(), {**card, "model_sha256": "0" * 64})
    code, _, err = classify(capsys, "--image", str(GOLDEN), model=model)
    assert code == EXIT_MODEL and f"edge-classify: error: {model} does not match its card (sha256 " in err
    model = _model_copy(tmp_path, MODEL.read_bytes(), {**card, "labels": ["a", "b"]})
    code, _, err = classify(capsys, "--image", str(GOLDEN), model=model)
    assert code == EXIT_MODEL and "the model has 4 outputs, the card lists 2 labels" in err
    model.with_suffix(".json").unlink()
    code, _, err = classify(capsys, "--image", str(GOLDEN), model=model)
    assert code == EXIT_MODEL and f"edge-classify: error: no model card at {model.with_suffix('.json')}" in err
    code, _, err = classify(capsys, "--image", str(GOLDEN), "--card", str(GOLDEN / "golden_int8.json"), model=model)
    assert code == EXIT_OK


def test_no_interpreter_package_exits_3() -> None:
    code = (
        "import sys; sys.modules['ai_edge_litert'] = sys.modules['tflite_runtime'] = None; "
        "from edgetl.runtime.__main__ import main; sys.exit(main(sys.argv[1:]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "--model", str(MODEL), "--image", str(GOLDEN), "--headless"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == EXIT_MODEL and result.stdout == ""
    assert (
        "edge-classify: error: no TFLite interpreter is installed (" in result.stderr
        and "pip install ai-edge-litert" in result.stderr
    )


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            ["--camera", "1234"],
            "edge-classify: error: camera 1234 cannot be opened; check the cable/URL and that no other program holds it",
        ),
        (["--camera", "front"], "edge-classify: error: --camera 'front': give a camera index (0, 1, ...) or 'picam'"),
        (["--video", "/nonexistent/clip.avi"], "edge-classify: error: /nonexistent/clip.avi: no such video file"),
        (
            ["--image", "/nonexistent/a.png"],
            "edge-classify: error: /nonexistent/a.png: no such file or folder; pass image files or a folder of them",
        ),
    ],
)
def test_source_that_cannot_be_opened_exits_4(
    source: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    summary = tmp_path / "summary.json"
    code, frames, err = classify(capsys, *source, "--summary-json", str(summary))
    assert (code, frames) == (EXIT_SOURCE, [])
    assert message in err.splitlines()
    assert "[edge-classify] summary (source failed): 0 frames" in err
    data = json.loads(summary.read_text())
    assert data["exit_code"] == EXIT_SOURCE and data["reason"] == "source failed" and data["frames"] == 0


def test_all_images_unreadable_exits_4_and_lists_them(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "b.jpg").write_text("text")
    code, frames, err = classify(capsys, "--image", str(tmp_path), "--summary-json", str(tmp_path / "s.json"))
    assert (code, frames) == (EXIT_SOURCE, [])
    assert "edge-classify: error: none of the 2 image(s) could be read (listed below)" in err
    assert f"[edge-classify] skipped: {tmp_path / 'a.png'}: not a decodable image" in err
    assert f"[edge-classify] skipped: {tmp_path / 'b.jpg'}: not a decodable image" in err
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["exit_code"] == EXIT_SOURCE and data["reason"] == "no readable image" and data["skipped"] == 2


# --- signals and pipes --------------------------------------------------------------------------


def test_ctrl_c_exits_130_with_the_summary(clip: Path, tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    cmd = EDGE_CLASSIFY + [
        "--model",
        str(MODEL),
        "--video",
        str(clip),
        "--loop",
        "--headless",
        "--summary-json",
        str(summary),
    ]
    process = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # SIGINT may be inherited ignored (background jobs)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(process.stdout), daemon=True)  # a terminal: always read
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while len(out) < 100:  # past the end of the 60-frame clip: it loops
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        err = process.communicate(timeout=30)[1]
    finally:
        process.kill()
    reader.join(timeout=10)
    assert process.returncode == EXIT_INTERRUPTED, err[-2000:]
    assert "Traceback" not in err
    data = json.loads(summary.read_text())
    assert data["exit_code"] == EXIT_INTERRUPTED and data["reason"] == "interrupted" and data["frames"] >= 100
    assert f"[edge-classify] summary (interrupted): {data['frames']} frames, " in err
    frames = [json.loads(line) for line in out]
    assert [f["frame"] for f in frames] == list(range(len(frames))) and data["frames"] - 1 <= len(frames) <= data[
        "frames"
    ]


def test_piping_into_head_exits_0_without_a_traceback(clip: Path) -> None:
    cmd = " ".join(
        EDGE_CLASSIFY + ["--model", str(MODEL), "--video", str(clip), "--loop", "--headless", "--max-frames", "100000"]
    )
    result = subprocess.run(
        ["bash", "-c", f"{cmd} | head -1; exit ${{PIPESTATUS[0]}}"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == EXIT_OK, result.stderr[-2000:]
    assert len(result.stdout.splitlines()) == 1 and json.loads(result.stdout)["frame"] == 0
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    assert "[edge-classify] summary (stdout closed): " in result.stderr


# --- soak (issue #7) ----------------------------------------------------------------------------


def _soak(clip: Path, tmp_path: Path, frames: int) -> dict:
    summary = tmp_path / "soak.json"
    cmd = EDGE_CLASSIFY + [
        "--model",
        str(MODEL),
        "--video",
        str(clip),
        "--loop",
        "--headless",
        "-q",
        "--max-frames",
        str(frames),
        "--summary-json",
        str(summary),
    ]
    result = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=600, cwd=REPO)
    assert result.returncode == EXIT_OK, result.stderr[-2000:]
    data = json.loads(summary.read_text())
    print(
        f"soak {frames} frames: rss first {data['rss_first_mb']}, after warm-up {data['rss_warm_mb']}, last {data['rss_last_mb']} MB, "
        f"{data['fps']} FPS, p95 {data['p95_ms']} ms"
    )
    assert data["frames"] == frames and data["reason"] == "max-frames" and data["dropped"] == 0
    assert data["rss_warm_mb"] < data["rss_first_mb"] * 1.05, data  # the warm-up is small here
    assert data["rss_last_mb"] < data["rss_warm_mb"] * 1.05, data  # and after it, nothing grows
    return data


def test_soak_2000_frames_memory_stays_flat(clip: Path, tmp_path: Path) -> None:
    _soak(clip, tmp_path, 2000)


@pytest.mark.slow
def test_soak_10000_frames_memory_stays_flat(clip: Path, tmp_path: Path) -> None:
    _soak(clip, tmp_path, 10_000)
