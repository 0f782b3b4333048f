"""Calibrated weight rounding for full-integer int8: GPTQ + bias correction on a simulated int8 graph.

The converter rounds every weight to its nearest int8 step. On MobileNetV2 that
alone moves top-1 of one image in twenty (folded BatchNorm leaves some
depthwise channels with a few large taps and many tiny ones), and activation
rounding adds a systematic shift on top. This stage picks the int8 weights
before the converter sees them, layer by layer in graph order, so that each
layer's output on the calibration images stays close to the float one:

- GPTQ (Frantar et al., 2022): round one input column at a time and spread the
  error over the columns not yet rounded, weighted by the layer's input
  second moments (computed on the *simulated int8* inputs, so earlier layers'
  rounding is taken into account);
- bias correction: shift each output channel's bias by the mean difference
  between the float layer on float inputs and the rounded layer on int8 inputs.

The int8 simulation quantizes every tensor the TFLite graph materialises (the
input, fused conv+ReLU outputs, linear conv outputs, adds, the pooled features,
the logits) with the converter's asymmetric per-tensor scheme over the
calibration min/max. Weights land exactly on the converter's per-channel grid
(``scale = max|w| / 127`` with each channel's largest weight kept at ±127), so
the converter recomputes the same scales and writes these integers unchanged.
Works on a BatchNorm-folded flat functional graph (:func:`edgetl.model.graph.fold_batchnorm`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Optional

import numpy as np
from edgetl.model import graph

WEIGHTED = graph.WEIGHTED_CLASSES
PASS_THROUGH = ("ZeroPadding2D", "Dropout", "Flatten", "Reshape")  # no new scale in TFLite
DAMPING = 0.01  # of the mean Hessian diagonal, as in GPTQ
CHUNK_BYTES = 256 << 20  # patch matrices are built this many bytes at a time
TENSOR_BYTES = 1 << 30  # the largest activation of the calibration batch, per stream (float and int8)
QMAX = 127
HALF_UP = 0.5 + 1e-3
SOFTMAX_RANGE = (0.0, 255 / 256)  # TFLite's fixed softmax output: scale 1/256, zero point -128


@dataclasses.dataclass(frozen=True)
class RoundingReport:
    """What the rounding did, for the int8 card."""

    method: str
    images: int
    layers: int
    seconds: float
    sim_agreement: float  # top-1 agreement of the simulated int8 graph with float on the calibration images

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def round_weights(
    model: Any,
    images: np.ndarray,
    ranges: Optional[dict[str, tuple[float, float]]] = None,
    keep_float: tuple[str, ...] = (),
) -> RoundingReport:
    """Replace ``model``'s Conv2D/DepthwiseConv2D/Dense weights and biases in place with int8-grid ones.

    Args:
        model: a BatchNorm-folded functional Keras model (changed in place).
        images: the calibration batch, normalised as the model expects, (N, H, W, 3) float32.
        ranges: layer name -> (min, max) of its output as the converter calibrated it
            (the converter widens some, e.g. an add's inputs to the add's range); layers
            missing here are calibrated on ``images``.
        keep_float: layers the int8 model computes in float (``--keep-float``): their weights
            stay the float ones (GPTQ's would be set for int8 inputs of theirs), and the layers
            after them are rounded for the graph as it will run, float layers included.
    """
    started = time.monotonic()
    y_f, y_q = _walk(model, images, dict(ranges or {}), keep_float=tuple(keep_float))
    agreement = float((y_f.argmax(-1) == y_q.argmax(-1)).mean())
    layers = sum(1 for layer in model.layers if layer.__class__.__name__ in WEIGHTED)
    return RoundingReport("gptq", len(images), layers, round(time.monotonic() - started, 1), round(agreement, 4))


def image_budget(model: Any, available: int) -> int:
    """How many calibration images the rounding uses: all, unless the largest activation would pass TENSOR_BYTES.

    Every tensor of the batch is held in memory (twice: float and int8), so at
    224 px (112x112x96 floats per image) this is about 200 images.
    """
    largest = max(int(np.prod(layer.output.shape[1:])) for layer in model.layers) * 4
    return max(1, min(available, TENSOR_BYTES // largest))


def simulate(model: Any, images: np.ndarray, ranges: dict[str, tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """The float outputs of ``model`` on ``images`` and those of its simulated int8 graph.

    ``ranges`` holds each quantized tensor's (min, max); tensors missing from it
    are calibrated on ``images`` and added, so an empty dict calibrates.
    """
    return _walk(model, images, ranges, rounding=False)


def _walk(
    model: Any,
    images: np.ndarray,
    ranges: dict[str, tuple[float, float]],
    rounding: bool = True,
    keep_float: tuple[str, ...] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Run the float and the simulated int8 graph side by side in graph order, rounding each weighted layer.

    A ``keep_float`` layer keeps its weights and its output is not quantized for float
    readers; an int8 reader gets it quantized (the converter puts a QUANTIZE op there).
    """
    config = model.get_config()
    consumers = graph.consumers(config)
    floating = float_layers(config, keep_float)
    float_out: dict[str, np.ndarray] = {}
    int8_out: dict[str, np.ndarray] = {}
    keys: dict[str, str] = {}
    pending = {name: len(kinds) for name, kinds in consumers.items()}

    def read(source: str, reader: str) -> np.ndarray:
        if source in floating and reader not in floating and keys.get(source):
            return fake_quant(int8_out[source], keys[source], ranges)
        return int8_out[source]

    for spec in config["layers"]:
        name, kind = spec["name"], spec["class_name"]
        layer = model.get_layer(name)
        sources = [ref[0] for node in spec["inbound_nodes"] for ref in node]
        if kind == "InputLayer":
            x_f = images.astype(np.float32)
            x_q = x_f
        elif kind in WEIGHTED and name in floating:
            x_f, x_q = _call(layer, [float_out[sources[0]]]), _call(layer, [read(sources[0], name)])
        elif kind in WEIGHTED:
            x_f, x_q = _weighted(layer, kind, float_out[sources[0]], read(sources[0], name), ranges, rounding)
        else:
            x_f = _call(layer, [float_out[s] for s in sources])
            x_q = _call(layer, [read(s, name) for s in sources])
        key = name  # a Dense with an activation has two TFLite tensors: ``name`` (logits, see _weighted) and this one
        activation = spec["config"].get("activation", "linear")
        if kind == "Dense" and activation != "linear":
            key = f"{name}:{activation}"
            if activation == "softmax":
                ranges.setdefault(key, SOFTMAX_RANGE)
                floating.discard(name)  # the converter keeps the softmax int8 (scale 1/256) whatever is denylisted
        quantized = kind not in PASS_THROUGH and set(consumers.get(name, [])) != {"ReLU"}
        if quantized and name in floating:
            keys[name] = key  # quantized by its int8 readers only
        elif quantized:
            x_q = fake_quant(x_q, key, ranges)
        for s in sources:
            pending[s] -= 1
            if pending[s] == 0:
                float_out.pop(s), int8_out.pop(s)
        float_out[name], int8_out[name] = x_f, x_q
    last = config["output_layers"][0][0]
    return float_out[last], int8_out[last]


def float_layers(config: dict[str, Any], keep_float: tuple[str, ...]) -> set[str]:
    """The layers of a folded functional ``config`` that compute in float when ``keep_float`` are denylisted.

    The converter fuses a conv with the ReLU that reads it into one op named after both,
    so naming either keeps both in float; pass-through layers (padding) follow their source.
    """
    keep = set(keep_float)
    if not keep:
        return set()
    layers = {spec["name"]: spec for spec in config["layers"]}
    sources = {name: [ref[0] for node in spec["inbound_nodes"] for ref in node] for name, spec in layers.items()}
    readers: dict[str, list[str]] = {}
    for name, froms in sources.items():
        for source in froms:
            readers.setdefault(source, []).append(name)
    floating = {name for name in keep if name in layers}
    for name in list(floating):
        spec = layers[name]
        if spec["class_name"] == "ReLU" and len(sources[name]) == 1:
            source = sources[name][0]
            if layers[source]["class_name"] in WEIGHTED and len(readers.get(source, [])) == 1:
                floating.add(source)
    for name in list(floating):
        if layers[name]["class_name"] in WEIGHTED:
            floating.update(r for r in readers.get(name, []) if layers[r]["class_name"] == "ReLU")
    return floating


def fake_quant(x: np.ndarray, name: str, ranges: dict[str, tuple[float, float]]) -> np.ndarray:
    """``x`` through the converter's int8 activation scheme: asymmetric, per tensor, over its calibrated min/max.

    The range always holds 0 and the zero point is rounded half away from zero,
    as TFLite's nudging does (so [-1, 1] gets zero point -1, the uint8 input's 127).
    Halves round up, with a margin for float error: normalised pixels sit exactly
    on half steps, and the device reads pixel p as step p - 128.
    """
    if name not in ranges:
        ranges[name] = (min(float(x.min()), 0.0), max(float(x.max()), 0.0))
    lo, hi = ranges[name]
    if hi == lo:
        return x
    scale = (hi - lo) / 255
    zero = -128 - lo / scale
    zero = float(np.clip(np.sign(zero) * np.floor(abs(zero) + 0.5), -128, 127))
    q = np.clip(np.floor(x / scale + HALF_UP) + zero, -128, 127)
    return ((q - zero) * scale).astype(np.float32)


def _call(layer: Any, inputs: list[np.ndarray]) -> np.ndarray:
    return np.asarray(layer(inputs if len(inputs) > 1 else inputs[0], training=False))


def _weighted(
    layer: Any, kind: str, x_f: np.ndarray, x_q: np.ndarray, ranges: dict[str, tuple[float, float]], rounding: bool
) -> tuple[np.ndarray, np.ndarray]:
    """One weighted layer, rounded when ``rounding``: its float output (original weights) and its int8-graph output."""
    import tensorflow as tf

    weights = layer.get_weights()
    activation = layer.activation
    layer.activation = _linear
    try:
        y_f = _call(layer, [x_f])
        if rounding:
            hessian = _input_hessian(layer, kind, x_q)
            weights[0] = _unrows(gptq(_rows(weights[0], kind), hessian), kind, weights[0].shape)
            layer.set_weights(weights)
        y_q = _call(layer, [x_q])
        if rounding and len(weights) > 1:  # bias correction: match the float layer's per-channel mean
            axes = tuple(range(y_f.ndim - 1))
            shift = (y_f.mean(axis=axes) - y_q.mean(axis=axes)).astype(np.float32)
            weights[1] = weights[1] + shift
            layer.set_weights(weights)
            y_q = y_q + shift
    finally:
        layer.activation = activation
    if kind == "Dense" and layer.get_config().get("activation", "linear") != "linear":
        y_q = fake_quant(
            y_q, layer.name, ranges
        )  # the logits are a TFLite tensor of their own; the activation reads them
    return np.asarray(activation(tf.constant(y_f))), np.asarray(activation(tf.constant(y_q)))


def _linear(x: Any) -> Any:
    return x


def _input_hessian(layer: Any, kind: str, x: np.ndarray) -> np.ndarray:
    """Per group (1, or each channel of a depthwise conv): E[p pᵀ] over every input patch p."""
    import tensorflow as tf

    per_image = max(1, x[0].size * (layer.kernel_size[0] * layer.kernel_size[1] if kind != "Dense" else 1) * 4)
    step = max(1, CHUNK_BYTES // per_image)
    hessian: Optional[np.ndarray] = None
    count = 0
    for start in range(0, len(x), step):
        chunk = x[start : start + step]
        if kind == "Dense":
            p = chunk.reshape(1, -1, chunk.shape[-1])
        else:
            kh, kw = layer.kernel_size
            sh, sw = layer.strides
            channels = chunk.shape[-1]
            if (kh, kw, sh, sw) == (1, 1, 1, 1):
                flat = chunk.reshape(-1, channels)
            else:
                padding = "SAME" if layer.padding == "same" else "VALID"
                flat = tf.image.extract_patches(chunk, [1, kh, kw, 1], [1, sh, sw, 1], [1, 1, 1, 1], padding).numpy()
                flat = flat.reshape(-1, kh * kw * channels)  # (kh, kw, c) order, the kernel's
            p = flat[None] if kind == "Conv2D" else flat.reshape(-1, kh * kw, channels).transpose(2, 0, 1)
        p = np.ascontiguousarray(p, dtype=np.float32)
        h = np.matmul(p.transpose(0, 2, 1), p).astype(np.float64)  # BLAS in float32, summed across chunks in float64
        hessian = h if hessian is None else hessian + h
        count += p.shape[1]
    return hessian / count  # type: ignore[operator]


def _rows(kernel: np.ndarray, kind: str) -> np.ndarray:
    """The kernel as (groups, output rows, inputs): one row per output channel, inputs in patch order."""
    if kind == "Dense":
        return kernel.T[None]
    if kind == "Conv2D":
        return kernel.reshape(-1, kernel.shape[-1]).T[None]
    kh, kw, channels, multiplier = kernel.shape
    return kernel.reshape(kh * kw, channels, multiplier).transpose(1, 2, 0)


def _unrows(rows: np.ndarray, kind: str, shape: tuple[int, ...]) -> np.ndarray:
    if kind == "Dense":
        return rows[0].T.astype(np.float32)
    if kind == "Conv2D":
        return rows[0].T.reshape(shape).astype(np.float32)
    return rows.transpose(2, 0, 1).reshape(shape).astype(np.float32)


def gptq(w: np.ndarray, hessian: np.ndarray, damping: float = DAMPING) -> np.ndarray:
    """GPTQ rounding of ``w`` (groups, rows, inputs) onto its per-row symmetric int8 grid.

    Each row's largest weight is pinned to ±127 steps so the row's scale, which the
    converter recomputes as max|w| / 127, is the one rounded to.
    """
    w = w.astype(np.float64).copy()
    groups, rows, inputs = w.shape
    scale = np.abs(w).max(axis=2) / QMAX
    scale[scale == 0] = 1.0
    pinned = np.zeros(w.shape, dtype=bool)
    np.put_along_axis(pinned, np.abs(w).argmax(axis=2)[..., None], True, axis=2)
    h = hessian.astype(np.float64).copy()
    diag = np.einsum("gii->gi", h)
    for g in range(groups):
        dead = diag[g] == 0
        h[g][dead, dead] = 1.0
    h += damping * np.einsum("gii->g", h)[:, None, None] / inputs * np.eye(inputs)[None]
    upper = np.linalg.cholesky(np.linalg.inv(h)).transpose(0, 2, 1)
    q = np.zeros_like(w)
    for j in range(inputs):
        column = w[:, :, j]
        q[:, :, j] = np.clip(np.round(column / scale), -QMAX, QMAX) * scale
        error = (column - q[:, :, j]) / upper[:, j, j][:, None]
        update = error[:, :, None] * upper[:, None, j, j + 1 :]
        update[pinned[:, :, j + 1 :]] = 0.0
        w[:, :, j + 1 :] -= update
    return q
