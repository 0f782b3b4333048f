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

from edgetl.runtime.model_card import ModelCard, TensorSpec, read_json, sha256_file, write_bytes_atomic, write_json_atomic
from edgetl.runtime.preprocess import normalize
from edgetl import data as data_mod
from edgetl import checkpoint, feed, log, report
from edgetl import model as model_mod
from edgetl.config import MixedPrecision, Strategy, TrainConfig
from edgetl.errors import ConfigError, RunFolderError



def stage_count(config: TrainConfig) -> int:
    """Stages that run: read, decode, build, head, [fine-tune], evaluate (no gap when one is skipped)."""
    return 5 + int(config.fine_tune_epochs > 0)


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


def partial_dir(run: Path) -> Path:
    """Where a run is assembled (and checkpointed) until it is complete."""
    run = Path(run)
    return run.parent / f".{run.name}.partial"


def train(config: TrainConfig, resume: bool = False) -> TrainResult:
    """Train a classifier as ``config`` says and write its run folder.

    The run is built in a hidden ``.RUN.partial`` folder, checkpointed every epoch,
    and renamed to RUN when complete. Ctrl-C or a kill leaves the partial folder,
    which ``resume=True`` continues from the last completed epoch.

    Raises:
        DataError, WeightsError, ConfigError, RunFolderError: bad input, each with its fix.
    """
    started = time.monotonic()
    final = Path(config.output)
    work = partial_dir(final)
    if resume and not (work / "config.json").exists():
        raise RunFolderError(f"nothing to resume at {final}: no interrupted run ({work.name}) beside it")
    if not resume:
        check_output(final)
        if work.exists():
            raise RunFolderError(f"an interrupted run of {final} exists; continue it with `edgetl train --resume {final}` or remove {work}")
        work.mkdir(parents=True)
        write_json_atomic(work / "config.json", config.to_dict())
    try:
        metrics = _train_into(config, work)
    except KeyboardInterrupt:
        log.warn(f"interrupted; the last completed epoch is saved: continue with `edgetl train --resume {final}`")
        raise
    except BaseException:
        if not (work / "checkpoint" / "state.json").exists():
            shutil.rmtree(work, ignore_errors=True)  # nothing trained yet: nothing worth keeping
        raise
    shutil.rmtree(work / "checkpoint", ignore_errors=True)
    if final.exists():
        final.rmdir()
    os.replace(work, final)
    return TrainResult(final, metrics, time.monotonic() - started)


def check_output(final: Path) -> None:
    """Refuse an ``--output`` the finished run could not be renamed to, before any training.

    The run folder must be new, or an empty real folder that is not the working
    directory (renaming over ``.`` or through a symlink fails after training);
    its parent must be a folder this process can write in.

    Raises:
        ConfigError: a file, a path under a file, a symlink, ``.``, a non-empty or unwritable place.
    """
    fix = "choose another --output (a new folder)"
    if final.is_symlink():
        raise ConfigError(f"--output {final} is a symlink; pass the folder it points to, or {fix}")
    if final.exists() and not final.is_dir():
        raise ConfigError(f"--output {final} is a file; {fix}")
    if final.is_dir() and (final.resolve() == Path.cwd().resolve() or any(final.iterdir())):
        what = "is the current directory" if final.resolve() == Path.cwd().resolve() else "already exists and is not empty"
        raise ConfigError(f"--output {final} {what}; {fix}")
    parent = Path(os.path.abspath(final)).parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"--output {final} lies under {parent}, which is a file; {fix}")
    try:  # a real probe: os.access says yes to root on a read-only mount
        tempfile.TemporaryDirectory(prefix=".edgetl-probe-", dir=parent).cleanup()
    except OSError as exc:
        raise ConfigError(f"--output {final}: cannot write in {parent} ({exc.strerror or exc}); {fix}") from None


def resume_config(run: Path) -> TrainConfig:
    """The config an interrupted run was started with."""
    path = partial_dir(run) / "config.json"
    data = read_json(path)
    if data is None:
        raise RunFolderError(f"nothing to resume at {run}: no interrupted run ({path.parent.name}) beside it")
    return TrainConfig.from_dict(data)


def _train_into(config: TrainConfig, work: Path) -> dict[str, Any]:
    log.stage(1, stage_count(config), f"reading {config.data}")
    dataset = data_mod.discover(config.data, config.allow_outside_root)
    splits = data_mod.split(dataset, config.val_fraction, config.test_fraction, config.seed, config.max_per_class)
    log.info(data_mod.describe(splits, dataset.class_names))
    log.stage(2, stage_count(config), f"decoding images at {config.image_size}px")
    pixels, skipped = _decode(dataset, splits, config.image_size)
    data_mod.write_splits(work, dataset, splits, skipped)
    tf, strategy, policy = _runtime(config)
    log.stage(3, stage_count(config), f"building MobileNetV2 alpha={config.alpha} ({policy}, {strategy.num_replicas_in_sync} replica(s))")
    state = checkpoint.State(work / "checkpoint")
    with strategy.scope():
        built = model_mod.build(config, len(dataset.class_names))
        history = [_timed(_head_phase, config, built, pixels, state)]
        if config.fine_tune_epochs:
            history.append(_timed(_fine_tune_phase, config, built, pixels, state))
    if policy != "float32":
        built = _to_float32(config, built, len(dataset.class_names))
    log.stage(stage_count(config), stage_count(config), "evaluating and writing the run folder")
    metrics = _evaluate(built, pixels, dataset.class_names)
    metrics["skipped"] = len(skipped)
    _write_run(config, work, built, dataset.class_names, history, metrics, tf, policy)
    return metrics


