"""edgetl qat: fake-quantized fine-tuning, its card, its reload, and its int8 conversion."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from edgetl.cli.main import main
from edgetl.config import ConvertConfig, Quantization
from edgetl.runtime.model_card import load_card, sha256_file


def _pixels(run: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    from edgetl import data

    dataset, items = data.load_split(run, split)
    pixels, kept, _ = dataset.pixels(items, 96)
    return pixels, np.asarray([it.label for it in kept])


def test_hub_backbone_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "hubrun"
    run.mkdir()
    (run / "model.keras").write_bytes(b"not read")
    card = {
        "labels": ["a", "b"],
        "height": 96,
        "width": 96,
        "model_file": "model.keras",
        "model_sha256": "0" * 64,
        "schema_version": 1,
        "extra": {"backbone": {"name": "hub:/models/mnv2"}},
    }
    (run / "model_card.json").write_text(json.dumps(card))
    result = CliRunner().invoke(main, ["qat", str(run)])
    assert result.exit_code == 3
    assert result.stderr.strip() == (
        "Error: QAT needs the Keras MobileNetV2 backbone; this run uses hub:/models/mnv2, which tfmot cannot wrap. "
        "Retrain with --backbone mobilenet_v2, or skip QAT: `edgetl convert` makes int8 by post-training quantization"
    )


def test_qat_error_messages(tmp_path: Path) -> None:
    missing = CliRunner().invoke(main, ["qat", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and f"Directory '{tmp_path / 'nope'}' does not exist" in missing.output
    empty = CliRunner().invoke(main, ["qat", str(tmp_path)])
    assert empty.exit_code == 3 and "has no model.keras and model_card.json" in empty.output
    bad = CliRunner().invoke(main, ["qat", str(tmp_path), "--epochs", "0"])
    assert bad.exit_code == 2 and "--epochs must be >= 1" in bad.output
    distill = CliRunner().invoke(main, ["qat", str(tmp_path), "--distill", "1.5"])
    assert distill.exit_code == 2 and "--distill must be a number in [0, 1] (got 1.5)" in distill.output


@pytest.mark.slow
def test_qat_run_reloads_and_converts_to_full_integer(tiny_run: Path, tmp_path: Path) -> None:
    from edgetl.convert.stage import _variants, convert
    from edgetl.convert.tflite_inspect import float_ops
    from edgetl.data import feed
    from edgetl.model.qat_scheme import load_qat

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
    _parity_judges_qat_int8_against_its_own_graph(run)


def _parity_judges_qat_int8_against_its_own_graph(run: Path) -> None:
    """Fidelity of qat_int8 is measured against model_qat.keras (what it was converted from), accuracy against model.keras."""
    from edgetl.config.parity import ParityConfig
    from edgetl.parity.stage import run_parity

    result = run_parity(ParityConfig(run=str(run), models=("qat-int8",)))
    m, probs, labels = result.models["qat_int8"], result.probabilities, result.labels
    assert m["reference"] == "model_qat.keras" and m["accuracy_reference"] == "model.keras"
    own = float((probs["qat_int8"].argmax(1) == probs["model_qat.keras"].argmax(1)).mean())
    assert m["agreement"] == pytest.approx(own)
    drop = 100 * float(
        (probs["model.keras"].argmax(1) == labels).mean() - (probs["qat_int8"].argmax(1) == labels).mean()
    )
    assert m["drop_pt"] == pytest.approx(drop)
    assert np.abs(probs["qat_int8"] - probs["model_qat.keras"]).mean() == pytest.approx(m["mean_abs_dprob"], rel=1e-5)


@pytest.mark.slow
def test_range_initialisation_keeps_a_real_model_accurate(trained_run: Path) -> None:
    """tfmot's [-6, 6] starting ranges clip MobileNetV2's activations; calibrated ones do not."""
    from edgetl.data import feed
    from edgetl.model import classifier as model
    from edgetl.model.qat_scheme import quantize
    from edgetl.qat.stage import initialize_ranges

    card = load_card(trained_run / "model_card.json")
    val, labels = _pixels(trained_run, "val")
    train, _ = _pixels(trained_run, "train")
    float_top1 = float(
        (feed.predict(model.load(str(trained_run / "model.keras")), val, card.normalization).argmax(1) == labels).mean()
    )
    quantized = quantize(model.load(str(trained_run / "model.keras")))
    initialize_ranges(quantized, train, card, seed=0, batches=4)
    qat_top1 = float((feed.predict(quantized, val, card.normalization).argmax(1) == labels).mean())
    assert qat_top1 >= float_top1 - 0.1 and qat_top1 > 0.5


def _tiny_float_model(seed: int = 0) -> object:
    """MobileNetV2 0.35/32 with random BatchNorm statistics, so folding has something to get wrong."""
    from edgetl.model import classifier as model

    k = model.keras()
    k.utils.set_random_seed(seed)
    base = k.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None)
    pooled = k.layers.GlobalAveragePooling2D(name="head_pool")(base.output)
    net = k.Model(base.input, k.layers.Dense(3, activation="softmax", name="predictions")(pooled))
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        if isinstance(layer, k.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n), rng.normal(0, 0.1, n), rng.uniform(0.5, 2.0, n)]
            )
    return net


def test_batchnorm_folding_keeps_the_function() -> None:
    from edgetl.model import classifier as model
    from edgetl.model.graph import fold_batchnorm

    k = model.keras()
    net = _tiny_float_model()
    folded = fold_batchnorm(net)
    kinds = [type(layer).__name__ for layer in folded.layers]
    assert "BatchNormalization" not in kinds and kinds.count("DepthwiseConv2D") == 17 and kinds.count("Conv2D") == 35
    assert all(
        layer.use_bias for layer in folded.layers if isinstance(layer, (k.layers.Conv2D, k.layers.DepthwiseConv2D))
    )
    images = np.random.default_rng(1).uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)
    want, got = net.predict(images, verbose=0), folded.predict(images, verbose=0)
    assert np.abs(want - got).max() < 1e-4 and np.abs(want - net.predict(images[::-1], verbose=0)[::-1]).max() < 1e-4


def test_depthwise_kernels_are_fake_quantized_per_channel() -> None:
    """tfmot's own quantizer is per-tensor on depthwise kernels; a small-weight channel collapsed to zero."""
    import tensorflow as tf
    from edgetl.model import qat_scheme

    rng = np.random.default_rng(2)
    kernel = (
        rng.normal(0, 1, (3, 3, 4, 1)).astype(np.float32)
        * np.asarray([1e-3, 1.0, 0.1, 10.0], np.float32)[None, None, :, None]
    )
    quantized = qat_scheme.DepthwiseKernelQuantizer()(tf.constant(kernel), False, {}).numpy()
    for c in range(4):
        step = np.abs(kernel[:, :, c]).max() / 127
        np.testing.assert_allclose(quantized[:, :, c], np.round(kernel[:, :, c] / step) * step, rtol=1e-5, atol=1e-9)
        assert np.abs(quantized[:, :, c] - kernel[:, :, c]).max() <= step / 2 * 1.0001
    conv = rng.normal(0, 1, (1, 1, 8, 3)).astype(np.float32) * np.asarray([1e-3, 1.0, 10.0], np.float32)
    fake = qat_scheme.KernelQuantizer()(tf.constant(conv), False, {}).numpy()
    for c in range(3):
        assert np.abs(fake[..., c] - conv[..., c]).max() <= np.abs(conv[..., c]).max() / 127 / 2 * 1.0001


