"""Keep what the device saw (issue #30): --save, --save-video, --save-uncertain, --collect, --summary-every.

An MJPG video stands in for the camera: its first half is one still scene (near-duplicates),
its second half a bar that moves every frame (each frame new). Time is the video's own
clock (frame / FPS), so every count below follows from the video, not from the machine's
speed. SIGTERM and SIGKILL are sent to a real edge-classify process mid-run.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from edgetl.runtime import keep
from edgetl.runtime.__main__ import main
from edgetl.runtime.session import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"
MODEL = GOLDEN / "golden_int8.tflite"
LABELS = json.loads((GOLDEN / "expected.json").read_text())["labels"]
EDGE_CLASSIFY = [sys.executable, "-m", "edgetl.runtime", "--model", str(MODEL)]
STILL, MOVING, FPS = 30, 30, 30.0


def scene(i: int) -> np.ndarray:
    """Frame ``i``: a still striped scene for i < STILL, then a white bar moving 10 px a frame."""
    frame = np.full((240, 320, 3), 60, np.uint8)
    frame[:, :, 2] = 170  # reddish
    frame[::16] = 230
    if i >= STILL:
        x = 10 * (i - STILL)
        frame[:, x : x + 40] = 250  # a white bar
    return frame


@pytest.fixture(scope="module")
def camera(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("camera") / "camera.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (320, 240))
    for i in range(STILL + MOVING):
        writer.write(scene(i))
    writer.release()
    return path


def classify(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(["--model", str(MODEL), "--headless", *args])
    out, err = capsys.readouterr()
    return code, out, err


def jpegs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.jpg"))


def complete_jpeg(path: Path) -> bool:
    data = path.read_bytes()
    return data[:2] == b"\xff\xd8" and data.rstrip(b"\0")[-2:] == b"\xff\xd9" and cv2.imread(str(path)) is not None


def frame_number(path: Path) -> int:
    return int(re.search(r"-(\d{6})\.jpg$", path.name).group(1))


# --- --collect ----------------------------------------------------------------------------------


def test_collect_skips_near_duplicates_and_writes_into_the_label_folder(
    camera: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code, out, err = classify(
        capsys, "--video", str(camera), "--collect", str(tmp_path / "set"), "--label", "my cup", "--every", "0"
    )
    assert code == EXIT_OK, err
    files = jpegs(tmp_path / "set" / "my cup")
    # the still half gives one frame (the rest are near-duplicates), every moving frame is new
    assert [frame_number(p) for p in files] == [0, *range(STILL, STILL + MOVING)]
    assert all(p.name.startswith("my_cup-") and complete_jpeg(p) for p in files)
    assert (
        f"--collect: {len(files)} frame(s) kept in {tmp_path / 'set' / 'my cup'}, {STILL - 1} near-duplicate(s) skipped"
        in err
    )
    assert len(out.splitlines()) == STILL + MOVING  # classification and its JSON lines go on as before
    capture = cv2.VideoCapture(str(camera))
    capture.set(cv2.CAP_PROP_POS_FRAMES, STILL + MOVING - 1)
    delivered = capture.read()[1]  # what the "camera" gave: the kept file is it, not annotated (JPEG q95 apart)
    assert np.abs(cv2.imread(str(files[-1])).astype(int) - delivered).mean() < 2


def test_collect_every_follows_the_videos_clock(camera: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, err = classify(
        capsys,
        "--video",
        str(camera),
        "--collect",
        str(tmp_path),
        "--label",
        "cup",
        "--every",
        "0.5",
        "--min-change",
        "0",
    )
    assert code == EXIT_OK, err
    assert [frame_number(p) for p in jpegs(tmp_path / "cup")] == [0, 15, 30, 45]  # 2 s of video, one per 0.5 s


def test_min_change_threshold_separates_noise_from_motion() -> None:
    rng = np.random.default_rng(0)
    still = scene(0)
    noisy = np.clip(still + rng.normal(0, 8, still.shape), 0, 255).astype(np.uint8)  # sensor noise, sigma 8
    assert keep.change(keep.thumbnail(still), keep.thumbnail(noisy)) < 1.0 < 3.0  # default --min-change 3
    assert keep.change(keep.thumbnail(scene(STILL)), keep.thumbnail(scene(STILL + 1))) > 3.0


# --- --save-uncertain ---------------------------------------------------------------------------


def test_uncertain_frames_are_named_by_their_top_labels_and_scores(
    camera: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code, out, _ = classify(capsys, "--video", str(camera))
    assert code == EXIT_OK
    lines = {line["frame"]: line["top_k"] for line in map(json.loads, out.splitlines())}
    top1 = sorted({top[0]["score"] for top in lines.values()})
    assert len(top1) > 1, "the video should give the model more than one top-1 score"
    below = (top1[0] + top1[-1]) / 2
    code, _, err = classify(
        capsys, "--video", str(camera), "--save-uncertain", str(tmp_path), "--below", str(below), "--every", "0"
    )
    assert code == EXIT_OK, err
    files = jpegs(tmp_path)
    assert files
    uncertain = {i for i, top in lines.items() if top[0]["score"] < below}
    for path in files:
        i = frame_number(path)
        assert i in uncertain
        top = lines[i]
        want = "_".join(f"{keep.file_label(c['label'])}-{c['score']:.2f}" for c in top[:2])
        assert path.name.startswith(want + "_"), (path.name, top)
        assert complete_jpeg(path)
    # a still stretch of uncertain frames is kept once
    assert len(files) < len(uncertain) or len({frame_number(p) for p in files} & set(range(1, STILL))) == 0


def test_file_labels_are_safe_names() -> None:
    assert keep.file_label("T-shirt/top") == "T_shirt_top"
    assert keep.file_label("../../etc") == ".._.._etc"  # no separator survives, so it stays in the folder
    assert keep.file_label("") == "_"


# --- --save, --save-video -----------------------------------------------------------------------


def test_save_writes_annotated_frames_and_a_video(camera: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    video = tmp_path / "seen.avi"
    code, _, err = classify(
        capsys, "--video", str(camera), "--save", str(tmp_path / "frames"), "--every", "1", "--save-video", str(video)
    )
    assert code == EXIT_OK, err
    files = jpegs(tmp_path / "frames")
    assert [frame_number(p) for p in files] == [0, 30]  # one per second of video
    annotated = cv2.imread(str(files[0]))
    assert np.abs(annotated.astype(int) - scene(0)).max() > 100  # text drawn on it
    capture = cv2.VideoCapture(str(video))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == STILL + MOVING and capture.get(cv2.CAP_PROP_FPS) == FPS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "seen.avi"]  # no temporary file left


# --- --summary-every ----------------------------------------------------------------------------


def test_summary_every_replaces_the_line_per_frame(camera: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = classify(capsys, "--video", str(camera), "--summary-every", "0.5")
    assert code == EXIT_OK, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert 3 <= len(lines) <= 5  # 2 s of video in windows of 0.5 s (frame times)
    assert sum(line["frames"] for line in lines) == STILL + MOVING == lines[-1]["total_frames"]
    for line in lines:
        assert set(line) == {"time", "summary_s", "frames", "total_frames", "fps", "top"}
        counts = [t["frames"] for t in line["top"]]
        assert counts == sorted(counts, reverse=True) and sum(counts) <= line["frames"]
        assert all(t["label"] in LABELS and 0 < t["mean_score"] <= 1 for t in line["top"])


# --- bounded disk -------------------------------------------------------------------------------


def test_max_files_stops_keeping_with_one_message_and_counts_files_already_there(
    camera: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "set" / "cup"
    folder.mkdir(parents=True)
    for i in range(3):
        (folder / f"earlier-{i}.jpg").write_bytes(b"x")
    code, out, err = classify(
        capsys,
        "--video",
        str(camera),
        "--collect",
        str(tmp_path / "set"),
        "--label",
        "cup",
        "--every",
        "0",
        "--min-change",
        "0",
        "--max-files",
        "8",
    )
    assert code == EXIT_OK, err
    assert len(list(folder.iterdir())) == 8  # 3 there before + 5 new
    message = f"--collect: full, keeping no more frames: 8 files in {folder} (--max-files 8); classification goes on"
    assert err.count(message) == 1
    assert len(out.splitlines()) == STILL + MOVING  # every frame still classified


def test_max_mb_caps_a_folder_and_a_video(camera: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, err = classify(
        capsys, "--video", str(camera), "--save", str(tmp_path / "f"), "--every", "0", "--max-mb", "0.05",
        "--save-video", str(tmp_path / "v.avi"),
    )  # fmt: skip
    assert code == EXIT_OK, err
    total = sum(p.stat().st_size for p in (tmp_path / "f").iterdir())
    assert 0 < total <= 0.05 * 2**20 and err.count("--save: full, keeping no more frames:") == 1
    assert re.search(
        r"--save: full, keeping no more frames: [0-9.]+ MiB in \S+, one more would pass --max-mb 0.05;", err
    )
    assert re.search(
        r"--save-video: full, \S+v.avi ends at frame \d+: [0-9.]+ MiB written, one more would pass --max-mb 0.05;", err
    )
    assert 0 < int(cv2.VideoCapture(str(tmp_path / "v.avi")).get(cv2.CAP_PROP_FRAME_COUNT)) < STILL + MOVING


def test_free_space_floor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    budget = keep.DiskBudget(tmp_path, max_files=10, max_mb=10)
    assert budget.refusal(1000) is None
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(keep.shutil, "disk_usage", lambda p: usage._replace(free=(keep.MIN_FREE_MB + 1) * 2**20))
    assert (
        budget.refusal(2 * 2**20)
        == f"{keep.MIN_FREE_MB + 1} MiB free on the disk of {tmp_path} (edge-classify leaves {keep.MIN_FREE_MB} MiB)"
    )


# --- usage --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--collect", "d"], "--collect DIR and --label NAME go together (frames go into DIR/NAME/)"),
        (["--label", "cup"], "--collect DIR and --label NAME go together (frames go into DIR/NAME/)"),
        (["--collect", "d", "--label", "../x"], "--label '../x': use letters, digits, space, _ . + - (a folder name)"),
        (["--save-video", "x.mkv"], "--save-video x.mkv: end the name with .avi (MJPG) or .mp4 (mp4v)"),
    ],
)
def test_keep_usage_errors_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    code = main(["--model", str(MODEL), "--image", str(GOLDEN), "--headless", *args])
    assert code == EXIT_USAGE and capsys.readouterr().err.strip().endswith(message)


# --- signals: a real process --------------------------------------------------------------------


def _start(camera: Path, tmp_path: Path) -> subprocess.Popen:
    args = ["--video", str(camera), "--loop", "--headless", "-q", "--every", "0", "--min-change", "0"]
    args += ["--save", str(tmp_path / "saved"), "--collect", str(tmp_path / "set"), "--label", "cup"]
    args += ["--save-video", str(tmp_path / "seen.avi"), "--summary-json", str(tmp_path / "summary.json")]
    return subprocess.Popen(
        EDGE_CLASSIFY + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO
    )


def _wait_for_files(process: subprocess.Popen, folder: Path, count: int) -> None:
    deadline = time.monotonic() + 60
    while len(jpegs(folder)) < count:
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()[-2000:]
        time.sleep(0.02)


def test_sigterm_mid_run_leaves_only_whole_files(camera: Path, tmp_path: Path) -> None:
    process = _start(camera, tmp_path)
    try:
        _wait_for_files(process, tmp_path / "saved", 40)
        process.send_signal(signal.SIGTERM)
        err = process.communicate(timeout=30)[1]
    finally:
        process.kill()
    assert process.returncode == EXIT_INTERRUPTED, err[-2000:]
    assert "Traceback" not in err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["reason"] == "terminated" and set(summary["kept"]) == {"save", "save_video", "collect"}
    assert summary["kept"]["save"]["kept"] == len(jpegs(tmp_path / "saved")) and summary["kept"]["save"]["full"] is None
    hidden = list(tmp_path.rglob(".*"))
    assert hidden == []  # no temporary file left behind
    for folder in (tmp_path / "saved", tmp_path / "set" / "cup"):  # --collect writes after --save: one fewer
        assert len(jpegs(folder)) >= 39 and all(complete_jpeg(p) for p in jpegs(folder))
    frames = int(cv2.VideoCapture(str(tmp_path / "seen.avi")).get(cv2.CAP_PROP_FRAME_COUNT))
    assert frames >= 39  # the video was closed and given its name


def test_sigkill_mid_run_leaves_whole_files_and_the_next_run_sweeps_the_rest(camera: Path, tmp_path: Path) -> None:
    process = _start(camera, tmp_path)
    try:
        _wait_for_files(process, tmp_path / "saved", 20)
        process.kill()
        process.communicate(timeout=30)
    finally:
        process.kill()
    for folder in (tmp_path / "saved", tmp_path / "set" / "cup"):
        assert all(complete_jpeg(p) for p in jpegs(folder))  # a named file is always whole
    assert not (tmp_path / "seen.avi").exists()  # the unfinished video never got its name
    (tmp_path / "saved" / ".0001.jpg.abc.tmp").write_bytes(b"half")  # as a kill during a write leaves it
    result = subprocess.run(
        EDGE_CLASSIFY + ["--image", str(GOLDEN / "02_red.png"), "--headless", "--save", str(tmp_path / "saved"), "--save-video", str(tmp_path / "seen.avi")],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == EXIT_OK, result.stderr
    assert re.search(r"--save: removed [12] temporary file\(s\) an interrupted run left in", result.stderr), (
        result.stderr
    )
    assert [p for p in tmp_path.rglob(".*") if p.parent != tmp_path / "set" / "cup"] == []  # swept where it wrote
    assert all(re.fullmatch(r"\..+\.jpg\.\w+\.tmp", p.name) for p in (tmp_path / "set" / "cup").glob(".*"))


# --- docs/raspberry-pi.md's benchmark and keep lines, run ---------------------------------------


def _doc_lines() -> list[str]:
    """Every distinct ``edge-classify benchmark``/``--save``/``--collect`` line of the page's bash blocks."""
    doc = (REPO / "docs" / "raspberry-pi.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", doc, re.S)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    ours = [line for line in lines if re.match(r"edge-classify (benchmark|.*--collect|.*--save)", line)]
    return list(dict.fromkeys(ours))  # the overview block repeats three of the sections' lines


