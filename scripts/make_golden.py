"""Regenerate tests/golden/: a tiny int8 .tflite, its card, images, and the expected outputs.

The golden set pins edge_runtime's behaviour (decode, resize, colour order,
input quantization, output dequantization) to numbers that were checked once, so
a change that shifts any of them fails tests/test_edge_golden.py and the arm64
check (scripts/arm64_check.sh). Classes are colours and a pattern, so a BGR/RGB
swap changes the answer. Needs the train extra (TensorFlow); run it only when the
runtime's contract changes on purpose:

    .venv/bin/python scripts/make_golden.py [--out tests/golden]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

LABELS = ("blue", "green", "red", "stripes")
SIZE = 32
SEED = 7


def synthetic(label: int, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """An RGB uint8 image of class ``label``: a noisy dominant colour, or grey stripes."""
    noise = rng.normal(0, 30, (height, width, 3))
    if LABELS[label] == "stripes":
        period = int(rng.integers(3, 7))
        rows = (np.arange(height) // period % 2)[:, None, None] * 140 + 60
        image = np.broadcast_to(rows, (height, width, 3)) + noise
    else:
        channel = {"red": 0, "green": 1, "blue": 2}[LABELS[label]]
        image = np.full((height, width, 3), rng.uniform(40, 110)) + noise
        image[:, :, channel] += rng.uniform(40, 120)
    return np.clip(image, 0, 255).astype(np.uint8)


def train_model(tf_keras, x: np.ndarray, y: np.ndarray):
    layers = tf_keras.layers
    inputs = tf_keras.Input((SIZE, SIZE, 3))
    h = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(inputs)
    h = layers.BatchNormalization()(h)
    h = layers.ReLU(6.0)(h)
    h = layers.DepthwiseConv2D(3, padding="same")(h)
    h = layers.Conv2D(16, 1, activation="relu")(h)
    h = layers.GlobalAveragePooling2D()(h)
    outputs = layers.Dense(len(LABELS), activation="softmax")(h)
    model = tf_keras.Model(inputs, outputs)
    # Label smoothing keeps scores away from 1.0, so the ±0.01 score checks mean something.
    model.compile(
        tf_keras.optimizers.Adam(0.01), tf_keras.losses.CategoricalCrossentropy(label_smoothing=0.3), ["accuracy"]
    )
    model.fit(x, tf_keras.utils.to_categorical(y, len(LABELS)), epochs=12, batch_size=32, verbose=0)
    return model


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "tests" / "golden")
    out = p.parse_args().out

    import tensorflow as tf
    import tf_keras
    from edgetl.runtime import decode, preprocess
    from edgetl.runtime.classifier import Classifier, ClassifierOptions
    from edgetl.runtime.model_card import ModelCard, TensorSpec, sha256_file, write_bytes_atomic, write_json_atomic

    tf.keras.utils.set_random_seed(SEED)
    rng = np.random.default_rng(SEED)
    y = np.arange(480) % len(LABELS)
    x = np.stack([synthetic(int(c), rng, SIZE, SIZE) for c in y])
    norm_card = ModelCard(labels=LABELS, height=SIZE, width=SIZE, model_file="", model_sha256="")
    model = train_model(tf_keras, preprocess.normalize(x, norm_card.normalization), y)

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: (
        [preprocess.normalize(x[i : i + 1], norm_card.normalization)] for i in range(0, 480, 4)
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    out.mkdir(parents=True, exist_ok=True)
    model_path = out / "golden_int8.tflite"
    write_bytes_atomic(model_path, converter.convert())

    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(model_path))
    (in_scale, in_zp), (out_scale, out_zp) = (
        interp.get_input_details()[0]["quantization"],
        interp.get_output_details()[0]["quantization"],
    )
    card = ModelCard(
        labels=LABELS,
        height=SIZE,
        width=SIZE,
        model_file=model_path.name,
        model_sha256=sha256_file(model_path),
        quantization="int8",
        input=TensorSpec("uint8", float(in_scale), int(in_zp)),
        output=TensorSpec("uint8", float(out_scale), int(out_zp)),
        extra={"purpose": "golden test model for edge_runtime; regenerate with scripts/make_golden.py"},
    )
    card.save(model_path.with_suffix(".json"))

    import cv2

    expected = {}
    shapes = [(48, 64), (32, 32), (120, 90), (17, 23)]  # shrink, identity, shrink, enlarge: every resize path
    classifier = Classifier(ClassifierOptions(model_path=str(model_path), max_results=len(LABELS)))
    for i in range(8):
        label = i % len(LABELS)
        h, w = shapes[i % len(shapes)]
        image = synthetic(label, rng, h, w)
        path = out / f"{i:02d}_{LABELS[label]}.png"
        ok, png = cv2.imencode(".png", image[:, :, ::-1])
        assert ok
        write_bytes_atomic(path, png.tobytes())
        scores = classifier.scores(decode.decode_image(path), "RGB")
        expected[path.name] = {
            "label": LABELS[label],
            "top1": LABELS[int(np.argmax(scores))],
            "scores": [round(float(s), 6) for s in scores],
        }
    write_json_atomic(out / "expected.json", {"model": model_path.name, "labels": list(LABELS), "images": expected})
    right = sum(v["top1"] == v["label"] for v in expected.values())
    print(
        f"{out}: {model_path.name} ({model_path.stat().st_size} bytes), {len(expected)} images, {right}/{len(expected)} top-1 right"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
