"""``edgetl train``: transfer learning from ImageNet MobileNetV2 to a run folder.

Phase 1 trains only the head, on backbone features computed once (and, with
augmentation, on a few cached augmented views): the frozen backbone gives the
same features every epoch, so recomputing it, as the tutorials do, only burns
time. Phase 2 optionally fine-tunes the top layers, BatchNorm kept in inference
mode, at a low learning rate. Early stopping restores the best weights in both.
The run folder is assembled under a temporary name and renamed when complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.model_card import ModelCard, TensorSpec, sha256_file, write_bytes_atomic, write_json_atomic
from toolchain import data as data_mod
from toolchain import feed, log, report
from toolchain import model as model_mod
from toolchain.config import MixedPrecision, Strategy, TrainConfig
from toolchain.errors import ConfigError, RunFolderError

STAGES = 6


@dataclasses.dataclass
class TrainResult:
    """Where the run went and how well it did."""

    run_dir: Path
    metrics: dict[str, Any]
    seconds: float


@dataclasses.dataclass
class Splits:
    """Decoded pixels and labels of the three splits."""

    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]


def train(config: TrainConfig) -> TrainResult:
    """Train a classifier as ``config`` says and write its run folder.

    Raises:
        DataError, WeightsError, ConfigError, RunFolderError: bad input, each with its fix.
    """
    started = time.monotonic()
    final = Path(config.output)
    if final.exists() and any(final.iterdir()):
        raise RunFolderError(f"{final} already exists and is not empty; choose another --output or remove it")
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        metrics = _train_into(config, work)
        if final.exists():
            final.rmdir()
        os.replace(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return TrainResult(final, metrics, time.monotonic() - started)


def _train_into(config: TrainConfig, work: Path) -> dict[str, Any]:
    log.stage(1, STAGES, f"reading {config.data}")
    dataset = data_mod.discover(config.data, config.allow_outside_root)
    splits = data_mod.split(dataset, config.val_fraction, config.test_fraction, config.seed, config.max_per_class)
    log.info(data_mod.describe(splits, dataset.class_names))
    log.stage(2, STAGES, f"decoding images at {config.image_size}px")
    pixels, skipped = _decode(dataset, splits, config.image_size)
    data_mod.write_splits(work, dataset, splits, skipped)
    tf, strategy, policy = _runtime(config)
    log.stage(3, STAGES, f"building MobileNetV2 alpha={config.alpha} ({policy}, {strategy.num_replicas_in_sync} replica(s))")
    with strategy.scope():
        built = model_mod.build(config, len(dataset.class_names))
        history = [_timed(_head_phase, config, built, pixels)]
        if config.fine_tune_epochs:
            history.append(_timed(_fine_tune_phase, config, built, pixels))
    if policy != "float32":
        built = _to_float32(config, built, len(dataset.class_names))
    log.stage(6, STAGES, "evaluating and writing the run folder")
    metrics = _evaluate(built, pixels, dataset.class_names)
    metrics["skipped"] = len(skipped)
    _write_run(config, work, built, dataset.class_names, history, metrics, tf, policy)
    return metrics


def _timed(phase: Any, config: TrainConfig, built: model_mod.BuiltModel, px: "Splits") -> dict[str, Any]:
    """Run a training phase and record its wall time and training images per second."""
    start = time.monotonic()
    result = phase(config, built, px)
    seconds = time.monotonic() - start
    epochs = len(result["loss"])
    return {**result, "seconds": round(seconds, 3), "images_per_s": round(epochs * len(px.y["train"]) / seconds, 1)}


def _decode(dataset: data_mod.Dataset, splits: dict[str, list[data_mod.Item]], size: int) -> tuple[Splits, list[dict[str, str]]]:
    x, y, skipped = {}, {}, []
    for name in data_mod.SPLITS:
        x[name], kept, bad = dataset.pixels(splits[name], size)
        y[name] = np.asarray([it.label for it in kept], dtype=np.int32)
        splits[name] = kept
        skipped += bad
    if not len(x["train"]) or not len(x["val"]):
        raise ConfigError("no readable training or validation images left; check the data folder")
    return Splits(x, y), skipped


def _runtime(config: TrainConfig) -> tuple[Any, Any, str]:
    """TensorFlow, the distribution strategy and the dtype policy for this machine."""
    k = model_mod.keras()
    import tensorflow as tf  # noqa: PLC0415

    k.utils.set_random_seed(config.seed)
    gpus = tf.config.list_physical_devices("GPU")
    policy = model_mod.set_precision(config.mixed_precision, bool(gpus))
    if config.mixed_precision == MixedPrecision.FLOAT16 and not gpus:
        log.warn("float16 mixed precision without a GPU is slow; bfloat16 suits CPUs with AVX-512 BF16")
    if config.strategy == Strategy.MIRRORED or (config.strategy == Strategy.AUTO and len(gpus) > 1):
        strategy = tf.distribute.MirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    return tf, strategy, policy


def _early_stopping(patience: int) -> Any:
    return model_mod.keras().callbacks.EarlyStopping(
        monitor="val_loss", patience=patience, restore_best_weights=True, verbose=0
    )


def _compile(model: Any, learning_rate: float) -> None:
    k = model_mod.keras()
    model.compile(k.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"])


def _fit(model: Any, *args: Any, **kwargs: Any) -> dict[str, list[float]]:
    """``model.fit`` with Keras' progress bars sent to stderr (stdout carries results)."""
    with contextlib.redirect_stdout(sys.stderr):
        hist = model.fit(*args, verbose=0 if log.QUIET else (1 if sys.stderr.isatty() else 2), **kwargs)
    return {k: [float(v) for v in vs] for k, vs in hist.history.items()}