@pytest.mark.slow  # ~30 s: the benchmark lines run as written (default runs and seconds)
def test_every_documented_line_runs_with_a_video_for_the_camera(camera: Path, tmp_path: Path) -> None:
    """The lines as written, in a folder holding their files; ``--camera picam`` becomes the video (no camera here)."""
    for name in ("model_int8", "model_fp32"):
        shutil.copy(MODEL, tmp_path / f"{name}.tflite")
        shutil.copy(GOLDEN / "golden_int8.json", tmp_path / f"{name}.json")
    cv2.imwrite(str(tmp_path / "photo.jpg"), cv2.imread(str(GOLDEN / "02_red.png")))
    lines = _doc_lines()
    assert len(lines) == 6, lines  # 2 benchmark + 4 keep lines (the overview block repeats 3 of them)
    for line in lines:
        argv = line.replace("--camera picam", f"--video {camera}").split()
        out = subprocess.DEVNULL
        if ">" in argv:
            out = open(tmp_path / argv[argv.index(">") + 1], "w")
            argv = argv[: argv.index(">")]
        assert argv[0] == "edge-classify"
        result = subprocess.run(
            [sys.executable, "-m", "edgetl.runtime", *argv[1:]],
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )
        assert result.returncode == EXIT_OK, (line, result.stderr[-2000:])
    assert json.loads((tmp_path / "benchmark.json").read_text())["rows"][0]["model"] == "model_int8.tflite"
    assert jpegs(tmp_path / "dataset" / "mug") and jpegs(tmp_path / "seen") and (tmp_path / "seen.avi").is_file()
