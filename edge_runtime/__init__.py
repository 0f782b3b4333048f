"""edgetl's device runtime: classify camera, video and image frames with a .tflite model.

Runs on a Raspberry Pi with ai-edge-litert (or tflite-runtime) and OpenCV only;
TensorFlow is never imported. The model card beside each .tflite tells it how to
prepare pixels and read scores.
"""

__version__ = "0.1.0"
