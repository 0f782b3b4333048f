"""MediaPipe Tasks reads edgetl's TFLite metadata: class names from the model file alone.

Run with the Python of a venv that has only ``mediapipe`` (scripts/check_mediapipe.sh
makes one). For each model, ``ImageClassifier.create_from_model_path`` classifies an
image; every category MediaPipe returns (all of them: max_results -1) must carry the
name on its index's line of ``labels.txt``. Prints one JSON object with what MediaPipe
returned; exits 1 on a mismatch, 2 on bad arguments.

    python scripts/check_mediapipe.py RUN/labels.txt IMAGE RUN/model_int8.tflite RUN/model_fp32.tflite
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mediapipe as mp
import numpy as np  # mediapipe's own dependency
from mediapipe.tasks.python import vision


def check(model: Path, image_path: Path, labels: list[str]) -> dict:
    """What MediaPipe's ImageClassifier returns for one model and image, and whether its names are the labels."""
    image = mp.Image.create_from_file(str(image_path))
    pixels = image.numpy_view()
    if pixels.ndim == 2 or pixels.shape[-1] == 1:  # grey photos (Fashion-MNIST): the RGB the model was trained on
        image = mp.Image(
            image_format=mp.ImageFormat.SRGB,
            data=np.ascontiguousarray(np.repeat(pixels.reshape(*pixels.shape[:2], 1), 3, -1)),
        )
    try:
        with vision.ImageClassifier.create_from_model_path(str(model)) as classifier:
            result = classifier.classify(image)
    except Exception as exc:  # noqa: BLE001  (MediaPipe raises RuntimeError/ValueError from its C++ graph)
        return {"model": model.name, "error": str(exc).strip().splitlines()[0][:300], "match": False}
    categories = sorted(result.classifications[0].categories, key=lambda c: c.index)
    names = [c.category_name for c in categories]
    return {
        "model": model.name,
        "category_names": names,
        "indices": [c.index for c in categories],
        "top1": max(categories, key=lambda c: c.score).category_name if categories else None,
        "match": names == labels,
    }


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print("Error: usage: check_mediapipe.py LABELS.txt IMAGE MODEL.tflite [MODEL.tflite ...]", file=sys.stderr)
        return 2
    labels_path, image, models = Path(argv[0]), Path(argv[1]), [Path(m) for m in argv[2:]]
    missing = [str(p) for p in (labels_path, image, *models) if not p.is_file()]
    if missing:
        print(f"Error: not found: {', '.join(missing)}; pass a converted run's files", file=sys.stderr)
        return 2
    labels = [line for line in labels_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    results = [check(model, image, labels) for model in models]
    print(json.dumps({"labels": labels, "results": results}))
    bad = [r["model"] for r in results if not r["match"]]
    if bad:
        print(f"Error: MediaPipe's category names differ from {labels_path.name} for {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
