"""The fake-quantization scheme of edgetl's QAT models (tfmot), and the loader of a run's QAT model.

Import this module lazily, inside the function that needs it: it imports
TensorFlow and tfmot at the top, because its classes subclass tfmot's.

The scheme quantizes a BatchNorm-folded graph (:func:`edgetl.model.graph.fold_batchnorm`)
the way TFLite will run it: ``KernelQuantizer`` fake-quantizes a conv kernel per
output channel as TFLite stores it (symmetric, narrow range, scale max|w|/127; a
depthwise kernel's channels are its last two axes); ``FoldedConvConfig``
quantizes the kernel and, unless a ReLU follows, the output. The scheme's layout
transform keeps only the input quantizer: there is no BatchNorm left to fuse,
and tfmot's Conv+ReLU transform would drop the custom kernel quantizer.

tfmot 0.8.1 cannot reload a quantized model from a ``.keras`` file
(tensorflow/model-optimization PR #1123: its layers build twice on load), so
:func:`load_qat` rebuilds the graph from ``model.keras`` and loads the saved
weights into it; the QAT card pins the float model's sha256 so a changed
``model.keras`` is refused rather than silently mismatched.

Every private tfmot name edgetl uses is imported here and nowhere else (checked against
tfmot 0.8.1): ``quantize_layout_transform``, ``default_8bit_*`` and ``model_transformer`` to
build the scheme (tfmot's public API has no way to replace its layout transform), and
``quant_ops.MovingAvgQuantize`` for :func:`running_mean_ranges`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterator

from edgetl import log
from edgetl.errors import RunFolderError
from edgetl.model import classifier as model
from edgetl.model import graph, keras_file
from edgetl.runfolder import FLOAT_MODEL, QAT_CARD, QAT_MODEL, QAT_SCHEME, load_card, sha256_file, verify_model_file
from edgetl.runtime.model_card import atomic_path

graph.keras()  # TF_USE_LEGACY_KERAS before TensorFlow loads
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
from tensorflow_model_optimization.python.core.quantization.keras import quant_ops, quantize_layout_transform  # noqa: E402
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (  # noqa: E402
    default_8bit_quantize_scheme,
    default_8bit_transforms,
)
from tensorflow_model_optimization.python.core.quantization.keras.graph_transformations import (  # noqa: E402
    model_transformer,
)

# The smallest conv input scale the bias floor allows for (MobileNetV2's smallest, its input's, is 2/255).
MIN_INPUT_SCALE = 1e-3

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
        return tf.quantization.fake_quant_with_min_max_vars_per_channel(
            inputs, -bound, bound, num_bits=8, narrow_range=True
        )

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
    """Quantize a folded conv's kernel (per channel) and, unless a ReLU follows, its output."""

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
    """Only the input quantizer: no BatchNorm is left to fuse, and Conv+ReLU would drop the kernel quantizer."""

    def apply(self, model: Any, layer_quantize_map: dict[str, Any]) -> Any:
        transforms = [default_8bit_transforms.InputLayerQuantize()]
        return model_transformer.ModelTransformer(
            model, transforms, set(layer_quantize_map), layer_quantize_map
        ).transform()


class FoldedScheme(default_8bit_quantize_scheme.Default8BitQuantizeScheme):  # type: ignore[misc]
    """tfmot's default 8-bit scheme with the input-only layout transform."""

    def get_layout_transformer(self) -> Any:
        return InputOnlyTransform()


SCHEME_OBJECTS = {
    "KernelQuantizer": KernelQuantizer,
    "DepthwiseKernelQuantizer": DepthwiseKernelQuantizer,
    "FoldedConvConfig": FoldedConvConfig,
    "FoldedScheme": FoldedScheme,
}


def quantize(float_model: Any) -> Any:
    """Wrap ``float_model`` for QAT: BatchNorm folded, kernels per channel, all but unfolded BatchNorm trainable.

    The trainable flags are fixed here, before ``quantize_apply``, because the wrapped
    layers order their variables by them; ``load_qat`` relies on the same flags.
    """
    k = graph.keras()
    folded = graph.fold_batchnorm(float_model)
    for layer in folded.layers:
        layer.trainable = not isinstance(layer, k.layers.BatchNormalization)
    relu_fed = _relu_fed(folded)

    def annotate(layer: Any) -> Any:
        if type(layer).__name__ in graph.CONV_CLASSES:
            return qk.quantize_annotate_layer(layer, FoldedConvConfig(layer.name not in relu_fed))
        return qk.quantize_annotate_layer(layer)

    annotated = k.models.clone_model(folded, clone_function=annotate)
    with qk.quantize_scope(SCHEME_OBJECTS):
        return qk.quantize_apply(annotated, FoldedScheme())


def _relu_fed(model: Any) -> set[str]:
    """Names of the layers whose every consumer is a ReLU (no fake-quant goes between them)."""
    return {name for name, kinds in graph.consumers(model.get_config()).items() if set(kinds) == {"ReLU"}}


def save_qat(quantized: Any, path: Path) -> Path:
    """Save a QAT model under ``quantize_scope``, atomically (a temporary ``.keras`` beside ``path``, renamed)."""
    with atomic_path(path, suffix=".keras") as tmp, log.quiet_native(), qk.quantize_scope():
        quantized.save(str(tmp))
    return path


def load_qat(run: Path) -> Any:
    """The QAT Keras model of a run: ``model.keras``'s graph, wrapped, with ``model_qat.keras``'s weights.

    Raises:
        RunFolderError: no QAT model, or ``model.keras`` changed since QAT.
    """
    run = Path(run)
    if not (run / QAT_MODEL).is_file() or not (run / QAT_CARD).is_file():
        raise RunFolderError(
            f"{run} has no {QAT_MODEL}; run `edgetl qat {run}` first, or leave qat_int8 out of --variants"
        )
    card = load_card(run / QAT_CARD)
    verify_model_file(card, run / QAT_MODEL)
    if card.extra.get("qat", {}).get("scheme") != QAT_SCHEME:
        raise RunFolderError(
            f"{run}/{QAT_MODEL} was made by an older edgetl (BatchNorm not folded); run `edgetl qat {run}` again"
        )
    source = card.extra.get("source", {}).get("sha256")
    if source != sha256_file(run / FLOAT_MODEL):
        raise RunFolderError(f"{run}/{FLOAT_MODEL} changed after QAT; run `edgetl qat {run}` again")

    keras_file.check(run / QAT_MODEL)  # only its weights are read, but it is refused like any other foreign model
    with log.quiet_native(), qk.quantize_scope():
        quantized = quantize(model.load(str(run / FLOAT_MODEL)))
        quantized.load_weights(str(run / QAT_MODEL))
    return quantized


@contextlib.contextmanager
def running_mean_ranges() -> Iterator[Callable[[int], None]]:
    """While open, tfmot's activation ranges follow the running mean of the batches seen.

    tfmot moves each range with an EMA of decay 0.999 (private ``quant_ops.MovingAvgQuantize``,
    tfmot 0.8.1); the yielded function sets the step ``i`` so that the decay is i/(i+1).
    """
    original = quant_ops.MovingAvgQuantize
    step = {"i": 0}

    def running_mean(*args: Any, **kwargs: Any) -> Any:
        kwargs["ema_decay"] = step["i"] / (step["i"] + 1)
        return original(*args, **kwargs)

    quant_ops.MovingAvgQuantize = running_mean
    try:
        yield lambda i: step.__setitem__("i", i)
    finally:
        quant_ops.MovingAvgQuantize = original
