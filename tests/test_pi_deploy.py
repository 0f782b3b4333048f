"""The Raspberry Pi guide's pieces that x86 can check: the systemd unit, the guide's blocks, the extra.

The guide itself is run line by line in an emulated bookworm arm64 rootfs by
scripts/arm64_check.sh (root, minutes; CI). Here: the unit file shipped in deploy/pi/ names the
guide's venv and model, its options are ones edge-classify accepts (it runs them against the
golden model and gets the camera's exit code, not a usage error), its exit-code policy matches
edge-classify's codes, and systemd-analyze finds nothing wrong with it.
"""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from edgetl.runtime.session import EXIT_INTERRUPTED, EXIT_MODEL, EXIT_SOURCE, EXIT_USAGE

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "deploy" / "pi" / "edge-classify@.service"
GUIDE = (REPO / "docs" / "raspberry-pi.md").read_text()  # the Pi guide (moved from the README)
GOLDEN = REPO / "tests" / "golden"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def _guide_block(marker: str) -> list[str]:
    """The shell lines of the fenced block after ``<!-- pi-guide:MARKER -->`` (what arm64_check.sh runs)."""
    match = re.search(rf"<!-- pi-guide:{marker} -->\n```bash\n(.*?)\n```", GUIDE, re.S)
    assert match, f"docs/raspberry-pi.md has no pi-guide:{marker} block"
    return [line for line in match.group(1).splitlines() if line.strip()]


def _exec_start() -> list[str]:
    return shlex.split(_unit()["Service"]["ExecStart"])


def test_unit_runs_the_guides_venv_and_model_as_the_instance_user():
    service = _unit()["Service"]
    argv = _exec_start()
    on_the_pi = "\n".join(_guide_block("on-the-pi"))
    assert "python3 -m venv --system-site-packages ~/edgetl" in on_the_pi
    assert "mv model_int8.tflite model_int8.json ~/models/" in on_the_pi
    assert service["User"] == "%i"
    assert service["WorkingDirectory"] == "/home/%i"
    assert argv[0] == "/home/%i/edgetl/bin/edge-classify"
    assert argv[argv.index("--model") + 1] == "/home/%i/models/model_int8.tflite"
    assert "--headless" in argv  # no display on a service
    assert argv[argv.index("--summary-every") + 1] == "10"  # a journal line per 10 s, not per frame (issue #30)
    assert _unit()["Install"]["WantedBy"] == "multi-user.target"


def test_unit_restarts_only_what_a_restart_can_fix():
    service = _unit()["Service"]
    assert service["Restart"] == "on-failure"  # covers exit 4: camera failed or lost after --retries
    prevented = {int(code) for code in service["RestartPreventExitStatus"].split()}
    assert prevented == {EXIT_USAGE, EXIT_MODEL}
    assert EXIT_SOURCE not in prevented
    assert service["KillSignal"] == "SIGINT"  # closing summary into the journal
    assert int(service["SuccessExitStatus"]) == EXIT_INTERRUPTED


def test_unit_options_are_accepted_by_edge_classify(tmp_path):
    """ExecStart's own options, with the golden model in the guide's place: no Picamera2 on x86 gives
    the source error (exit 4) after the options parsed and the model loaded, never a usage error."""
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(GOLDEN / "golden_int8.tflite", models / "model_int8.tflite")
    shutil.copy(GOLDEN / "golden_int8.json", models / "model_int8.json")
    argv = [arg.replace("/home/%i", str(tmp_path)) for arg in _exec_start()[1:]]
    result = subprocess.run(
        [sys.executable, "-m", "edgetl.runtime", *argv, "--retries", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == EXIT_SOURCE, result.stderr
    assert "picamera2" in result.stderr
    assert "Traceback" not in result.stderr


def test_systemd_analyze_verifies_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt install systemd)")
    venv_bin = tmp_path / "home" / "pi" / "edgetl" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "edge-classify").write_text("#!/bin/sh\n")
    (venv_bin / "edge-classify").chmod(0o755)
    instance = tmp_path / "edge-classify@pi.service"  # the instance the guide enables, its /home moved into tmp
    instance.write_text(UNIT.read_text().replace("/home/", f"{tmp_path}/home/"))
    result = subprocess.run([analyze, "verify", str(instance)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""


def test_guide_install_line_matches_the_package():
    """The wheel the guide copies and installs is the one `pip wheel .` builds, with an extra that exists."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wheel = f"edgetl-{project['version']}-py3-none-any.whl"
    training, on_the_pi = _guide_block("training-machine"), _guide_block("on-the-pi")
    assert training[0] == "pip wheel . --no-deps -w dist/"
    assert f"dist/{wheel}" in training[1] and "deploy/pi/edge-classify@.service" in training[1]
    assert f'~/edgetl/bin/pip install "{wheel}[edge-bookworm]"' in on_the_pi
    bookworm = project["optional-dependencies"]["edge-bookworm"]
    assert "numpy>=1.23.5,<2" in bookworm  # apt's 1.24 satisfies it: pip installs no numpy
    assert "opencv-python-headless>=4.8,<4.12" in bookworm  # 4.12+ require numpy>=2
    at_boot = _guide_block("at-boot")
    assert at_boot[0] == "sudo cp edge-classify@.service /etc/systemd/system/"
    assert "sudo systemctl enable --now edge-classify@$USER" in at_boot


def test_edge_bookworm_is_edge_with_numpy_1():
    """Everything [edge] installs, [edge-bookworm] installs too (a dependency added to one is added to both)."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].lower() for req in requirements}

    assert names(extras["edge"]) == names(extras["edge-bookworm"])