def _head_phase(config: TrainConfig, built: model_mod.BuiltModel, px: Splits) -> dict[str, Any]:
    norm = built.normalization
    views = config.cache_views if config.augment else min(config.cache_views, 1)
    if views == 0:
        log.stage(4, STAGES, f"training the head for {config.epochs} epochs, backbone recomputed every epoch (uncached)")
        _compile(built.full, config.learning_rate)
        seq = feed.make_sequence(px.x["train"], px.y["train"], norm, config.batch_size, config.seed, config.augment)
        val = (feed.normalize(px.x["val"], norm), px.y["val"])
        hist = _fit(built.full, seq, validation_data=val, epochs=config.epochs, callbacks=[_early_stopping(config.patience)])
        return {"phase": "head (uncached)", **hist}
    log.stage(4, STAGES, f"training the head for {config.epochs} epochs on cached features ({views} view(s) per image)")
    start = time.monotonic()
    feats = [feed.predict(built.features, v, norm, config.batch_size) for v in feed.augmented_views(px.x["train"], views, config.seed)]
    train_x = np.concatenate(feats)
    train_y = np.tile(px.y["train"], views)
    val_x = feed.predict(built.features, px.x["val"], norm, config.batch_size)
    log.info(f"backbone features for {len(train_x) + len(val_x)} images in {time.monotonic() - start:.1f}s")
    _compile(built.head, config.learning_rate)
    hist = _fit(
        built.head, train_x, train_y, validation_data=(val_x, px.y["val"]), epochs=config.epochs,
        batch_size=config.batch_size, shuffle=True, callbacks=[_early_stopping(config.patience)],
    )  # fmt: skip
    model_mod.copy_head_weights(built.head, built.full)
    return {"phase": "head (cached features)", "views": views, **hist}


def _fine_tune_phase(config: TrainConfig, built: model_mod.BuiltModel, px: Splits) -> dict[str, Any]:
    trainable = model_mod.unfreeze_top(built, config.fine_tune_layers)
    log.stage(
        5, STAGES, f"fine-tuning the top {config.fine_tune_layers} layers ({trainable} with weights, BatchNorm frozen) "
        f"for {config.fine_tune_epochs} epochs at lr {config.fine_tune_learning_rate:g}",
    )  # fmt: skip
    _compile(built.full, config.fine_tune_learning_rate)  # recompile: trainable flags changed
    norm = built.normalization
    seq = feed.make_sequence(px.x["train"], px.y["train"], norm, config.batch_size, config.seed, config.augment)
    val = (feed.normalize(px.x["val"], norm), px.y["val"])
    hist = _fit(built.full, seq, validation_data=val, epochs=config.fine_tune_epochs, callbacks=[_early_stopping(config.patience)])
    return {"phase": "fine-tune", "trainable_layers": trainable, **hist}


def _to_float32(config: TrainConfig, built: model_mod.BuiltModel, num_classes: int) -> model_mod.BuiltModel:
    """Rebuild the graph in float32 and copy the weights: the saved model is what TFLite converts."""
    model_mod.set_precision(MixedPrecision.OFF, False)
    plain = model_mod.build(dataclasses.replace(config, weights="none"), num_classes)
    plain.full.set_weights([np.asarray(w, dtype=np.float32) for w in built.full.get_weights()])
    plain.weights_info = built.weights_info
    return plain


def _evaluate(built: model_mod.BuiltModel, px: Splits, class_names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("val", "test"):
        probs = feed.predict(built.full, px.x[name], built.normalization)
        out[name] = report.classification_metrics(probs, px.y[name], class_names)
        log.info(f"{name} top-1 {out[name]['top1']:.4f} on {out[name]['count']} images")
    return out


def versions(tf: Any) -> dict[str, str]:
    import cv2  # noqa: PLC0415

    import toolchain  # noqa: PLC0415

    return {
        "edgetl": toolchain.__version__, "tensorflow": tf.__version__, "tf_keras": model_mod.keras().__version__,
        "numpy": np.__version__, "opencv": cv2.__version__, "python": sys.version.split()[0],
    }  # fmt: skip


def _write_run(config: TrainConfig, work: Path, built: model_mod.BuiltModel, class_names: list[str],
               history: list[dict[str, Any]], metrics: dict[str, Any], tf: Any, policy: str) -> None:  # fmt: skip
    model_path = work / "model.keras"
    built.full.save(str(model_path))
    write_bytes_atomic(work / "labels.txt", ("\n".join(class_names) + "\n").encode("utf-8"))
    write_json_atomic(work / "config.json", config.to_dict())
    write_json_atomic(work / "history.json", history)
    write_json_atomic(work / "metrics.json", metrics)
    report.plot_history(history, work / "learning_curves.png")
    report.plot_confusion(metrics["test"]["confusion"], class_names, f"test top-1 {metrics['test']['top1']:.3f}", work / "confusion_test.png")
    card = ModelCard(
        labels=tuple(class_names), height=config.image_size, width=config.image_size, model_file=model_path.name,
        model_sha256=sha256_file(model_path), quantization="keras", normalization=built.normalization,
        input=TensorSpec("float32"), output=TensorSpec("float32"),
        extra={
            "backbone": {"name": config.backbone, "alpha": config.alpha, **built.weights_info},
            "training": {"seed": config.seed, "precision": policy, "epochs_run": [len(h["loss"]) for h in history]},
            "metrics": {s: {"top1": metrics[s]["top1"], "count": metrics[s]["count"]} for s in ("val", "test")},
            "versions": versions(tf),
        },
    )  # fmt: skip
    card.save(work / "model_card.json")
