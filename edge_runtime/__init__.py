"""edgetl's device runtime: classify camera, video and image frames with a .tflite model.

Runs on a Raspberry Pi with ai-edge-litert (or tflite-runtime) and OpenCV only;
TensorFlow is never imported. The model card beside each .tflite tells it how to
prepare pixels and read scores::

    from edgetl.runtime import Classifier, ClassifierOptions
    classifier = Classifier(ClassifierOptions(model_path="model_int8.tflite"))
    for category in classifier.classify(bgr_frame):
        print(category.label, category.score)
"""

from edgetl.runtime.classifier import Category, Classifier, ClassifierOptions

__all__ = ["Category", "Classifier", "ClassifierOptions"]
__version__ = "0.1.0"
