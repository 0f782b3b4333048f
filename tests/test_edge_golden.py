"""The golden set: the committed int8 model must give the committed answers on the committed images.

tests/golden/ was written once by scripts/make_golden.py (TensorFlow) and checked; these
tests need only edge_runtime, so they pin decode, resize, colour order, input
quantization and output dequantization on any machine the runtime installs on.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from edgetl.runtime import Classifier, ClassifierOptions
from edgetl.runtime.decode import decode_image

GOLDEN = Path(__file__).resolve().parent / "golden"
MODEL = GOLDEN / "golden_int8.tflite"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())
IMAGES = sorted(EXPECTED["images"])
COLOURED = [name for name in IMAGES if EXPECTED["images"][name]["label"] in ("red", "blue")]
TOLERANCE = 0.01


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier(ClassifierOptions(model_path=str(MODEL), max_results=len(EXPECTED["labels"]), num_threads=1))


def test_golden_set_is_complete() -> None:
    assert EXPECTED["model"] == MODEL.name
    assert len(IMAGES) == 8 and all((GOLDEN / name).is_file() for name in IMAGES)
    assert COLOURED, "the golden set needs red/blue images to prove colour order matters"


@pytest.mark.parametrize("name", IMAGES)
def test_decoded_rgb_gives_the_golden_answer(classifier: Classifier, name: str) -> None:
    want = EXPECTED["images"][name]
    scores = classifier.scores(decode_image(GOLDEN / name), "RGB")
    assert classifier.labels[int(np.argmax(scores))] == want["top1"]
    np.testing.assert_allclose(scores, want["scores"], atol=TOLERANCE)
    top = classifier.classify(decode_image(GOLDEN / name), "RGB")
    assert [c.label for c in top][0] == want["top1"]
    assert [c.score for c in top] == sorted((c.score for c in top), reverse=True)


@pytest.mark.parametrize("name", IMAGES)
def test_opencv_bgr_frame_gives_the_golden_answer(classifier: Classifier, name: str) -> None:
    bgr = cv2.imread(str(GOLDEN / name))  # what a camera loop holds: OpenCV's BGR order
    want = EXPECTED["images"][name]
    scores = classifier.scores(bgr, color_order="BGR")
    assert classifier.labels[int(np.argmax(scores))] == want["top1"]
    np.testing.assert_allclose(scores, want["scores"], atol=TOLERANCE)


@pytest.mark.parametrize("name", COLOURED)
def test_bgr_frame_passed_as_rgb_changes_the_answer(classifier: Classifier, name: str) -> None:
    bgr = cv2.imread(str(GOLDEN / name))
    wrong = classifier.scores(bgr, color_order="RGB")
    assert classifier.labels[int(np.argmax(wrong))] != EXPECTED["images"][name]["top1"]


def test_prepared_tensor_is_quantized_with_the_models_input_parameters(classifier: Classifier) -> None:
    rgb = decode_image(GOLDEN / IMAGES[0])
    tensor = classifier.prepare(rgb, "RGB")
    card = classifier.card
    assert tensor.shape == (1, card.height, card.width, 3) and tensor.dtype == np.uint8
    resized = cv2.resize(rgb, (card.width, card.height), interpolation=cv2.INTER_AREA).astype(np.float32)
    expected = np.clip(np.round((resized / 127.5 - 1) / card.input.scale) + card.input.zero_point, 0, 255)
    assert np.abs(tensor[0].astype(int) - expected.astype(int)).max() <= 1