def _timed(phase: Any, config: TrainConfig, built: model_mod.BuiltModel, px: "Splits", state: checkpoint.State) -> dict[str, Any]:
    """Run a training phase and record its wall time and training images per second."""
    start = time.monotonic()
    result = phase(config, built, px, state)
    seconds = time.monotonic() - start
    epochs = len(result["loss"])
    return {**result, "seconds": round(seconds, 3), "images_per_s": round(epochs * len(px.y["train"]) / seconds, 1)}


def _decode(dataset: data_mod.Dataset, splits: dict[str, list[data_mod.Item]], size: int) -> tuple[Splits, list[dict[str, str]]]:
    x, y, skipped = {}, {}, []
    for name in data_mod.SPLITS:
        x[name], kept, bad = dataset.pixels(splits[name], size, warn=False)
        y[name] = np.asarray([it.label for it in kept], dtype=np.int32)
        splits[name] = kept
        skipped += bad
    if skipped:
        log.warn(f"skipped {len(skipped)} unreadable image(s) (listed in data.json), e.g. {skipped[0]['reason']}")
    data_mod.check_readable(dataset, splits, skipped)
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


def _compile(model: Any, learning_rate: float) -> None:
    k = model_mod.keras()
    model.compile(k.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"])


def _fit(model: Any, state: checkpoint.State, phase: str, patience: int, *args: Any, **kwargs: Any) -> dict[str, list[float]]:
    """``model.fit`` from the phase's last checkpoint, early-stopping and checkpointing every epoch.

    Keras' progress bars go to stderr (stdout carries results). Returns the
    phase's whole history, epochs from before a resume included.
    """
    start = checkpoint.resume_point(model, state, phase)
    if start:
        log.info(f"resuming {phase} after epoch {start}")
    if state.phase(phase)["done"]:
        checkpoint.restore_best(model, state, phase)
    else:
        callback = checkpoint.make_callback(state, phase, patience)
        with contextlib.redirect_stdout(sys.stderr):
            model.fit(*args, initial_epoch=start, callbacks=[callback], verbose=0 if log.QUIET else (1 if sys.stderr.isatty() else 2), **kwargs)
    return dict(state.phase(phase)["history"])


def _head_phase(config: TrainConfig, built: model_mod.BuiltModel, px: Splits, state: checkpoint.State) -> dict[str, Any]:
    norm = built.normalization
    views = config.cache_views if config.augment else min(config.cache_views, 1)
    val = (normalize(px.x["val"], norm), px.y["val"])
    if views == 0:
        log.stage(4, stage_count(config), f"training the head for {config.epochs} epochs, backbone recomputed every epoch (uncached)")
        _compile(built.full, config.learning_rate)
        seq = feed.make_sequence(px.x["train"], px.y["train"], norm, config.batch_size, config.seed, config.augment)
        hist = _fit(built.full, state, "head", config.patience, seq, validation_data=val, epochs=config.epochs)
        return {"phase": "head (uncached)", **hist}
    log.stage(4, stage_count(config), f"training the head for {config.epochs} epochs on cached features ({views} view(s) per image)")
    start = time.monotonic()
    feats = [feed.predict(built.features, v, norm, config.batch_size) for v in feed.augmented_views(px.x["train"], views, config.seed)]
    train_x, train_y = np.concatenate(feats), np.tile(px.y["train"], views)
    val_x = feed.predict(built.features, px.x["val"], norm, config.batch_size)
    log.info(f"backbone features for {len(train_x) + len(val_x)} images in {time.monotonic() - start:.1f}s")
    _compile(built.head, config.learning_rate)
    hist = _fit(built.head, state, "head", config.patience, train_x, train_y, validation_data=(val_x, val[1]),
                epochs=config.epochs, batch_size=config.batch_size, shuffle=True)  # fmt: skip
    model_mod.copy_head_weights(built.head, built.full)
    return {"phase": "head (cached features)", "views": views, **hist}


def _fine_tune_phase(config: TrainConfig, built: model_mod.BuiltModel, px: Splits, state: checkpoint.State) -> dict[str, Any]:
    trainable = model_mod.unfreeze_top(built, config.fine_tune_layers)
    log.stage(
        5, stage_count(config), f"fine-tuning the top {config.fine_tune_layers} layers ({trainable} with weights, BatchNorm frozen) "
        f"for {config.fine_tune_epochs} epochs at lr {config.fine_tune_learning_rate:g}",
    )  # fmt: skip
    _compile(built.full, config.fine_tune_learning_rate)  # recompile: trainable flags changed
    norm = built.normalization
    seq = feed.make_sequence(px.x["train"], px.y["train"], norm, config.batch_size, config.seed, config.augment)
    val = (normalize(px.x["val"], norm), px.y["val"])
    hist = _fit(built.full, state, "fine_tune", config.patience, seq, validation_data=val, epochs=config.fine_tune_epochs)
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

    import edgetl  # noqa: PLC0415

    return {
        "edgetl": edgetl.__version__, "tensorflow": tf.__version__, "tf_keras": model_mod.keras().__version__,
        "numpy": np.__version__, "opencv": cv2.__version__, "python": sys.version.split()[0],
    }  # fmt: skip


def _write_run(config: TrainConfig, work: Path, built: model_mod.BuiltModel, class_names: list[str],
               history: list[dict[str, Any]], metrics: dict[str, Any], tf: Any, policy: str) -> None:  # fmt: skip
    model_path = work / "model.keras"
    built.full.save(str(model_path))
    write_bytes_atomic(work / "labels.txt", ("\n".join(class_names) + "\n").encode("utf-8"))
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
