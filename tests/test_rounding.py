"""Calibrated int8 weight rounding: on the converter's grid, kept by the converter, better than nearest."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from edgetl.convert import rounding

SIZE = 24


def _grid(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row (last axis) scale max|q| / 127 and the integers q / scale."""
    scale = np.abs(q).max(axis=-1, keepdims=True) / 127
    return scale, q / scale


def test_gptq_lands_on_the_converters_grid_and_beats_nearest() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_t(3, size=(1, 16, 48))  # heavy-tailed, like folded MobileNetV2 kernels
    mix = rng.normal(size=(48, 48))
    x = rng.normal(size=(4000, 48)) @ mix  # correlated inputs: where GPTQ's error feedback pays
    hessian = (x.T @ x / len(x))[None]
    q = rounding.gptq(w, hessian)
    scale, ints = _grid(q[0])
    assert np.allclose(ints, np.round(ints), atol=1e-6) and np.abs(ints).max() <= 127 + 1e-6
    assert np.allclose(scale, np.abs(w[0]).max(axis=1, keepdims=True) / 127)  # the converter recomputes this scale
    nearest = np.round(w[0] / scale) * scale

    def error(r: np.ndarray) -> float:
        return float(np.trace((w[0] - r) @ hessian[0] @ (w[0] - r).T))

    assert error(q[0]) < 0.7 * error(nearest)


def test_fake_quant_reads_uint8_pixels_as_the_converter_does() -> None:
    """[-1, 1] gets zero point 127 (uint8): pixel p means (p - 127) * 2/255, half a step off p/127.5 - 1."""
    pixels = np.arange(256, dtype=np.float32)
    out = rounding.fake_quant(pixels / 127.5 - 1, "input", {})
    assert np.allclose(out, (pixels - 127) * 2 / 255, atol=1e-6)
    ranges = {"t": (0.0, 6.0)}
    assert np.allclose(
        rounding.fake_quant(np.array([7.0, -1.0, 3.0]), "t", ranges), [6.0, 0.0, 6 / 255 * 128]
    )  # 3.0 is step 127.5: up


def _model(seed: int):
    """A small MobileNetV2-like graph: conv-BN-ReLU6, depthwise-BN-ReLU6, linear project, residual add, head.

    The depthwise kernels get a few large taps per channel and BatchNorm random
    statistics, the pattern that makes nearest rounding lose most on MobileNetV2.
    """
    from edgetl.model.graph import keras

    k = keras()
    k.utils.set_random_seed(seed)
    inp = k.Input((SIZE, SIZE, 3))
    x = k.layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="stem")(inp)
    x = k.layers.BatchNormalization(name="stem_bn")(x)
    a = k.layers.ReLU(6.0, name="stem_relu")(x)
    x = k.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(a)
    x = k.layers.BatchNormalization(name="dw_bn")(x)
    x = k.layers.ReLU(6.0, name="dw_relu")(x)
    x = k.layers.Conv2D(16, 1, use_bias=False, name="project")(x)
    x = k.layers.BatchNormalization(name="project_bn")(x)
    x = k.layers.Add(name="add")([a, x])
    x = k.layers.GlobalAveragePooling2D(name="pool")(x)
    out = k.layers.Dense(5, name="logits")(x)  # logits: int8 error shows above the output step
    model = k.Model(inp, out)
    rng = np.random.default_rng(seed)
    dw = model.get_layer("dw").get_weights()[0]
    dw[0, 0] *= 12  # one large tap per channel
    model.get_layer("dw").set_weights([dw])
    for name in ("stem_bn", "dw_bn", "project_bn"):
        layer = model.get_layer(name)
        channels = layer.get_weights()[0].shape[0]
        layer.set_weights(
            [
                rng.uniform(0.5, 2.0, channels),
                rng.normal(0, 0.3, channels),
                rng.normal(0, 0.2, channels),
                rng.uniform(0.2, 3.0, channels),
            ]
        )
    dense = model.get_layer("logits")
    dense.set_weights([dense.get_weights()[0] * 8, dense.get_weights()[1]])  # confident enough to have a top-1
    return model


