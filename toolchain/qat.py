"""``edgetl qat``: quantization-aware fine-tuning of a trained run.

tfmot's ``quantize_model`` wraps the flat tf_keras graph of ``RUN/model.keras``
with fake-quantization, and a short low-learning-rate fine-tune on the train
split (early stopping on val, best weights restored) lets the weights adapt to
int8 rounding. BatchNorm stays frozen (inference mode), as in training's
fine-tune phase. The result is ``RUN/model_qat.keras`` plus its card
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
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.model_card import CardError, ModelCard, load_card, read_json, sha256_file, verify_model_file
from toolchain import data as data_mod
from toolchain import feed, log, report
from toolchain import model as model_mod
from toolchain.config import MixedPrecision, QatConfig
from toolchain.errors import RunFolderError

STAGES = 4
QAT_MODEL = "model_qat.keras"
QAT_CARD = "model_qat.json"
RANGE_BATCHES = 8


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
    log.stage(2, STAGES, "wrapping the model with fake quantization (tfmot quantize_model)")
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
    """Wrap ``float_model`` for QAT: every layer trains except BatchNorm, which stays in inference mode.

    The trainable flags are fixed here, before ``quantize_model``, because the wrapped
    layers order their variables by them; ``load_qat`` relies on the same flags.
    """
    import tensorflow_model_optimization as tfmot  # noqa: PLC0415

    k = model_mod.keras()
    for layer in float_model.layers:
        layer.trainable = not isinstance(layer, k.layers.BatchNormalization)
    return tfmot.quantization.keras.quantize_model(float_model)


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
    source = card.extra.get("source", {}).get("sha256")
    if source != sha256_file(run / "model.keras"):
        raise RunFolderError(f"{run}/model.keras changed after QAT; run `edgetl qat {run}` again")
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

    from toolchain.train import versions  # noqa: PLC0415

    extra = {
        "backbone": card.extra.get("backbone", {}),
        "source": {"file": "model.keras", "sha256": sha256_file(run / "model.keras")},
        "qat": {"epochs_run": len(history.get("loss", [])), "learning_rate": config.learning_rate, "seed": seed,
                "batch_size": config.batch_size, "augment": config.augment, "history": history},
        "metrics": {s: {"top1": metrics[s]["top1"], "count": metrics[s]["count"]} for s in ("val", "test")},
        "float_metrics": card.extra.get("metrics", {}),
        "versions": versions(tf),
    }  # fmt: skip
    return card.replace(model_file=model_path.name, model_sha256=sha256_file(model_path), quantization="qat", extra=extra)
