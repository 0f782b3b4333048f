"""edgetl's device runtime: classify camera, video and image frames with a .tflite model.

Runs on a Raspberry Pi with ai-edge-litert (or tflite-runtime) and OpenCV only;
TensorFlow is never imported. The model card beside each .tflite tells it how to
prepare pixels and read scores::

    from edgetl.runtime import Classifier, ClassifierOptions
    classifier = Classifier(ClassifierOptions(model_path="model_int8.tflite"))
    for category in classifier.classify(bgr_frame):
        print(category.label, category.score)

The names load on first use, so importing a light module of the package
(``edgetl.runtime.errors``, ``edgetl.runtime.guard``) does not import numpy.
"""

from __future__ import annotations

from typing import Any

from edgetl.runtime.version import __version__ as __version__

__all__ = ["Category", "Classifier", "ClassifierOptions"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from edgetl.runtime import classifier  # the names load on first use: cv2 and LiteRT only when asked for

        return getattr(classifier, name)
    raise AttributeError(f"module 'edgetl.runtime' has no attribute {name!r}")