def _images(seed: int, count: int) -> np.ndarray:
    """Smooth random RGB uint8 images (blurred noise: correlated neighbouring pixels, like photos)."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 255, size=(count, SIZE, SIZE, 3)).astype(np.float32)
    return np.stack([np.clip(cv2.GaussianBlur(n, (5, 5), 2) * 2 - 128, 0, 255) for n in noise]).astype(np.uint8)


def _int8(model, calibration: np.ndarray) -> bytes:
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        model.export(str(Path(tmp) / "saved"))
        converter = tf.lite.TFLiteConverter.from_saved_model(str(Path(tmp) / "saved"))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.representative_dataset = lambda: ([image[None] / np.float32(127.5) - 1] for image in calibration)
        converter.inference_input_type = converter.inference_output_type = tf.uint8
        return bytes(converter.convert())


def _run(model: bytes, images: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = out["quantization"]
    scores = []
    for image in images:
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        scores.append((interpreter.get_tensor(out["index"])[0].astype(np.float32) - zero) * scale)
    return np.stack(scores)


@pytest.fixture(scope="module")
def tiny() -> dict:
    from edgetl.model import graph

    model = _model(5)
    calibration, held_out = _images(1, 96), _images(2, 200)
    float_probs = model.predict(held_out / np.float32(127.5) - 1, verbose=0)
    rounded = graph.fold_batchnorm(model)
    report = rounding.round_weights(rounded, calibration / np.float32(127.5) - 1, _ranges(rounded, calibration))
    return {
        "model": model,
        "rounded": rounded,
        "report": report,
        "calibration": calibration,
        "held_out": held_out,
        "float": float_probs,
        "gptq_bytes": _int8(rounded, calibration),
    }


def _ranges(model, calibration: np.ndarray) -> dict:
    import tensorflow as tf
    from edgetl.convert.converter import calibrated_ranges

    with tempfile.TemporaryDirectory() as tmp:
        model.export(str(Path(tmp) / "saved"))
        return calibrated_ranges(
            tf, Path(tmp) / "saved", lambda: ([image[None] / np.float32(127.5) - 1] for image in calibration)
        )


def test_the_converter_writes_the_rounded_integers_unchanged(tiny: dict) -> None:
    """Every weighted layer's int8 tensor in the .tflite equals the integers the rounding chose."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=tiny["gptq_bytes"])
    stored = []
    for detail in interpreter.get_tensor_details():
        if detail["dtype"] == np.int8 and len(detail["shape"]) >= 2:
            try:
                stored.append(interpreter.get_tensor(detail["index"]).astype(np.int32))
            except ValueError:  # an activation, not a constant
                continue
    assert tiny["report"].layers == 4
    for layer in tiny["rounded"].layers:
        kind = layer.__class__.__name__
        if kind not in rounding.WEIGHTED:
            continue
        kernel = layer.get_weights()[0]
        if kind == "DepthwiseConv2D":
            kernel = kernel.reshape(1, *kernel.shape[:2], -1)  # TFLite's layout, channels last
        channels_last = kernel.reshape(-1, kernel.shape[-1]).T  # one row per output channel
        _, ints = _grid(channels_last)
        assert np.allclose(ints, np.round(ints), atol=1e-3), layer.name
        ints = np.round(ints).astype(np.int32).T.reshape(kernel.shape)
        expected = ints.transpose(3, 0, 1, 2) if kind == "Conv2D" else ints.T if kind == "Dense" else ints
        assert any(s.shape == expected.shape and np.array_equal(s, expected) for s in stored), layer.name


def test_simulation_tracks_the_real_int8_model(tiny: dict) -> None:
    """With the converter's ranges, the simulated int8 graph predicts the error LiteRT makes on unseen images.

    The converter widens an add's inputs to the add's range; a simulation that
    calibrates each tensor on its own misses that and tracks LiteRT far worse.
    """
    ranges = _ranges(tiny["rounded"], tiny["calibration"])
    assert ranges["project"] == ranges["add"] or ranges["project"][1] == ranges["add"][1]
    rounding.simulate(tiny["rounded"], tiny["calibration"] / np.float32(127.5) - 1, ranges)  # the input's range
    _, simulated = rounding.simulate(tiny["rounded"], tiny["held_out"] / np.float32(127.5) - 1, ranges)
    real = _run(tiny["gptq_bytes"], tiny["held_out"])
    error = real - tiny["float"]
    assert np.abs(simulated - real).mean() < 0.7 * np.abs(error).mean()
    assert np.corrcoef((simulated - tiny["float"]).ravel(), error.ravel())[0, 1] > 0.7


def test_gptq_int8_is_closer_to_float_than_nearest(tiny: dict) -> None:
    from edgetl.model import graph

    nearest = _run(_int8(graph.fold_batchnorm(tiny["model"]), tiny["calibration"]), tiny["held_out"])
    gptq = _run(tiny["gptq_bytes"], tiny["held_out"])
    error_nearest = np.abs(nearest - tiny["float"]).mean()
    error_gptq = np.abs(gptq - tiny["float"]).mean()
    assert error_gptq < 0.7 * error_nearest, (error_gptq, error_nearest)
    agree = lambda p: (p.argmax(1) == tiny["float"].argmax(1)).mean()  # noqa: E731
    assert agree(gptq) >= agree(nearest)


