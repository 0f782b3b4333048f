"""Quiet for real: third-party noise stays out of edgetl's output on documented paths; -v shows it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

RETRACE = """
from edgetl.model import graph
graph.keras()
import tensorflow as tf
for n in range(8):  # new tf.functions in a loop: TensorFlow warns about retracing
    tf.function(lambda x: x * 2)(tf.zeros([3]))
print("done")
"""


def _run(env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EDGETL_NATIVE_LOGS"} | env_extra
    return subprocess.run([sys.executable, "-c", RETRACE], capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow  # two TensorFlow start-ups (~20 s each under load)
def test_tensorflow_python_warnings_are_hidden_unless_verbose() -> None:
    """bench.py --quick printed tf.function retracing warnings; edgetl's TensorFlow gateway lowers TF's logger."""
    quiet = _run({})
    assert quiet.returncode == 0 and quiet.stdout == "done\n"
    assert quiet.stderr == "", quiet.stderr[-2000:]
    loud = _run({"EDGETL_NATIVE_LOGS": "1"})
    assert "retracing" in loud.stderr


def test_rtsp_that_does_not_open_prints_edge_classifys_line_not_ffmpegs(tmp_path) -> None:
    from pathlib import Path

    model = Path(__file__).parent / "golden" / "golden_int8.tflite"
    cmd = [sys.executable, "-m", "edgetl.runtime", "--model", str(model), "--rtsp", "rtsp://127.0.0.1:9/cam"]
    env = {k: v for k, v in os.environ.items() if k != "EDGETL_NATIVE_LOGS"}
    quiet = subprocess.run(
        [*cmd, "--headless", "--retries", "0", "-q"], capture_output=True, text=True, timeout=120, env=env
    )
    assert quiet.returncode == 4
    assert quiet.stderr.splitlines() == [
        "edge-classify: error: rtsp://127.0.0.1:9/cam cannot be opened; check the cable/URL and that no other program holds it"
    ]
    shown = subprocess.run(
        [*cmd, "--headless", "--retries", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "EDGETL_NATIVE_LOGS": "1"},
    )
    assert "[tcp @ 0x" in shown.stderr  # the line this test is about exists, and -v-style logging shows it
