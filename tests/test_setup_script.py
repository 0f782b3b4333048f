"""scripts/setup.sh is quiet: pip's, setuptools' and TensorFlow's chatter is kept out of sight unless a step fails.

The venv's tools are stand-ins that write the kind of noise the real ones write (no network, no
minutes of pip): what is tested is the script's own handling of their output and exit codes.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOISE = "echo 'oneDNN custom operations are on' >&2; echo 'BuildBackendWarning: Editable installation.' >&2"

pytestmark = pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="setup.sh would apt-get the dataset (needs sudo)"
)


def _venv(tmp_path: Path, pip_rc: int = 0) -> Path:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    for tool, body in {
        "python": f"{NOISE}; exit 0",
        "pip": f"{NOISE}; echo 'pip: something went wrong' >&2; exit {pip_rc}",
        # edgetl itself hides TensorFlow's lines; -q leaves stderr empty (test_weights checks the real one)
        "edgetl": f'echo "$@" >> "{tmp_path}/edgetl.calls"; exit 0',
    }.items():
        path = venv / "bin" / tool
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    return venv


def _setup(tmp_path: Path, venv: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VENV": str(venv), "EDGETL_CACHE": str(cache), "HOME": str(tmp_path)}
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "setup.sh")], capture_output=True, text=True, timeout=60, env=env
    )


def test_setup_prints_only_its_own_lines(tmp_path: Path) -> None:
    result = _setup(tmp_path, _venv(tmp_path), tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines and all(line.startswith("[setup] ") for line in lines), result.stderr
    assert any("offline ImageNet weights" in line for line in lines)
    assert (tmp_path / "edgetl.calls").read_text() == "weights install -q\n"


def test_setup_skips_installed_weights(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "weights").mkdir(parents=True)
    (cache / "weights" / "edgetl_imagenet_weights.json").write_text("{}")
    result = _setup(tmp_path, _venv(tmp_path), cache)
    assert result.returncode == 0 and not (tmp_path / "edgetl.calls").exists()
    assert "offline ImageNet weights" not in result.stderr


def test_a_failing_pip_shows_its_output_and_stops(tmp_path: Path) -> None:
    result = _setup(tmp_path, _venv(tmp_path, pip_rc=1), tmp_path / "cache")
    assert result.returncode == 1
    assert "pip: something went wrong" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "[setup] pip install -e .[test] failed (pip's output above)"
