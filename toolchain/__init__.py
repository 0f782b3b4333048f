"""edgetl's training-machine side: train, quantize, convert and check parity.

Imports point one way: ``toolchain -> calibration -> edge_runtime``; nothing
imports ``toolchain``. TensorFlow is imported inside the stage functions only, so
``edgetl --help`` stays instant.
"""

__version__ = "0.1.0"
