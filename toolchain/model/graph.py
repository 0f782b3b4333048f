"""The Keras/TensorFlow gateway and graph surgery shared by every stage.

``keras()`` is the one way edgetl reaches Keras (tf_keras, the Keras 2 that tfmot
needs, with TensorFlow's chatter turned down); the functions below read and
rewrite flat functional graphs through their configs: ``consumers`` (who takes a
layer's output) and ``fold_batchnorm`` (conv + BatchNorm -> one conv, used by QAT
and by the calibrated int8 rounding alike). The layer-class lists are the one
source of truth for "which layers carry quantized weights".
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np
from edgetl.errors import MissingExtraError
from edgetl.runtime import native_log

CONV_CLASSES = ("Conv2D", "DepthwiseConv2D")
WEIGHTED_CLASSES = (*CONV_CLASSES, "Dense")  # the layers whose weights int8 stores per channel


def keras() -> Any:
    """The tf_keras module, loaded quietly; every model in edgetl comes through here.

    ``TF_USE_LEGACY_KERAS`` is set before TensorFlow loads so ``tf.keras`` is the
    same Keras 2 that tfmot needs. The first call also queries the devices (the
    cuInit attempt) so that all of TensorFlow's start-up lines (oneDNN, CUDA, absl)
    are written inside :func:`~edgetl.runtime.native_log.hide_native_logs`, which
    drops them unless ``-v``. A missing ``train`` extra becomes one ``Error:`` line.
    """
    if "tf_keras" in sys.modules:
        return sys.modules["tf_keras"]

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if native_log.SHOW else "2")
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    try:
        with native_log.hide_native_logs():
            import tensorflow as tf
            import tf_keras

            tf.config.list_physical_devices("GPU")
    except ImportError as exc:
        raise MissingExtraError(exc.name or "tensorflow") from None
    if not native_log.SHOW:  # TensorFlow's Python warnings (tf.function retracing, deprecations): -v shows them
        tf.get_logger().setLevel("ERROR")
    return tf_keras


def consumers(config: dict[str, Any]) -> dict[str, list[str]]:
    """Layer name -> the class name of every layer call that takes its output, from a functional config."""
    found: dict[str, list[str]] = {}
    for layer in config["layers"]:
        for node in layer["inbound_nodes"]:
            for ref in node:
                found.setdefault(ref[0], []).append(layer["class_name"])
    return found


def fold_batchnorm(model: Any) -> Any:
    """A copy of ``model`` with every conv -> BatchNorm pair fused into one conv with a bias.

    BatchNorm is frozen (inference mode) in training and QAT alike, so the fused
    graph computes the same function. Folding before quantizing makes the
    kernels QAT fake-quantizes the ones the converter writes: tfmot's own
    handling keeps BatchNorm separate and fake-quantizes the unfolded kernel,
    per-tensor for DepthwiseConv2D (its per-axis quantizer uses the kernel's
    last axis, the depth multiplier of 1), while the converter folds BatchNorm
    and quantizes per channel; that mismatch cost 4 pt of top-1.
    """
    k = keras()
    config = model.get_config()
    folded = _foldable(config)
    _drop_folded(config, folded)
    fused = k.Model.from_config(config)
    into = {conv: bn for bn, conv in folded.items()}
    for layer in fused.layers:
        source = model.get_layer(layer.name)
        if layer.name not in into:
            layer.set_weights(source.get_weights())
            continue
        bn = model.get_layer(into[layer.name])
        weights = source.get_weights()
        kernel, bias = weights[0], (weights[1] if len(weights) > 1 else 0.0)
        gamma = bn.gamma.numpy() if bn.scale else 1.0
        beta = bn.beta.numpy() if bn.center else 0.0
        scale = gamma / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
        if isinstance(layer, k.layers.DepthwiseConv2D):  # (h, w, channels, multiplier): channel-major output
            kernel = kernel * scale.reshape(kernel.shape[2], kernel.shape[3])
        else:
            kernel = kernel * scale
        layer.set_weights([kernel, (bias - bn.moving_mean.numpy()) * scale + beta])
    return fused


def _foldable(config: dict[str, Any]) -> dict[str, str]:
    """BatchNorm name -> the conv it folds into (a linear conv whose only consumer it is); marks those convs biased."""
    by_name = {layer["name"]: layer for layer in config["layers"]}
    consumers_of = consumers(config)
    folded: dict[str, str] = {}
    for layer in config["layers"]:
        inbound = layer["inbound_nodes"]
        if layer["class_name"] != "BatchNormalization" or len(inbound) != 1 or len(inbound[0]) != 1:
            continue
        source = by_name[inbound[0][0][0]]
        conv_config = source["config"]
        axis = layer["config"].get("axis", -1)
        last_axis = axis in (-1, 3, [-1], [3])
        if (
            source["class_name"] in CONV_CLASSES
            and conv_config["activation"] == "linear"
            and len(consumers_of[source["name"]]) == 1
            and last_axis
            and not layer["config"].get("renorm")
        ):
            folded[layer["name"]] = source["name"]
            conv_config["use_bias"] = True
    return folded


def _drop_folded(config: dict[str, Any], folded: dict[str, str]) -> None:
    """Remove the folded BatchNorm layers from ``config``, rewiring their consumers to the conv."""
    kept = []
    for layer in config["layers"]:
        if layer["name"] in folded:
            continue
        for node in layer["inbound_nodes"]:
            for ref in node:
                ref[0] = folded.get(ref[0], ref[0])
        kept.append(layer)
    config["layers"] = kept
    for ref in config["output_layers"]:
        ref[0] = folded.get(ref[0], ref[0])
