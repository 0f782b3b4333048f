"""The arm64 (Raspberry Pi) check under qemu: scripts/arm64_check.sh and its comparisons.

Skipped unless EDGETL_ARM64=1: the end-to-end run needs root, builds a Debian arm64 rootfs
(cached under ARM64_ROOT) and takes minutes. CI runs the script directly (.ci/run).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(os.environ.get("EDGETL_ARM64") != "1", reason="set EDGETL_ARM64=1 (root, minutes)")

REPO = Path(__file__).resolve().parents[1]


def _compare_module():
    spec = importlib.util.spec_from_file_location("arm64_compare", REPO / "scripts" / "arm64_compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _frame(i: int, label: str, score: float) -> dict:
    return {
        "frame": i,
        "source": f"/x/img{i}.png",
        "top_k": [{"index": 0, "label": label, "score": score}],
        "preprocess_ms": 1.0,
        "invoke_ms": 2.0,
        "total_ms": 3.0,
    }


def test_frames_agree_within_tolerance(capsys):
    cmp = _compare_module()
    problems = cmp.compare_frames("images", [_frame(0, "cat", 0.90)], [_frame(0, "cat", 0.91)], tol=0.02)
    assert problems == []
    out = capsys.readouterr().out
    assert "top-1 equal 1/1, max score diff 0.0100" in out
    assert "(emulated, not a Pi figure)" in out


@pytest.mark.parametrize(
    ("arm", "message"),
    [
        ([_frame(0, "dog", 0.90)], "top-1 x86 cat 0.9000 vs arm64 dog 0.9000"),
        ([_frame(0, "cat", 0.80)], "score of cat x86 0.9000 vs arm64 0.8000 (diff 0.1000 > 0.02)"),
        ([], "frame count x86 1 vs arm64 0"),
    ],
)
def test_frames_disagreement_is_reported(arm, message):
    problems = _compare_module().compare_frames("images", [_frame(0, "cat", 0.90)], arm, tol=0.02)
    assert any(message in p for p in problems), problems


def test_same_tensor_outputs_must_be_equal():
    cmp = _compare_module()
    x86 = np.array([[10, 200, 3]], dtype=np.uint8)
    assert cmp.compare_outputs(x86, x86.copy()) == []
    off_by_one = x86.copy()
    off_by_one[0, 1] = 201
    assert cmp.compare_outputs(x86, off_by_one) == [
        "same tensor: 1/1 inputs give different outputs on arm64 (max diff 1 uint8 levels)"
    ]


@pytest.mark.slow
def test_arm64_check_passes():
    if os.geteuid() != 0:
        pytest.skip("scripts/arm64_check.sh needs root")
    env = dict(os.environ, X86_PYTHON=os.environ.get("X86_PYTHON", sys.executable))
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "arm64_check.sh")], env=env, capture_output=True, text=True, timeout=1800
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "RESULT: PASS" in result.stdout
    assert "tensorflow not importable" in result.stdout
