"""Per-image outputs the gate compares: the Keras references (with their noise floor) and each variant
through the device code (``edgetl.runtime.Classifier``), plus the exact preprocessing-contract check."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from edgetl import data, log, stats
from edgetl.data import feed
from edgetl.gate import noise_floor
from edgetl.gate.checks import Check
from edgetl.parity.variants import Variant
from edgetl.runtime import decode, preprocess
from edgetl.runtime.classifier import Classifier, ClassifierOptions
from edgetl.runtime.model_card import ModelCard


def reference_outputs(
    load: Any, pixels: np.ndarray, card: ModelCard, perturbed: dict[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A reference model's probabilities on the images, and its noise floor (two more passes)."""
    with log.quiet_native():
        model = load()

    def predict(images: np.ndarray) -> np.ndarray:
        return feed.predict(model, images, card.normalization)

    probs = predict(pixels)
    return probs, noise_floor.floor_flips(predict, pixels, probs, perturbed)


def load_qat_reference(run: Path) -> Any:
    from edgetl.model.qat_scheme import load_qat  # tfmot only when a QAT variant is checked

    return load_qat(run)


def device_frame(ref: str, dataset: data.Dataset) -> tuple[np.ndarray, str]:
    """The image as the device gets it: a file decoded by cv2 (BGR), or an array row (RGB)."""
    if ref.startswith("#"):
        return preprocess.to_rgb(dataset.array[int(ref[1:])], "RGB"), "RGB"
    return decode.decode_image(ref), "RGB"


def device_probs(path: Path, threads: int, refs: list[str], dataset: data.Dataset) -> tuple[np.ndarray, list[float]]:

    with log.quiet_native():
        classifier = Classifier(ClassifierOptions(model_path=str(path), num_threads=threads))
    probs, latency = [], []
    for ref in log.progress(refs, len(refs), path.name):
        image, order = device_frame(ref, dataset)
        start = time.perf_counter()
        probs.append(classifier.scores(image, color_order=order))
        latency.append((time.perf_counter() - start) * 1000)
    return np.asarray(probs, dtype=np.float32), latency


def contract_checks(
    variant: Variant, keras_card: ModelCard, items: list[data.Item], dataset: data.Dataset
) -> list[Check]:
    """Compare the device's input tensor with the training-side one on sample images (exact checks, no statistics)."""
    card, name = variant.card, variant.name
    same = card.color_order == keras_card.color_order and card.normalization == keras_card.normalization
    checks = [
        Check(
            name,
            "preprocessing contract",
            stats.Verdict.PASS if same else stats.Verdict.FAIL,
            f"card says {card.color_order} {card.normalization.description}, the model was trained on "
            f"{keras_card.color_order} {keras_card.normalization.description}",
        )
    ]
    worst = 0.0
    for item in items:
        image, order = device_frame(item.ref, dataset)
        device = preprocess.dequantize(preprocess.prepare(image, card, order)[0], card.input)
        pixels = dataset.load_item(item, keras_card.height, keras_card.interpolation)
        training = preprocess.normalize(pixels, keras_card.normalization)
        worst = max(worst, float(np.abs(device - training).max()))
    limit = max(1.01 * (card.input.scale if card.input.quantized else 1e-6), 1e-5)
    ok = stats.Verdict.PASS if worst <= limit else stats.Verdict.FAIL
    checks.append(
        Check(
            name,
            "input tensor",
            ok,
            f"device input differs from training-side input by {worst:.4g} "
            f"({'≤' if worst <= limit else '>'} {limit:.4g} allowed)",
        )
    )
    return checks
