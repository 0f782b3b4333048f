"""The Keras model and everything that touches its graph, shared by every stage.

``graph.py`` is the one gateway to Keras/TensorFlow and the graph surgery (BatchNorm folding);
``classifier.py`` builds and loads the flat MobileNetV2 classifier; ``weights.py`` provides the
offline ImageNet weights; ``keras_file.py`` checks a ``.keras`` file before Keras reads it;
``qat_scheme.py`` is the fake-quantization scheme of QAT models (convert and parity load them too).
"""
