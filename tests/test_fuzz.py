"""Fuzzing (#28): mutated models, metadata, label zips and cards through edge-classify never crash, hang or trace back.

Seeded and bounded: ``tests/fuzz_models.py`` draws ``COUNT`` cases from
``random.Random(SEED)`` (the same seed replays the same cases) and stops early at
``SECONDS``; it runs in a child process with a deadline, so a signal exit (LiteRT's
segfault) or a hang fails this test with the case that caused it. Slow lane.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parent / "fuzz_models.py"
SEED, COUNT, SECONDS = 28, 400, 240.0


@pytest.mark.slow
def test_mutated_models_and_cards_meet_the_device_contract(tmp_path: Path) -> None:
    env = {**os.environ, "EDGETL_PROBE_TIMEOUT": "5"}  # a model that loops is stopped by the probe in 5 s
    try:
        proc = subprocess.run(
            [sys.executable, str(HARNESS), str(SEED), str(COUNT), str(SECONDS), str(tmp_path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=SECONDS + 120,  # one case past the budget, plus start-up: anything longer is a hang
        )
    except subprocess.TimeoutExpired as exc:
        last = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        pytest.fail(f"the fuzz run hung; last case: {last.strip().splitlines()[-1:]}")
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 0, (
        f"exit {proc.returncode} (a signal when negative) at {lines[-1:]}: {proc.stderr[-2000:]}"
    )
    results = [r for r in lines if "code" in r]
    problems = [r for r in results if r["problem"]]
    assert not problems, problems[:5]
    assert len(results) >= 100  # the time budget still covered a fair sample
    kinds = collections.Counter(r["kind"] for r in results)
    assert len(kinds) == 5 and min(kinds.values()) >= 10, kinds
    codes = collections.Counter(r["code"] for r in results)
    assert set(codes) <= {0, 3}, codes  # a mutated model either still classifies or is refused in one line
