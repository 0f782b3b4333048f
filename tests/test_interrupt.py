"""Interrupted training: Ctrl-C saves and exits cleanly, SIGKILL loses at most an epoch, --resume continues."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from edgetl.runtime.model_card import load_card, sha256_file

EDGETL = [sys.executable, "-m", "edgetl"]


def _cmd(fm_folder: Path, run: Path, epochs: int) -> list[str]:
    return EDGETL + [
        "train",
        str(fm_folder),
        "-o",
        str(run),
        "--weights",
        "none",
        "--alpha",
        "0.35",
        "--image-size",
        "32",
        "--epochs",
        str(epochs),
        "--fine-tune-epochs",
        "0",
        "--patience",
        str(epochs),
        "--cache-views",
        "0",
        "--max-per-class",
        "8",
        "-q",
    ]


def _state(run: Path) -> dict:
    path = run.parent / f".{run.name}.partial" / "checkpoint" / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _assert_consistent(run: Path) -> None:
    """A run folder either does not exist or is complete and matches its card."""
    if run.exists():
        card = load_card(run / "model_card.json")
        assert card.model_sha256 == sha256_file(run / "model.keras")
        for name in ("metrics.json", "history.json", "config.json", "data.json"):
            json.loads((run / name).read_text())
    state = _state(run)
    for phase in state.values():
        assert phase["epoch"] == len(phase["history"]["loss"])


@pytest.mark.slow
def test_ctrl_c_saves_and_resume_continues(tmp_path: Path, fm_folder: Path) -> None:
    run = tmp_path / "run"
    # A shell's background jobs (nohup ... &, some CI runners) inherit SIGINT ignored, and Python
    # then never raises KeyboardInterrupt: give the child the default disposition, as a terminal does.
    process = subprocess.Popen(
        _cmd(fm_folder, run, 12),
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 240
    while _state(run).get("head", {}).get("epoch", 0) < 2:
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-1500:]
    assert f"continue with `edgetl train --resume {run}`" in stderr
    done = _state(run)["head"]["epoch"]
    assert 2 <= done < 12 and not run.exists()
    resumed = subprocess.run(
        EDGETL + ["train", "--resume", str(run), "--json"], capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-1500:]
    assert f"resuming head after epoch {done}" in resumed.stderr
    history = json.loads((run / "history.json").read_text())
    assert len(history[0]["loss"]) == 12
    _assert_consistent(run)
    again = subprocess.run(EDGETL + ["train", "--resume", str(run)], capture_output=True, text=True, timeout=120)
    assert again.returncode == 3 and "nothing to resume" in again.stderr


@pytest.mark.slow
def test_sigkill_at_random_moments_never_leaves_a_wrong_artifact(tmp_path: Path, fm_folder: Path) -> None:
    rng = random.Random(0)
    run = tmp_path / "run"
    started = time.monotonic()  # one uninterrupted run sets the kill window, so kills land inside a run on any machine
    subprocess.run(
        _cmd(fm_folder, run, 3), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=300
    )
    window = time.monotonic() - started
    _assert_consistent(run)
    subprocess.run(["rm", "-rf", str(run)], check=True)
    kills = completed = 0
    for _attempt in range(12):
        resume = (run.parent / f".{run.name}.partial" / "config.json").exists()
        cmd = EDGETL + ["train", "--resume", str(run), "-q"] if resume else _cmd(fm_folder, run, 3)
        process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            process.wait(timeout=rng.uniform(1.5, 0.9 * window))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            kills += 1
        _assert_consistent(run)
        if run.exists():
            completed += 1
            subprocess.run(["rm", "-rf", str(run)], check=True)
    print(f"{kills} SIGKILLs, {completed} completed runs, all consistent")
    assert kills >= 8
    if not run.exists():
        final = subprocess.run(
            EDGETL + ["train", "--resume", str(run), "-q"], capture_output=True, text=True, timeout=300
        )
        assert final.returncode == 0, final.stderr[-1500:]
    _assert_consistent(run)
    assert len(json.loads((run / "history.json").read_text())[0]["loss"]) == 3


@pytest.mark.slow
def test_sigterm_stops_like_ctrl_c_and_leaves_no_stray_partial_folder(tmp_path: Path, fm_folder: Path) -> None:
    """SIGTERM (systemd, a CI timeout) used to kill the process where it stood, leaving a hidden .RUN.partial and
    no word about it: now it is Ctrl-C's path, exit 130, the folder removed or named with how to resume."""
    run = tmp_path / "run"
    partial = run.parent / f".{run.name}.partial"
    process = subprocess.Popen(_cmd(fm_folder, run, 12), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not partial.exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-1500:]
    if partial.exists():  # an epoch was saved before the signal: kept, and the warning names it
        assert f"saved in {partial}: continue with `edgetl train --resume {run}`, or delete that folder" in stderr
    else:
        assert "interrupted before the first epoch was saved; nothing kept" in stderr
    assert not run.exists()