def test_float_layers_follow_the_converters_fused_ops(tiny: dict) -> None:
    """Naming a conv or the ReLU fused with it keeps both in float; an add or a pool stands alone."""
    config = tiny["rounded"].get_config()
    assert rounding.float_layers(config, ("dw_relu",)) == {"dw", "dw_relu"}
    assert rounding.float_layers(config, ("stem",)) == {"stem", "stem_relu"}
    assert rounding.float_layers(config, ("add", "unknown")) == {"add"}
    assert rounding.float_layers(config, ()) == set()


def test_kept_float_layers_keep_float_weights_and_the_rest_round_around_them(tiny: dict) -> None:
    from edgetl.model import graph

    float_weights = {layer.name: layer.get_weights() for layer in graph.fold_batchnorm(tiny["model"]).layers}
    gptq = {layer.name: layer.get_weights() for layer in tiny["rounded"].layers}
    kept = graph.fold_batchnorm(tiny["model"])
    ranges = _ranges(kept, tiny["calibration"])
    rounding.round_weights(kept, tiny["calibration"] / np.float32(127.5) - 1, ranges, keep_float=("dw_relu",))
    now = {layer.name: layer.get_weights() for layer in kept.layers}
    assert all(np.array_equal(a, b) for a, b in zip(now["dw"], float_weights["dw"]))  # its own, float weights
    assert all(np.array_equal(a, b) for a, b in zip(now["stem"], gptq["stem"]))  # before it: the same GPTQ
    assert not np.array_equal(now["project"][1], gptq["project"][1])  # after it: bias-corrected for a float dw


def _layer_names(model: bytes) -> tuple[str, ...]:
    from ai_edge_litert.interpreter import Interpreter
    from edgetl.convert.tflite_inspect import layers_of

    interpreter = Interpreter(model_content=model)
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    found = [layers_of(names[i]) for op in interpreter._get_ops_details() for i in op["outputs"]]
    return tuple(dict.fromkeys(name for layers in found for name in layers))


def _selective(model, calibration: np.ndarray, keep_float: tuple[str, ...]) -> bytes:
    """``edgetl convert --keep-float`` on ``model``, float32 input and output."""
    import tensorflow as tf
    from edgetl.config import ConvertConfig, IoType
    from edgetl.convert.converter import _selective_int8

    with tempfile.TemporaryDirectory() as tmp:
        model.export(str(Path(tmp) / "saved"))
        converter = tf.lite.TFLiteConverter.from_saved_model(str(Path(tmp) / "saved"))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.representative_dataset = lambda: ([image[None] / np.float32(127.5) - 1] for image in calibration)
        config = ConvertConfig(run="r", keep_float=keep_float, io=IoType.FLOAT32)
        return _selective_int8(tf, converter, config)


def test_every_layer_kept_float_computes_the_float_model(tiny: dict) -> None:
    """Every named layer in float computes the float model's features to float precision when the rounding
    knows they are float; with the all-int8 GPTQ weights left in (what --keep-float did), they are far off.

    The features are the pooled tensor: the output op (here the logits) carries no layer name in the
    converted graph, so no --keep-float name reaches it and it stays int8.
    """
    from ai_edge_litert.interpreter import Interpreter
    from edgetl.model import graph

    images = tiny["held_out"][:50] / np.float32(127.5) - 1
    k = graph.keras()
    expected = k.Model(tiny["model"].input, tiny["model"].get_layer("pool").output).predict(images, verbose=0)

    def features(model: bytes) -> np.ndarray:
        interpreter = Interpreter(model_content=model, experimental_preserve_all_tensors=True)
        interpreter.allocate_tensors()
        pool = next(t["index"] for t in interpreter.get_tensor_details() if t["name"].endswith("pool/Mean"))
        out = []
        for image in images:
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
            interpreter.invoke()
            out.append(interpreter.get_tensor(pool)[0])
        return np.stack(out)

    names = _layer_names(tiny["gptq_bytes"])
    assert set(names) == {"stem", "stem_relu", "dw", "dw_relu", "project", "add", "pool"}
    kept = graph.fold_batchnorm(tiny["model"])
    ranges = _ranges(kept, tiny["calibration"])
    rounding.round_weights(kept, tiny["calibration"] / np.float32(127.5) - 1, ranges, keep_float=names)
    spread = np.abs(expected).mean()
    fixed = np.abs(features(_selective(kept, tiny["calibration"], names)) - expected).max()
    assert fixed < 1e-4 * spread, (fixed, spread)
    stale = np.abs(features(_selective(tiny["rounded"], tiny["calibration"], names)) - expected).max()
    assert stale > 1e-2 * spread, (stale, spread)
