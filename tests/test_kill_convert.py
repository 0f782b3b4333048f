"""SIGKILL ``edgetl convert`` at random moments: what is left in the run is always usable or absent.

After every kill, each ``model_*.tflite`` in the run loads in ai-edge-litert and
matches the sha256 its card records, no card is left without its model, an int8
card names the calibration manifest beside it, and whatever the dead process left
behind is hidden (never a ``model_*`` name); the next convert sweeps it up.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from edgetl.runtime.model_card import load_card, sha256_file

CONVERT = [sys.executable, "-m", "edgetl", "convert"]
OPTIONS = ["--quant", "fp32,int8", "--calib-size", "8", "--calib-seed", "1", "--no-parity"]
STAGE = re.compile(r"^(\[\d/\d\] .*|\s+calibrating on .*|\s+model_\w+\.tflite: .*)$")


def _assert_consistent(run: Path) -> list[str]:
    """Check the run folder's artifacts; returns the variants present."""
    from ai_edge_litert.interpreter import Interpreter

    present = []
    for model in sorted(run.glob("model_*.tflite")):
        card = load_card(model.with_suffix(".json"))  # a model without its card fails here
        assert card.model_file == model.name and card.model_sha256 == sha256_file(model), model
        interpreter = Interpreter(model_path=str(model))
        interpreter.allocate_tensors()
        assert tuple(interpreter.get_input_details()[0]["shape"]) == (1, card.height, card.width, 3)
        if card.quantization == "int8":
            manifest = json.loads((run / "calibration.json").read_text())
            assert card.extra["calibration"]["sha256"] == manifest["sha256"]
        present.append(card.quantization)
    for card_path in run.glob("model_*.json"):
        if card_path.name != "model_card.json":
            assert card_path.with_suffix(".tflite").is_file(), f"{card_path.name} without its model"
    assert load_card(run / "model_card.json").model_sha256 == sha256_file(run / "model.keras")
    if (run / "calibration.json").exists():
        json.loads((run / "calibration.json").read_text())
    visible = {p.name for p in run.iterdir() if not p.name.startswith(".")}
    expected = {"config.json", "data.json", "model.keras", "model_card.json", "splits", "calibration.json"}
    expected |= {"report.html", "results.csv"}  # the run report convert rewrites at its end (atomic, like the rest)
    assert visible <= expected | {f"model_{v}.{ext}" for v in ("fp32", "int8") for ext in ("tflite", "json")}, visible
    return present


def _last_stage(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if STAGE.match(line)]
    return lines[-1] if lines else "starting (imports)"


@pytest.mark.slow
def test_sigkill_convert_at_random_moments(tiny_run: Path, tmp_path: Path) -> None:
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    rng = random.Random(7)
    # Seeded moments, one in each 1.2 s slice of a ~12-15 s convert (imports, export, fp32, int8), shuffled;
    # when converts run faster than that, more moments within the fastest full convert seen.
    planned = [rng.uniform(0.5 + 1.2 * i, 0.5 + 1.2 * (i + 1)) for i in range(12)]
    rng.shuffle(planned)
    kills: list[tuple[float, str, list[str]]] = []
    completed, fastest = 0, 15.0
    log = tmp_path / "stderr.txt"
    for attempt in range(20):
        if len(kills) >= 10 and attempt >= len(planned):
            break
        moment = planned[attempt] if attempt < len(planned) else rng.uniform(0.5, 0.9 * fastest)
        with open(log, "w") as err:
            process = subprocess.Popen(CONVERT + [str(run)] + OPTIONS, stdout=subprocess.DEVNULL, stderr=err)
            started = time.monotonic()
            try:
                process.wait(timeout=moment)
                assert process.returncode == 0, log.read_text()[-1500:]
                completed, fastest = completed + 1, min(fastest, time.monotonic() - started)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                process.wait()
                kills.append((round(moment, 1), _last_stage(log.read_text()), _assert_consistent(run)))
        _assert_consistent(run)
    for moment, stage, present in kills:
        print(f"killed at {moment:5.1f}s during {stage!r}; consistent, present: {present}")
    print(f"{len(kills)} SIGKILLs, {completed} completed, all consistent")
    assert len(kills) >= 10
    started = time.monotonic()
    final = subprocess.run(CONVERT + [str(run), "--json", "-q"] + OPTIONS, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr[-1500:]
    assert [v["quantization"] for v in json.loads(final.stdout)["variants"]] == ["fp32", "int8"]
    assert sorted(_assert_consistent(run)) == ["fp32", "int8"]
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")], "the clean convert sweeps up what kills left"
    print(f"clean convert after the kills: {time.monotonic() - started:.1f}s")
