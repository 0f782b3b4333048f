"""MediaPipe Tasks names every class of a converted int8 and fp32 model from the embedded metadata alone.

Runs scripts/check_mediapipe.sh on a real conversion, with the Python of a venv
that has only ``mediapipe`` (``MP_VENV``, default ``$TMPDIR/edgetl-mediapipe``, which
the script creates). Skipped when that venv does not exist: installing MediaPipe is
not a test's job.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from edgetl.runtime.model_card import load_card

REPO = Path(__file__).resolve().parents[1]
MP_VENV = Path(os.environ.get("MP_VENV") or Path(tempfile.gettempdir()) / "edgetl-mediapipe")


def _mediapipe_python() -> Path:
    python = MP_VENV / "bin" / "python"
    if not python.is_file() or subprocess.run([str(python), "-c", "import mediapipe"], capture_output=True).returncode:
        pytest.skip(
            f"no mediapipe venv at {MP_VENV} (bash scripts/check_mediapipe.sh creates one; MP_VENV names another)"
        )
    return python


@pytest.mark.slow
def test_mediapipe_reads_the_labels_of_int8_and_fp32(tiny_run: Path, tmp_path: Path) -> None:
    _mediapipe_python()
    from edgetl.config import ConvertConfig, Quantization
    from edgetl.convert.stage import convert

    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    labels = load_card(run / "model_card.json").labels
    (run / "labels.txt").write_text("\n".join(labels) + "\n")  # as edgetl train writes it
    convert(ConvertConfig(run=str(run), quantizations=(Quantization.FP32, Quantization.INT8), calib_size=16))
    env = {**os.environ, "MP_VENV": str(MP_VENV), "VENV": str(Path(sys.executable).parents[1])}
    result = subprocess.run(
        ["bash", "scripts/check_mediapipe.sh", str(run)], capture_output=True, text=True, timeout=300, cwd=REPO, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert [r["model"] for r in report["results"]] == ["model_int8.tflite", "model_fp32.tflite"]
    for answer in report["results"]:
        assert answer["category_names"] == list(labels) and answer["indices"] == list(range(len(labels)))