def test_quantized_graph_has_no_fake_quant_between_conv_and_relu() -> None:
    from edgetl.model.qat_scheme import quantize

    quantized = quantize(_tiny_float_model())
    wrappers = {layer.name: layer for layer in quantized.layers if type(layer).__name__ == "QuantizeWrapperV2"}
    conv1, project = wrappers["quant_Conv1"], wrappers["quant_block_1_project"]
    assert not conv1.quantize_config.get_output_quantizers(conv1.layer)  # ReLU6 follows: one range, after it
    assert project.quantize_config.get_output_quantizers(project.layer)  # linear bottleneck: quantized itself
    assert wrappers["quant_Conv1_relu"].quantize_config.get_output_quantizers(wrappers["quant_Conv1_relu"].layer)


def test_dead_channel_bias_fits_int32_after_qat_conversion() -> None:
    """A conv channel with a ~zero kernel and a real bias: TFLite's bias (scale = input x weight scale) must not saturate."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter
    from edgetl.model import classifier as model
    from edgetl.model.qat_scheme import quantize

    k = model.keras()
    inputs = k.Input((8, 8, 3))
    x = k.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = k.layers.BatchNormalization(name="bn")(x)
    x = k.layers.ReLU(6.0, name="relu")(x)
    net = k.Model(
        inputs, k.layers.Dense(2, activation="softmax", name="predictions")(k.layers.GlobalAveragePooling2D()(x))
    )
    kernel = np.random.default_rng(0).normal(0, 0.3, (3, 3, 3, 4)).astype(np.float32)
    kernel[..., 1] = 1e-9  # dead channel
    net.get_layer("conv").set_weights([kernel])
    net.get_layer("bn").set_weights([np.ones(4), np.asarray([0.0, 2.0, 0.1, -0.1]), np.zeros(4), np.ones(4)])
    quantized = quantize(net)
    images = np.random.default_rng(1).uniform(-1, 1, (16, 8, 8, 3)).astype(np.float32)
    for _ in range(4):
        quantized(images, training=True)
    converter = tf.lite.TFLiteConverter.from_keras_model(quantized)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    interpreter = Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    [conv] = [op for op in interpreter._get_ops_details() if op["op_name"] == "CONV_2D"]
    bias = details[conv["inputs"][2]]
    stored = interpreter.get_tensor(bias["index"]).astype(np.int64) * bias["quantization_parameters"]["scales"]
    assert np.abs(interpreter.get_tensor(bias["index"]).astype(np.int64)).max() < 2**31 - 1
    np.testing.assert_allclose(stored[1], 2.0, rtol=1e-3)  # the dead channel still outputs relu6(bias) = 2


@pytest.mark.slow
def test_distilled_qat_follows_the_float_model_not_the_labels(fm_folder: Path) -> None:
    """distill 1: the labels play no part (same weights with wrong labels); distill 0: they pull the model away."""
    import cv2
    from edgetl.model import classifier as model
    from edgetl.model.qat_scheme import quantize
    from edgetl.qat.stage import distiller

    k = model.keras()
    paths = sorted(fm_folder.glob("*/*.png"))[::4][:96]
    x = np.stack([cv2.resize(cv2.imread(str(p)), (32, 32)) for p in paths]).astype(np.float32) / 127.5 - 1
    teacher = _tiny_float_model()
    followed = teacher.predict(x, verbose=0).argmax(1)
    wrong = (followed + 1) % 3

    def fine_tune(weight: float, labels: np.ndarray) -> object:
        student = quantize(_tiny_float_model())
        k.utils.set_random_seed(1)
        trainer = distiller(student, teacher, weight)
        trainer.compile(k.optimizers.Adam(1e-2))
        trainer.fit(x, labels, batch_size=32, epochs=3, shuffle=False, verbose=0)
        return student

    def agreement(student: object) -> float:
        return float((student.predict(x, verbose=0).argmax(1) == followed).mean())

    on_wrong, on_right = fine_tune(1.0, wrong), fine_tune(1.0, followed)
    for a, b in zip(on_wrong.get_weights(), on_right.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    labels_only = fine_tune(0.0, wrong)
    assert agreement(on_wrong) >= 0.9
    assert agreement(labels_only) <= agreement(on_wrong) - 0.3
