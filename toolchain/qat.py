"""``edgetl qat``: quantization-aware fine-tuning of a trained run.

The flat tf_keras graph of ``RUN/model.keras`` is rewritten with every frozen
BatchNorm folded into its conv, then wrapped by tfmot's ``quantize_apply`` with
fake quantization laid out as TFLite will run it (kernels per output channel,
no fake-quant between a conv and its ReLU6), and a short low-learning-rate
fine-tune on the train split (early stopping on val, best weights restored)
lets the weights adapt to int8 rounding. The result is ``RUN/model_qat.keras`` plus its card
``RUN/model_qat.json``; ``edgetl convert`` turns it into ``model_qat_int8.tflite``.

tfmot 0.8.1 cannot reload a quantized model from a ``.keras`` file
(tensorflow/model-optimization PR #1123: its layers build twice on load), so
``load_qat`` rebuilds the graph from ``model.keras`` and loads the saved weights
into it; the card pins the float model's sha256 so a changed ``model.keras`` is
refused rather than silently mismatched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgetl.runtime.model_card import CardError, ModelCard, load_card, read_json, sha256_file, verify_model_file
from edgetl import data as data_mod
from edgetl import feed, log, report
from edgetl import model as model_mod
from edgetl.config import MixedPrecision, QatConfig
from edgetl.errors import RunFolderError

STAGES = 4
QAT_MODEL = "model_qat.keras"
QAT_CARD = "model_qat.json"
RANGE_BATCHES = 8
CONV_CLASSES = ("Conv2D", "DepthwiseConv2D")
# The fake-quant layout of model_qat.keras; load_qat refuses files made with another.
QAT_SCHEME = "bn-folded-per-channel"
# The smallest conv input scale the bias floor allows for (MobileNetV2's smallest, its input's, is 2/255).
MIN_INPUT_SCALE = 1e-3


@dataclasses.dataclass
class QatResult:
    """Where the QAT model went and how well it does (fake-quantized, in Keras)."""

    model_path: Path
    card_path: Path
    metrics: dict[str, Any]
    float_metrics: dict[str, Any]
    seconds: float


def keras_card(run: Path) -> ModelCard:
    """The float model's card, after checking the run folder holds a usable model.

    Raises:
        RunFolderError: no ``model.keras`` or ``model_card.json``, or a card this version cannot read.
    """
    run = Path(run)
    if not (run / "model.keras").is_file() or not (run / "model_card.json").is_file():
        raise RunFolderError(f"{run} has no model.keras and model_card.json; is it an `edgetl train` run folder?")
    path = run / "model_card.json"
    try:
        return load_card(path)
    except CardError as exc:  # name the file where the card's own message does not
        raise RunFolderError(str(exc) if str(path) in str(exc) else f"{path}: {exc}") from None


def check_qat_backbone(card: ModelCard) -> None:
    """Refuse backbones tfmot cannot wrap.

    Raises:
        RunFolderError: the run uses a TF-Hub backbone.
    """
    backbone = str(card.extra.get("backbone", {}).get("name", "mobilenet_v2"))
    if backbone.startswith("hub:"):
        raise RunFolderError(
            f"QAT needs the Keras MobileNetV2 backbone; this run uses {backbone}, which tfmot cannot wrap. "
            "Retrain with --backbone mobilenet_v2, or skip QAT: `edgetl convert` makes int8 by post-training quantization"
        )


def qat(config: QatConfig) -> QatResult:
    """Fine-tune ``RUN/model.keras`` with fake quantization and write ``model_qat.keras``.

    Raises:
        RunFolderError: not a run folder, a hub backbone, or its images are gone.
    """
    started = time.monotonic()
    run = Path(config.run)
    card = keras_card(run)
    check_qat_backbone(card)
    verify_model_file(card, run / "model.keras")
    seed = config.seed if config.seed is not None else int((read_json(run / "config.json") or {}).get("seed", 42))
    log.stage(1, STAGES, "decoding the train, val and test splits")
    pixels, labels = _splits(run, card)
    log.stage(2, STAGES, "folding BatchNorm and wrapping the model with fake quantization (tfmot)")
    with log.quiet_native():
        k = model_mod.keras()
        model_mod.set_precision(MixedPrecision.OFF, False)
        k.utils.set_random_seed(seed)
        float_model = model_mod.load(str(run / "model.keras"))
        quantized = quantize(float_model)
        initialize_ranges(quantized, pixels["train"], card, seed)
    quantized.compile(k.optimizers.Adam(config.learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    log.stage(3, STAGES, f"fine-tuning for up to {config.epochs} epoch(s) at lr {config.learning_rate:g}")
    history = _fit(quantized, config, pixels, labels, card, seed)
    log.stage(4, STAGES, "evaluating and writing model_qat.keras")
    metrics = {s: report.classification_metrics(feed.predict(quantized, pixels[s], card.normalization), labels[s], card.labels)
               for s in ("val", "test")}  # fmt: skip
    for split in ("val", "test"):
        log.info(f"QAT {split} top-1 {metrics[split]['top1']:.4f} (float {card.extra.get('metrics', {}).get(split, {}).get('top1', float('nan')):.4f})")
    model_path = _save(quantized, run / QAT_MODEL)
    qat_card = _card(card, run, model_path, config, history, metrics, seed)
    qat_card.save(run / QAT_CARD)
    return QatResult(model_path, run / QAT_CARD, metrics, dict(card.extra.get("metrics", {})), time.monotonic() - started)


def quantize(float_model: Any) -> Any:
    """Wrap ``float_model`` for QAT: BatchNorm folded, kernels per channel, all but unfolded BatchNorm trainable.

    The trainable flags are fixed here, before ``quantize_apply``, because the wrapped
    layers order their variables by them; ``load_qat`` relies on the same flags.
    """
    import tensorflow_model_optimization as tfmot  # noqa: PLC0415

    qk = tfmot.quantization.keras
    k = model_mod.keras()
    folded = fold_batchnorm(float_model)
    for layer in folded.layers:
        layer.trainable = not isinstance(layer, k.layers.BatchNormalization)
    scheme = _folded_scheme()
    relu_fed = _relu_fed(folded)

    def annotate(layer: Any) -> Any:
        if type(layer).__name__ in CONV_CLASSES:
            return qk.quantize_annotate_layer(layer, scheme["FoldedConvConfig"](layer.name not in relu_fed))
        return qk.quantize_annotate_layer(layer)

    annotated = k.models.clone_model(folded, clone_function=annotate)
    with qk.quantize_scope(scheme):
        return qk.quantize_apply(annotated, scheme["FoldedScheme"]())


def _relu_fed(model: Any) -> set[str]:
    """Names of the layers whose every consumer is a ReLU (no fake-quant goes between them)."""
    return {name for name, kinds in model_mod.consumers(model.get_config()).items() if set(kinds) == {"ReLU"}}


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
    k = model_mod.keras()
    config = model.get_config()
    by_name = {layer["name"]: layer for layer in config["layers"]}
    consumers = model_mod.consumers(config)
    folded: dict[str, str] = {}  # BatchNorm name -> the conv it folds into
    for layer in config["layers"]:
        inbound = layer["inbound_nodes"]
        if layer["class_name"] != "BatchNormalization" or len(inbound) != 1 or len(inbound[0]) != 1:
            continue
        source = by_name[inbound[0][0][0]]
        conv_config = source["config"]
        axis = layer["config"].get("axis", -1)
        last_axis = axis in (-1, 3, [-1], [3])
        if (source["class_name"] in CONV_CLASSES and conv_config["activation"] == "linear" and len(consumers[source["name"]]) == 1
                and last_axis and not layer["config"].get("renorm")):  # fmt: skip
            folded[layer["name"]] = source["name"]
            conv_config["use_bias"] = True
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


@functools.lru_cache(maxsize=None)
def _folded_scheme() -> dict[str, Any]:
    """tfmot classes for a BatchNorm-folded graph, made on first use so tfmot loads lazily.

    ``KernelQuantizer`` fake-quantizes a conv kernel per output channel the way
    TFLite stores it (symmetric, narrow range, scale max|w|/127; a depthwise
    kernel's channels are its last two axes); ``FoldedConvConfig`` quantizes the
    kernel and, unless a ReLU follows, the output. The scheme's layout transform
    keeps only the input quantizer: there is no BatchNorm left to fuse, and
    tfmot's Conv+ReLU transform would drop the custom kernel quantizer.
    """
    import tensorflow as tf  # noqa: PLC0415
    import tensorflow_model_optimization as tfmot  # noqa: PLC0415
    from tensorflow_model_optimization.python.core.quantization.keras import quantize_layout_transform  # noqa: PLC0415
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (  # noqa: PLC0415
        default_8bit_quantize_scheme,
        default_8bit_transforms,
    )
    from tensorflow_model_optimization.python.core.quantization.keras.graph_transformations import (  # noqa: PLC0415
        model_transformer,
    )

    qk = tfmot.quantization.keras

    class KernelQuantizer(qk.quantizers.Quantizer):  # type: ignore[misc, name-defined]
        """Per output channel, with a floor on each channel's range so its int32 bias cannot overflow.

        TFLite stores a bias at scale input_scale * weight_scale; a dead channel
        (MobileNetV2 has them: kernel ~1e-9 after folding, bias not) gets a weight
        scale so small that the bias saturates int32, which shifted whole classes
        (dress lost 23 pt). Post-training quantization widens such scales itself;
        the QAT converter takes this quantizer's range as given, so the floor is
        here, where the Keras graph sees it too.
        """

        def __init__(self, bias: Any = None) -> None:
            self.bias = bias

        def build(self, tensor_shape: Any, name: str, layer: Any) -> dict[str, Any]:
            return {}

        @tf.autograph.experimental.do_not_convert
        def __call__(self, inputs: Any, training: Any, weights: Any, **kwargs: Any) -> Any:
            bound = tf.maximum(tf.reduce_max(tf.abs(inputs), axis=(0, 1, 2)), 1e-8)
            if self.bias is not None:
                bound = tf.maximum(bound, tf.abs(self.bias) * (127.0 / (2.0**30 * MIN_INPUT_SCALE)))
            bound = tf.stop_gradient(bound)
            return tf.quantization.fake_quant_with_min_max_vars_per_channel(inputs, -bound, bound, num_bits=8, narrow_range=True)

        def get_config(self) -> dict[str, Any]:
            return {}

    class DepthwiseKernelQuantizer(KernelQuantizer):
        """Per output channel (each of the last two axes' pairs); rounded in float, straight-through gradient.

        The converter cannot carry a per-channel fake-quant through the reshape
        to TFLite's depthwise layout, so the kernel reaches it already on the int8
        grid, and its own per-channel max-abs quantization reproduces it exactly.
        """

        @tf.autograph.experimental.do_not_convert
        def __call__(self, inputs: Any, training: Any, weights: Any, **kwargs: Any) -> Any:
            bound = tf.maximum(tf.reduce_max(tf.abs(inputs), axis=(0, 1), keepdims=True), 1e-8)
            step = tf.stop_gradient(bound / 127.0)
            return inputs + tf.stop_gradient(tf.round(inputs / step) * step - inputs)

    class FoldedConvConfig(qk.QuantizeConfig):  # type: ignore[misc, name-defined]
        def __init__(self, quantize_output: bool = True) -> None:
            self.quantize_output = quantize_output

        @staticmethod
        def _attr(layer: Any) -> str:
            return "depthwise_kernel" if hasattr(layer, "depthwise_kernel") else "kernel"

        def get_weights_and_quantizers(self, layer: Any) -> list[Any]:
            depthwise = self._attr(layer) == "depthwise_kernel"
            quantizer = DepthwiseKernelQuantizer() if depthwise else KernelQuantizer(layer.bias if layer.use_bias else None)
            return [(getattr(layer, self._attr(layer)), quantizer)]

        def get_activations_and_quantizers(self, layer: Any) -> list[Any]:
            return []

        def set_quantize_weights(self, layer: Any, quantize_weights: list[Any]) -> None:
            setattr(layer, self._attr(layer), quantize_weights[0])

        def set_quantize_activations(self, layer: Any, quantize_activations: list[Any]) -> None:
            pass

        def get_output_quantizers(self, layer: Any) -> list[Any]:
            if not self.quantize_output:
                return []
            return [qk.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]

        def get_config(self) -> dict[str, Any]:
            return {"quantize_output": self.quantize_output}

    class InputOnlyTransform(quantize_layout_transform.QuantizeLayoutTransform):  # type: ignore[misc]
        def apply(self, model: Any, layer_quantize_map: dict[str, Any]) -> Any:
            transforms = [default_8bit_transforms.InputLayerQuantize()]
            return model_transformer.ModelTransformer(model, transforms, set(layer_quantize_map), layer_quantize_map).transform()

    class FoldedScheme(default_8bit_quantize_scheme.Default8BitQuantizeScheme):  # type: ignore[misc]
        def get_layout_transformer(self) -> Any:
            return InputOnlyTransform()

    return {"KernelQuantizer": KernelQuantizer, "DepthwiseKernelQuantizer": DepthwiseKernelQuantizer,
            "FoldedConvConfig": FoldedConvConfig, "FoldedScheme": FoldedScheme}  # fmt: skip


def initialize_ranges(quantized: Any, images: np.ndarray, card: ModelCard, seed: int, batches: int = RANGE_BATCHES,
                      batch_size: int = 32) -> None:  # fmt: skip
    """Set every activation range to the mean of a few training batches' ranges.

    tfmot starts activation ranges at [-6, 6] and moves them with an EMA of decay
    0.999, which needs thousands of steps: a short fine-tune would clip wide
    activations (MobileNetV2's linear bottlenecks) for most of its epochs and end
    well below the float model. Running ``batches`` forward passes with the decay
    set to i/(i+1) makes each range the running mean of the batch ranges, as if
    calibrated, before training starts.
    """
    from tensorflow_model_optimization.python.core.quantization.keras import quant_ops  # noqa: PLC0415

    original = quant_ops.MovingAvgQuantize
    step = {"i": 0}

    def running_mean(*args: Any, **kwargs: Any) -> Any:
        kwargs["ema_decay"] = step["i"] / (step["i"] + 1)
        return original(*args, **kwargs)

    order = np.random.default_rng((seed, 7)).permutation(len(images))
    quant_ops.MovingAvgQuantize = running_mean
    try:
        for i in range(min(batches, max(1, len(images) // batch_size))):
            step["i"] = i
            chosen = np.sort(order[i * batch_size : (i + 1) * batch_size])
            quantized(feed.normalize(images[chosen], card.normalization), training=True)
    finally:
        quant_ops.MovingAvgQuantize = original


def load_qat(run: Path) -> Any:
    """The QAT Keras model of a run: ``model.keras``'s graph, wrapped, with ``model_qat.keras``'s weights.

    Raises:
        RunFolderError: no QAT model, or ``model.keras`` changed since QAT.
    """
    run = Path(run)
    if not (run / QAT_MODEL).is_file() or not (run / QAT_CARD).is_file():
        raise RunFolderError(f"{run} has no {QAT_MODEL}; run `edgetl qat {run}` first, or leave qat_int8 out of --quant")
    card = load_card(run / QAT_CARD)
    verify_model_file(card, run / QAT_MODEL)
    if card.extra.get("qat", {}).get("scheme") != QAT_SCHEME:
        raise RunFolderError(f"{run}/{QAT_MODEL} was made by an older edgetl (BatchNorm not folded); run `edgetl qat {run}` again")
    source = card.extra.get("source", {}).get("sha256")
    if source != sha256_file(run / "model.keras"):
        raise RunFolderError(f"{run}/model.keras changed after QAT; run `edgetl qat {run}` again")
    from edgetl import keras_file  # noqa: PLC0415

    keras_file.check(run / QAT_MODEL)  # only its weights are read, but it is refused like any other foreign model
    import tensorflow_model_optimization as tfmot  # noqa: PLC0415

    with log.quiet_native(), tfmot.quantization.keras.quantize_scope():
        quantized = quantize(model_mod.load(str(run / "model.keras")))
        quantized.load_weights(str(run / QAT_MODEL))
    return quantized


def _splits(run: Path, card: ModelCard) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    pixels: dict[str, np.ndarray] = {}
    labels: dict[str, np.ndarray] = {}
    for split in data_mod.SPLITS:
        dataset, items = data_mod.load_split(run, split)
        pixels[split], kept, _ = dataset.pixels(items, card.height, card.interpolation)
        labels[split] = np.asarray([it.label for it in kept], dtype=np.int32)
    if not len(pixels["train"]) or not len(pixels["val"]):
        raise RunFolderError(f"{run}: no readable train or val images left for QAT; restore the run's data")
    return pixels, labels


def _fit(model: Any, config: QatConfig, pixels: dict[str, np.ndarray], labels: dict[str, np.ndarray], card: ModelCard, seed: int) -> dict[str, list[float]]:
    """Fine-tune with early stopping on val loss; Keras' epoch lines go to stderr."""
    k = model_mod.keras()
    seq = feed.make_sequence(pixels["train"], labels["train"], card.normalization, config.batch_size, seed, config.augment)
    val = (feed.normalize(pixels["val"], card.normalization), labels["val"])
    stop = k.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True)
    with contextlib.redirect_stdout(sys.stderr):
        hist = model.fit(seq, validation_data=val, epochs=config.epochs, callbacks=[stop], verbose=0 if log.QUIET else 2)
    return {key: [float(v) for v in values] for key, values in hist.history.items()}


def _save(model: Any, path: Path) -> Path:
    """Save under ``quantize_scope`` to a temporary ``.keras`` beside ``path``, then rename it into place."""
    import tensorflow_model_optimization as tfmot  # noqa: PLC0415

    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".keras", dir=path.parent)
    os.close(fd)
    try:
        with log.quiet_native(), tfmot.quantization.keras.quantize_scope():
            model.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _card(card: ModelCard, run: Path, model_path: Path, config: QatConfig, history: dict[str, list[float]],
          metrics: dict[str, Any], seed: int) -> ModelCard:  # fmt: skip
    import tensorflow as tf  # noqa: PLC0415

    from edgetl.train import versions  # noqa: PLC0415

    extra = {
        "backbone": card.extra.get("backbone", {}),
        "source": {"file": "model.keras", "sha256": sha256_file(run / "model.keras")},
        "qat": {"scheme": QAT_SCHEME, "epochs_run": len(history.get("loss", [])), "learning_rate": config.learning_rate, "seed": seed,
                "batch_size": config.batch_size, "augment": config.augment, "history": history},
        "metrics": {s: {"top1": metrics[s]["top1"], "count": metrics[s]["count"]} for s in ("val", "test")},
        "float_metrics": card.extra.get("metrics", {}),
        "versions": versions(tf),
    }  # fmt: skip
    return card.replace(model_file=model_path.name, model_sha256=sha256_file(model_path), quantization="qat", extra=extra)
