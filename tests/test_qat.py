"""edgetl qat: fake-quantized fine-tuning, its card, its reload, and its int8 conversion."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edge_runtime.model_card import load_card, sha256_file
from toolchain.cli import main
from toolchain.config import ConvertConfig, Quantization


def _pixels(run: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    from toolchain import data

    dataset, items = data.load_split(run, split)
    pixels, kept, _ = dataset.pixels(items, 96)
    return pixels, np.asarray([it.label for it in kept])


def test_hub_backbone_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "hubrun"
    run.mkdir()
    (run / "model.keras").write_bytes(b"not read")
    card = {"labels": ["a", "b"], "height": 96, "width": 96, "model_file": "model.keras", "model_sha256": "0" * 64,
            "schema_version": 1, "extra": {"backbone": {"name": "hub:/models/mnv2"}}}  # fmt: skip
    (run / "model_card.json").write_text(json.dumps(card))
    result = CliRunner().invoke(main, ["qat", str(run)])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "Error: QAT needs the Keras MobileNetV2 backbone; this run uses hub:/models/mnv2, which tfmot cannot wrap. "
        "Retrain with --backbone mobilenet_v2, or skip QAT: `edgetl convert` makes int8 by post-training quantization"
    )


def test_qat_error_messages(tmp_path: Path) -> None:
    missing = CliRunner().invoke(main, ["qat", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and f"Directory '{tmp_path / 'nope'}' does not exist" in missing.output
    empty = CliRunner().invoke(main, ["qat", str(tmp_path)])
    assert empty.exit_code == 1 and "has no model.keras and model_card.json" in empty.output
    bad = CliRunner().invoke(main, ["qat", str(tmp_path), "--epochs", "0"])
    assert bad.exit_code == 2 and "--epochs must be >= 1" in bad.output


@pytest.mark.slow
def test_qat_run_reloads_and_converts_to_full_integer(tiny_run: Path, tmp_path: Path) -> None:
    from toolchain import feed
    from toolchain.convert import _variants, convert, float_ops
    from toolchain.qat import load_qat

    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    result = CliRunner().invoke(main, ["qat", str(run), "--epochs", "1", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    card = load_card(run / "model_qat.json")
    assert card.quantization == "qat" and card.model_sha256 == sha256_file(run / "model_qat.keras")
    assert card.extra["source"]["sha256"] == sha256_file(run / "model.keras")
    assert card.extra["metrics"]["val"]["top1"] == summary["val_top1"] and card.extra["qat"]["epochs_run"] == 1
    images, _ = _pixels(run, "val")
    reloaded = feed.predict(load_qat(run), images, card.normalization)
    top1 = float((reloaded.argmax(1) == _pixels(run, "val")[1]).mean())
    assert top1 == pytest.approx(summary["val_top1"])  # the reloaded model is the one that was evaluated
    assert _variants(ConvertConfig(run=str(run)), run)[-1] == Quantization.QAT_INT8  # a default once it exists
    [qat_int8] = convert(ConvertConfig(run=str(run), quantizations=(Quantization.QAT_INT8,))).variants
    assert qat_int8.card.input.dtype == qat_int8.card.output.dtype == "uint8"
    assert qat_int8.card.extra["source"]["file"] == "model_qat.keras" and not float_ops(qat_int8.path)


@pytest.mark.slow
def test_range_initialisation_keeps_a_real_model_accurate(trained_run: Path) -> None:
    """tfmot's [-6, 6] starting ranges clip MobileNetV2's activations; calibrated ones do not."""
    from toolchain import feed, model
    from toolchain.qat import initialize_ranges, quantize

    card = load_card(trained_run / "model_card.json")
    val, labels = _pixels(trained_run, "val")
    train, _ = _pixels(trained_run, "train")
    float_top1 = float((feed.predict(model.load(str(trained_run / "model.keras")), val, card.normalization).argmax(1) == labels).mean())
    quantized = quantize(model.load(str(trained_run / "model.keras")))
    initialize_ranges(quantized, train, card, seed=0, batches=4)
    qat_top1 = float((feed.predict(quantized, val, card.normalization).argmax(1) == labels).mean())
    assert qat_top1 >= float_top1 - 0.1 and qat_top1 > 0.5
