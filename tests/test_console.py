"""The console contract: native TensorFlow/LiteRT log lines hidden unless -v, -q leaves stderr empty,
stage numbers without gaps, one line for a missing extra."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from edgetl.cli.main import main
from edgetl.runtime import native_log

EDGETL = [sys.executable, "-m", "edgetl"]
# What TensorFlow and LiteRT print natively on this CPU-only machine (issue #20).
NATIVE = re.compile(
    r"oneDNN custom operations|Could not find cuda drivers|cuInit|absl::InitializeLog|XNNPACK delegate|^[IWEF]\d{4} ",
    re.M,
)
TINY = ["--alpha", "0.35", "--image-size", "96", "--weights", "none", "--seed", "1"]


def _edgetl(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # what a user's shell has
    return subprocess.run([*EDGETL, *args], capture_output=True, text=True, timeout=900, env=env)


def test_native_lines_are_recognised() -> None:
    text = (
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        "I0000 00:00:1796398594.010108   25079 port.cc:153] oneDNN custom operations are on.\n"
        "E0000 00:00:1796398617.691370   25079 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\n"
        "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
        "Error: a real message stays\n"
    )
    assert native_log.drop_native_lines(text) == "Error: a real message stays\n"


def test_hide_native_logs_keeps_other_lines(capfd: pytest.CaptureFixture[str]) -> None:
    with native_log.hide_native_logs():
        os.write(2, b"I0000 00:00:17.5   1 port.cc:153] oneDNN custom operations are on.\nkept line\n")
    assert capfd.readouterr().err == "kept line\n"
    with pytest.raises(RuntimeError), native_log.hide_native_logs():  # a failure replays everything
        os.write(2, b"E0000 00:00:17.5   1 x.cc:1] why it failed\n")
        raise RuntimeError
    assert "why it failed" in capfd.readouterr().err


def test_missing_train_extra_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An [edge]-only install: find_spec cannot find tensorflow (simulated; scripts/ci_edge_only.sh runs it for real)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorflow" else real(name, *a))
    for args in (
        ["train", str(tmp_path), "-o", str(tmp_path / "r")],
        ["qat", str(tmp_path)],
        ["convert", str(tmp_path)],
        ["parity", str(tmp_path)],
        ["weights", "install"],
    ):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 3, (args, result.output)
        assert result.output.strip().splitlines() == [
            "Error: tensorflow is not installed: this command needs edgetl's train extra (TensorFlow); "
            'install it with: pip install "edgetl[train]"  (in a checkout: pip install ".[train]")'
        ]


@pytest.mark.slow
def test_quiet_commands_leave_stderr_empty(fm_folder: Path, tmp_path: Path) -> None:
    """train, qat, convert and parity with -q --json: results on stdout, nothing at all on stderr."""
    run = tmp_path / "run"
    train = _edgetl(
        "train", str(fm_folder), "-o", str(run), *TINY, "--epochs", "3", "--fine-tune-epochs", "1", "-q", "--json"
    )
    assert train.returncode == 0 and train.stderr == "", train.stderr
    assert json.loads(train.stdout)["run"] == str(run)
    qat = _edgetl("qat", str(run), "--epochs", "1", "-q", "--json")
    assert qat.returncode == 0 and qat.stderr == "", qat.stderr
    convert = _edgetl(
        "convert",
        str(run),
        "--quant",
        "fp32,int8",
        "--rounding",
        "nearest",
        "--calib-size",
        "50",
        "--no-parity",
        "-q",
        "--json",
    )
    assert convert.returncode == 0 and convert.stderr == "", convert.stderr
    parity = _edgetl("parity", str(run), "--models", "model_fp32.tflite", "-q", "--json")
    assert parity.returncode == 0 and parity.stderr == "", parity.stderr
    assert json.loads(parity.stdout)

    loud = _edgetl("parity", str(run), "--models", "model_fp32.tflite", "-v")
    assert loud.returncode == 0
    assert NATIVE.search(loud.stderr) and "XNNPACK delegate" in loud.stderr, loud.stderr[-2000:]
    plain = _edgetl("parity", str(run), "--models", "model_fp32.tflite")
    assert plain.returncode == 0 and "[1/3]" in plain.stderr
    assert not NATIVE.search(plain.stderr), plain.stderr


@pytest.mark.slow
def test_stage_numbers_have_no_gap(fm_folder: Path, tmp_path: Path) -> None:
    result = _edgetl(
        "train", str(fm_folder), "-o", str(tmp_path / "run"), *TINY, "--epochs", "1", "--fine-tune-epochs", "0"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    stages = re.findall(r"^\[(\d)/(\d)\]", result.stderr, re.M)
    assert stages == [(str(i), "5") for i in range(1, 6)], result.stderr
    assert not NATIVE.search(result.stderr), result.stderr


def test_a_stage_run_by_another_continues_its_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    """`edgetl convert` then its parity gate: [1/2] [2/2] [3/4] [4/4], not [1/2] again."""
    import logging

    from edgetl import log

    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    monkeypatch.setattr(log, "QUIET", False)  # an earlier -q in this process leaves it set
    log.LOGGER.addHandler(handler)
    monkeypatch.setattr(log.LOGGER, "level", logging.INFO)
    log.stage(1, 2, "export")
    log.stage(2, 2, "convert int8")
    with log.continued_stages():
        log.stage(1, 2, "float model")
        log.stage(2, 2, "writing parity.json")
    log.stage(1, 1, "next command")
    log.LOGGER.removeHandler(handler)
    assert [r.split("]")[0] for r in records] == ["[1/2", "[2/2", "[3/4", "[4/4", "[1/1"]
