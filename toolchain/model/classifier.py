"""The classifier graph: one flat tf_keras functional model, backbone input to softmax.

tfmot's ``quantize_model`` accepts only Keras 2 models, refuses a backbone nested
as a layer, and refuses ``Rescaling``/``Lambda``; so every model is built here, with
``tf_keras``, as a single flat graph, and normalisation stays outside the model
(the card records it). The head's layers carry fixed names so head weights trained
on cached features can be copied into the full graph by name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
from typing import Any

from edgetl import log
from edgetl.config import MixedPrecision, Pooling, TrainConfig
from edgetl.errors import RunFolderError, WeightsError
from edgetl.model import keras_file, weights
from edgetl.model.graph import keras
from edgetl.runtime.model_card import Normalization, sha256_file

POOL, HIDDEN, DROPOUT, HEAD_BN, PREDICTIONS = "head_pool", "head_hidden", "head_dropout", "head_bn", "predictions"
# MobileNetV2 (Keras and TF-Hub's Keras-trained weights) expects [-1, 1]; TF-Hub image
# feature vectors take [0, 1] by the hub convention.
MOBILENET_NORMALIZATION = Normalization((127.5,) * 3, (127.5,) * 3)
HUB_NORMALIZATION = Normalization((0.0,) * 3, (255.0,) * 3)


@dataclasses.dataclass
class BuiltModel:
    """The full graph plus the two views the cached-feature head phase needs."""

    full: Any
    features: Any  # backbone input -> pooled features (a sub-graph of ``full``)
    head: Any  # pooled features -> probabilities (separate layers, same names)
    backbone_layers: list[Any]
    normalization: Normalization
    weights_info: dict[str, Any]


def normalization_for(config: TrainConfig) -> Normalization:
    return HUB_NORMALIZATION if config.is_hub else MOBILENET_NORMALIZATION


def set_precision(policy: MixedPrecision, has_gpu: bool) -> str:
    """Apply the global Keras dtype policy and return its name."""
    name = {
        MixedPrecision.AUTO: "mixed_float16" if has_gpu else "float32",
        MixedPrecision.OFF: "float32",
        MixedPrecision.FLOAT16: "mixed_float16",
        MixedPrecision.BFLOAT16: "mixed_bfloat16",
    }[policy]
    keras().mixed_precision.set_global_policy(name)
    return name


def _head_layers(config: TrainConfig, num_classes: int) -> list[Any]:
    layers = keras().layers
    head: list[Any] = []
    if config.hidden_units:
        head.append(layers.Dense(config.hidden_units, activation="relu", name=HIDDEN))
    head.append(layers.Dropout(config.dropout, name=DROPOUT))
    if config.head_batchnorm:
        head.append(layers.BatchNormalization(name=HEAD_BN))
    # softmax in float32 keeps mixed-precision probabilities well-formed.
    head.append(layers.Dense(num_classes, activation="softmax", dtype="float32", name=PREDICTIONS))
    return head


def _apply(layers: list[Any], x: Any) -> Any:
    for layer in layers:
        x = layer(x)
    return x


def _mobilenet(config: TrainConfig) -> tuple[Any, dict[str, Any]]:

    apps = keras().applications
    shape = (config.image_size, config.image_size, 3)
    choice = config.weights.lower()
    if choice == "none":
        return apps.MobileNetV2(input_shape=shape, alpha=config.alpha, include_top=False, weights=None), {
            "weights": "none"
        }
    if choice == "imagenet":
        # edgetl's own cache first (`edgetl weights install`), passed to Keras as a file; else Keras' download.
        installed = weights.cached_weights(config.alpha, config.image_size)
        keras_says = io.StringIO()  # Keras prints "Downloading data from https://..." and a progress bar on stdout
        try:
            with contextlib.redirect_stdout(keras_says):
                base = apps.MobileNetV2(
                    input_shape=shape,
                    alpha=config.alpha,
                    include_top=False,
                    weights=str(installed) if installed else "imagenet",
                )
            if "Downloading data from" in keras_says.getvalue():
                log.info(
                    f"ImageNet weights: {keras_says.getvalue().splitlines()[0].strip()} (Keras' own cache, ~/.keras)"
                )
        except ValueError as exc:  # Keras refuses alphas/sizes it has no weights for
            raise WeightsError(f"--weights imagenet: {str(exc).splitlines()[0]}; or pass --weights none") from None
        except Exception as exc:  # Keras raises a bare Exception on URL fetch failure
            raise weights.missing_weights_error(config.alpha, config.image_size) from exc
        return base, weights.imagenet_provenance(installed, config.alpha, config.image_size)
    path = os.path.expanduser(config.weights)
    if not os.path.isfile(path):
        raise WeightsError(f"--weights {config.weights}: no such file; pass imagenet, none, or a Keras weights file")
    base = apps.MobileNetV2(input_shape=shape, alpha=config.alpha, include_top=False, weights=None)
    try:
        base.load_weights(path)
    except Exception as exc:  # noqa: BLE001 - h5py/Keras raise many types for a file that does not fit
        raise WeightsError(
            f"--weights {path} does not fit MobileNetV2 alpha={config.alpha} without top ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:160]}); pass a matching weights file"
        ) from None

    return base, {
        "weights": "file",
        "file": os.path.basename(path),
        "sha256": sha256_file(path),
    }  # no absolute path in cards


def build(config: TrainConfig, num_classes: int) -> BuiltModel:
    """Build the flat classifier and its cached-feature views.

    Raises:
        WeightsError: the requested backbone weights are missing or do not fit.
    """
    k = keras()
    if config.is_hub:
        return _build_hub(config, num_classes)
    base, info = _mobilenet(config)
    base.trainable = False
    pool_layer = (k.layers.GlobalAveragePooling2D if config.pooling == Pooling.AVG else k.layers.GlobalMaxPooling2D)(
        name=POOL
    )
    pooled = pool_layer(base.output)
    full = k.Model(base.input, _apply(_head_layers(config, num_classes), pooled), name="edgetl_mobilenet_v2")
    features = k.Model(full.input, pooled, name="features")
    feat_in = k.Input(shape=(int(pooled.shape[-1]),), name="features_in")
    head = k.Model(feat_in, _apply(_head_layers(config, num_classes), feat_in), name="head")
    return BuiltModel(full, features, head, list(base.layers[1:]), MOBILENET_NORMALIZATION, info)


def _build_hub(config: TrainConfig, num_classes: int) -> BuiltModel:
    import tensorflow_hub as hub

    k = keras()
    handle = config.backbone[len("hub:") :]
    if os.path.isdir(os.path.expanduser(handle)):
        handle = os.path.expanduser(handle)
    inputs = k.Input(shape=(config.image_size, config.image_size, 3), name="image")
    try:
        hub_layer = hub.KerasLayer(handle, trainable=False, name="hub_backbone")
        pooled = hub_layer(inputs)
    except Exception as exc:  # noqa: BLE001 - hub raises OSError/ValueError/tf errors for a bad handle
        raise WeightsError(
            f"cannot load TF-Hub backbone {handle!r} ({type(exc).__name__}); pass a local SavedModel "
            "folder of an image feature vector (offline) or a reachable hub handle"
        ) from None
    if len(pooled.shape) != 2:
        raise WeightsError(
            f"TF-Hub backbone {handle} returns shape {pooled.shape}; use an image *feature vector* model"
        )
    full = k.Model(inputs, _apply(_head_layers(config, num_classes), pooled), name="edgetl_hub")
    features = k.Model(inputs, pooled, name="features")
    feat_in = k.Input(shape=(int(pooled.shape[-1]),), name="features_in")
    head = k.Model(feat_in, _apply(_head_layers(config, num_classes), feat_in), name="head")
    shown = os.path.basename(os.path.normpath(handle)) if os.path.isdir(handle) else handle  # no absolute path in cards
    return BuiltModel(full, features, head, [hub_layer], HUB_NORMALIZATION, {"weights": "hub", "handle": shown})


def copy_head_weights(head: Any, full: Any) -> None:
    """Copy the trained head's weights into the full graph's same-named layers."""
    for layer in head.layers:
        if layer.weights:
            full.get_layer(layer.name).set_weights(layer.get_weights())


def unfreeze_top(built: BuiltModel, n_layers: int) -> int:
    """Make the top ``n_layers`` backbone layers trainable, BatchNorm kept frozen.

    A frozen BatchNormalization runs in inference mode in tf_keras, so its moving
    statistics (learned on ImageNet) are not wrecked by small fine-tuning batches.

    Returns:
        The number of layers whose weights will train.
    """
    k = keras()
    if len(built.backbone_layers) == 1:  # a hub layer: all or nothing
        built.backbone_layers[0].trainable = n_layers > 0
        return int(n_layers > 0)
    for layer in built.backbone_layers:
        layer.trainable = False
    count = 0
    for layer in built.backbone_layers[-n_layers:] if n_layers > 0 else []:
        if isinstance(layer, k.layers.BatchNormalization) or not layer.weights:
            continue
        layer.trainable = True
        count += 1
    return count


def load(path: str, compile: bool = False) -> Any:
    """Load a saved edgetl Keras model: checked as data first, then Keras' safe mode.

    :func:`edgetl.model.keras_file.check` refuses anything but a zip ``.keras`` of the
    classes edgetl builds (a legacy HDF5 file would reach Keras' legacy loader,
    which runs a Lambda's bytecode whatever ``safe_mode`` says); only then does
    Keras deserialise it, with ``safe_mode=True`` as a second line of defence.

    Raises:
        RunFolderError: the file is not a zip ``.keras``, holds a Lambda or a class
            edgetl does not build, or Keras cannot load it.
    """

    keras_file.check(path)
    k = keras()
    try:
        return k.models.load_model(path, compile=compile, safe_mode=True)
    except (ValueError, OSError, TypeError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise RunFolderError(f"{path} is not a loadable Keras model ({first}); re-run `edgetl train`") from None
