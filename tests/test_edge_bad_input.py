"""Device-side bad input (#18 items 8, 10): ``edge-classify`` trusts neither the card nor the model.

Every case runs the real console entry point and asserts a documented exit code
(docs/errors.md: 2 usage, 3 model/card, 4 source, 5 output), one ``edge-classify: error:``
line and no traceback. The odd-signature models are real TFLite files converted
here from tiny tf.functions.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from edgetl.runtime.__main__ import main
from edgetl.runtime.model_card import sha256_file
from edgetl.runtime.session import EXIT_IO, EXIT_MODEL, EXIT_USAGE

GOLDEN = Path(__file__).resolve().parent / "golden"
EDGE_EXIT_CODES = {0, 2, 3, 4, 5, 130}


def _fails(capsys: pytest.CaptureFixture, args: list[str], code: int) -> str:
    assert code in EDGE_EXIT_CODES
    got = main(args)
    out, err = capsys.readouterr()
    assert got == code, err
    assert "Traceback" not in err and out == ""
    errors = [line for line in err.splitlines() if line.startswith(("edge-classify: error:", "Error:"))]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture
def golden(tmp_path: Path) -> Path:
    for name in ("golden_int8.tflite", "golden_int8.json"):
        shutil.copy(GOLDEN / name, tmp_path / name)
    return tmp_path / "golden_int8.tflite"


def _edit_card(model: Path, edit: Any) -> None:
    card_path = model.with_suffix(".json")
    card = json.loads(card_path.read_text())
    edit(card)
    card_path.write_text(json.dumps(card))


@pytest.mark.parametrize(
    "edit, problem",
    [
        (
            lambda c: c.update(normalization="[-1, 1]"),
            "model card field 'normalization' must be a JSON object, got str",
        ),
        (lambda c: c.update(input=[1, 2]), "model card field 'input' must be a JSON object, got list"),
        (lambda c: c.update(labels="abcd"), "model card field 'labels' must be a JSON list, got str"),
        (
            lambda c: c.update(interpolation="bogus"),
            "interpolation 'bogus' is not one of area, linear, nearest, cubic, lanczos4",
        ),
        (lambda c: c["normalization"].update(mean=[]), "normalization needs 3 means and 3 stds, got 0 and 3"),
        (lambda c: c["normalization"].update(std=[0, 0, 0]), "must be finite with no zero std"),
        (lambda c: c.update(height=0), "input size 32x0 is not within 1..8192"),
        (lambda c: c["input"].update(dtype="int64"), "the input tensor is int64; edge_runtime feeds"),
        (lambda c: c.update(color_order="GBR"), "color_order 'GBR' is not RGB or BGR"),
    ],
    ids=[
        "norm-string",
        "input-list",
        "labels-string",
        "interpolation",
        "empty-mean",
        "std-zero",
        "height-0",
        "dtype",
        "colour",
    ],
)
def test_malformed_card_fields_exit_3(capsys: pytest.CaptureFixture, golden: Path, edit: Any, problem: str) -> None:
    _edit_card(golden, edit)
    line = _fails(capsys, ["--model", str(golden), "--image", str(GOLDEN / "00_blue.png"), "--headless"], EXIT_MODEL)
    assert problem in line and line.endswith(
        "regenerate the card with edgetl" if "field" in problem else "regenerate it with edgetl"
    )


def test_absurd_thread_count_is_a_usage_error(capsys: pytest.CaptureFixture, golden: Path) -> None:
    line = _fails(
        capsys,
        ["--model", str(golden), "--image", str(GOLDEN / "00_blue.png"), "--headless", "--threads", "100000"],
        EXIT_USAGE,
    )
    assert "100000 is not in the range 1<=x<=64" in line


def test_summary_json_that_is_a_directory_exits_5(capsys: pytest.CaptureFixture, golden: Path, tmp_path: Path) -> None:
    (tmp_path / "summary").mkdir()
    args = [
        "--model",
        str(golden),
        "--image",
        str(GOLDEN / "00_blue.png"),
        "--headless",
        "--summary-json",
        str(tmp_path / "summary"),
    ]
    code = main(args)
    out, err = capsys.readouterr()
    assert code == EXIT_IO and "Traceback" not in err
    assert (
        err.strip().splitlines()[-1]
        == f"edge-classify: error: {tmp_path / 'summary'}: Is a directory; pass a writable file path"
    )
    assert list((tmp_path / "summary").iterdir()) == [] and not list(tmp_path.glob(".summary*"))


def _odd_model(tmp_path: Path, kind: str) -> Path:
    """A real .tflite with one odd signature and a card that otherwise matches it."""
    import tensorflow as tf

    batch = 2 if kind == "batch-2" else 1
    spec = tf.TensorSpec((batch, 32, 32, 3), tf.float32)

    @tf.function(input_signature=[spec])
    def model(x: Any) -> Any:
        pooled = tf.reduce_mean(x, axis=[1, 2])  # (batch, 3)
        scores = tf.concat([pooled, pooled[:, :1]], axis=1)  # (batch, 4)
        if kind == "two-outputs":
            return {"a": scores, "b": scores * 2}
        if kind == "rank-3":
            return tf.reshape(scores, (batch, 2, 2))
        return scores

    converter = tf.lite.TFLiteConverter.from_concrete_functions([model.get_concrete_function()], model)
    path = tmp_path / f"{kind}.tflite"
    path.write_bytes(converter.convert())
    card = json.loads((GOLDEN / "golden_int8.json").read_text())
    card.update(
        model_file=path.name,
        model_sha256=sha256_file(path),
        quantization="fp32",
        input={"dtype": "float32", "scale": 0.0, "zero_point": 0},
        output={"dtype": "float32", "scale": 0.0, "zero_point": 0},
    )
    path.with_suffix(".json").write_text(json.dumps(card))
    return path


@pytest.mark.parametrize("kind", ["two-outputs", "rank-3", "batch-2"])
def test_models_that_are_not_batch1_classifiers_are_refused_at_load(
    capsys: pytest.CaptureFixture, tmp_path: Path, kind: str
) -> None:
    model = _odd_model(tmp_path, kind)
    line = _fails(capsys, ["--model", str(model), "--image", str(GOLDEN / "00_blue.png"), "--headless"], EXIT_MODEL)
    expected = {
        "two-outputs": "has 1 input(s) and 2 output(s)",
        "rank-3": "output (1, 2, 2) are not batch-1",
        "batch-2": "input (2, 32, 32, 3) and output (2, 4) are not batch-1",
    }[kind]
    assert expected in line
