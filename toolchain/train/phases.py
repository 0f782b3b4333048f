"""The two training phases and what they share: the head on cached backbone features, then the
optional fine-tune of the top layers (BatchNorm frozen), each early-stopped and checkpointed every
epoch, and the val split's decision whether the fine-tune is kept (``--keep-fine-tune``)."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from typing import Any

import numpy as np
from edgetl import log
from edgetl.config import KeepFineTune, TrainConfig
from edgetl.data import pipeline, pixels
from edgetl.model import classifier, graph
from edgetl.train import checkpoint, distribute


def stage_count(config: TrainConfig) -> int:
    """Stages that run: read, decode, build, head, [fine-tune], evaluate (no gap when one is skipped)."""
    return 5 + int(config.fine_tune_epochs > 0)


@dataclasses.dataclass
class Splits:
    """The three splits' pixels in the on-disk cache, and this worker's place in the cluster."""

    parts: dict[str, pixels.Split]
    worker: distribute.Worker

    def source(self, name: str, sharded: bool = True) -> pipeline.Source:
        """A split's rows this worker reads (``sharded``) or all of them."""
        part = self.parts[name]
        count = len(part.labels)
        indices = distribute.shard(count, self.worker) if sharded else np.arange(count, dtype=np.int64)
        return pipeline.Source(part.rows, part.labels, indices)

    @property
    def y(self) -> dict[str, np.ndarray]:
        return {name: part.labels for name, part in self.parts.items()}


@dataclasses.dataclass
class PhaseRun:
    """What a training phase works with."""

    config: TrainConfig
    built: classifier.BuiltModel
    px: Splits
    state: checkpoint.State
    strategy: Any

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.config.image_size, self.config.image_size, 3)

    @property
    def batch_size(self) -> int:
        """Batches each input pipeline yields: the global ``--batch-size`` split over a cluster's replicas."""
        if self.px.worker.count == 1:
            return self.config.batch_size
        return max(1, self.config.batch_size // self.strategy.num_replicas_in_sync)


def timed(phase: Any, run: PhaseRun) -> dict[str, Any]:
    """Run a training phase and record its wall time and training images per second."""
    start = time.monotonic()
    result = phase(run)
    seconds = time.monotonic() - start
    epochs = len(result["loss"])
    return {**result, "seconds": round(seconds, 3), "images_per_s": round(epochs * len(run.px.y["train"]) / seconds, 1)}


def compile_model(model: Any, learning_rate: float) -> None:
    k = graph.keras()
    model.compile(k.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"])


def fit(
    model: Any,
    run: PhaseRun,
    phase: str,
    epochs: int,
    train: pipeline.Source,
    val: pipeline.Source,
    prepare: Any,
    shape: tuple[int, ...],
) -> dict[str, list[float]]:
    """``model.fit`` on streamed batches from the phase's last checkpoint, early-stopping and checkpointing every epoch.

    Keras' progress bars go to stderr (stdout carries results). Returns the
    phase's whole history, epochs from before a resume included.
    """
    state = run.state
    start = checkpoint.resume_point(model, state, phase)
    if state.phase(phase)["done"]:
        checkpoint.restore_best(model, state, phase)
    start = distribute.follow_chief(run.strategy, run.px.worker, model, state.phase(phase), start)
    if start:
        log.info(f"resuming {phase} after epoch {start}")
    if state.phase(phase)["done"]:
        return dict(state.phase(phase)["history"])
    batch, worker, seed = run.batch_size, run.px.worker, run.config.seed
    x = distribute.distribute(
        run.strategy, worker, lambda: pipeline.training_batches(train, batch, seed, start, epochs, prepare, shape)
    )
    plain = (
        pipeline.as_float32
        if prepare is pipeline.as_float32
        else pipeline.pixel_preparer(run.built.normalization, seed, False)
    )
    v = distribute.distribute(run.strategy, worker, lambda: pipeline.ordered_batches(val, batch, plain, shape))
    where = f"{worker.name}: " if worker.count > 1 else ""  # the worker and its shard only when there are several
    shard = f" (input shard {worker.index + 1}/{worker.count})" if worker.count > 1 else ""
    log.info(
        f"{where}{phase} on {len(train)} rows{shard}, {pipeline.steps(len(train), batch)} steps of {batch} per epoch"
    )
    callback = checkpoint.make_callback(state, phase, run.config.patience)
    with contextlib.redirect_stdout(sys.stderr):
        model.fit(
            x,
            steps_per_epoch=pipeline.steps(len(train), batch),
            validation_data=v,
            validation_steps=pipeline.steps(len(val), batch),
            epochs=epochs,
            initial_epoch=start,
            callbacks=[callback],
            verbose=0 if log.QUIET else (1 if sys.stderr.isatty() else 2),
        )
    return dict(state.phase(phase)["history"])


def head_phase(run: PhaseRun) -> dict[str, Any]:
    config, built, px = run.config, run.built, run.px
    views = config.cache_views if config.augment else min(config.cache_views, 1)
    train, val = px.source("train"), px.source("val")
    if views == 0:
        log.stage(
            4,
            stage_count(config),
            f"training the head for {config.epochs} epochs, backbone recomputed every epoch (uncached)",
        )
        compile_model(built.full, config.learning_rate)
        prepare = pipeline.pixel_preparer(built.normalization, config.seed, config.augment)
        hist = fit(built.full, run, "head", config.epochs, train, val, prepare, run.shape)
        return {"phase": "head (uncached)", **hist}
    log.stage(
        4,
        stage_count(config),
        f"training the head for {config.epochs} epochs on cached features ({views} view(s) per image)",
    )
    start = time.monotonic()
    folder = run.state.folder.parent / "features"
    train_f = pipeline.write_features(
        built.features, train, views, built.normalization, config.seed, run.shape, folder / "train.npy"
    )
    val_f = pipeline.write_features(
        built.features, val, 1, built.normalization, config.seed, run.shape, folder / "val.npy"
    )
    log.info(
        f"backbone features for {len(train_f) + len(val_f)} images in {time.monotonic() - start:.1f}s (float16, on disk)"
    )
    compile_model(built.head, config.learning_rate)
    train_feats = pipeline.Source(train_f, np.tile(train.labels[train.indices], views), np.arange(len(train_f)))
    val_feats = pipeline.Source(val_f, val.labels[val.indices], np.arange(len(val_f)))
    hist = fit(built.head, run, "head", config.epochs, train_feats, val_feats, pipeline.as_float32, (train_f.shape[1],))
    classifier.copy_head_weights(built.head, built.full)
    return {"phase": "head (cached features)", "views": views, **hist}


def fine_tune_phase(run: PhaseRun) -> dict[str, Any]:
    config, built = run.config, run.built
    trainable = classifier.unfreeze_top(built, config.fine_tune_layers)
    log.stage(
        5,
        stage_count(config),
        f"fine-tuning the top {config.fine_tune_layers} layers ({trainable} with weights, BatchNorm frozen) "
        f"for {config.fine_tune_epochs} epochs at lr {config.fine_tune_learning_rate:g}",
    )
    compile_model(built.full, config.fine_tune_learning_rate)  # recompile: trainable flags changed
    prepare = pipeline.pixel_preparer(built.normalization, config.seed, config.augment)
    hist = fit(
        built.full,
        run,
        "fine_tune",
        config.fine_tune_epochs,
        run.px.source("train"),
        run.px.source("val"),
        prepare,
        run.shape,
    )
    return {"phase": "fine-tune", "trainable_layers": trainable, **hist}


def at_best(history: dict[str, Any]) -> dict[str, Any]:
    """A phase's epoch with the lowest val loss (the one early stopping restored) and its val figures."""
    best = int(np.argmin(history["val_loss"]))
    return {
        "epoch": best + 1,
        "val_loss": round(float(history["val_loss"][best]), 4),
        "val_top1": round(float(history["val_accuracy"][best]), 4),
    }


def keep_fine_tune(run: PhaseRun, head: dict[str, Any], fine: dict[str, Any]) -> dict[str, Any]:
    """Keep the fine-tuned model, or restore the head-only weights saved before it, as ``--keep-fine-tune`` says.

    ``if-better`` keeps it only when the val split says it helped: a lower val loss
    (the less noisy figure, the one each phase's epoch was chosen by) and a val top-1
    no lower than the head-only model's. On small or unlike data the fine-tune can
    fit the training images and lose on new ones; the head-only model is then the
    better guess. Returns the decision and the figures it was made on (history.json).
    """
    before, after = at_best(head), at_best(fine)
    helped = after["val_loss"] < before["val_loss"] and after["val_top1"] >= before["val_top1"]
    keep = helped or run.config.keep_fine_tune == KeepFineTune.ALWAYS
    if not keep:
        run.built.full.load_weights(str(run.state.weights("head_only", "full")))
    n = len(run.px.y["val"])
    log.info(
        f"fine-tune {'kept' if keep else 'dropped, head-only weights restored'}: val loss "
        f"{after['val_loss']:.4f} vs {before['val_loss']:.4f} head-only, val top-1 {100 * after['val_top1']:.2f}% vs "
        f"{100 * before['val_top1']:.2f}% on {n} images (--keep-fine-tune {run.config.keep_fine_tune.value})"
    )
    return {
        "kept": keep,
        "rule": run.config.keep_fine_tune.value,
        "helped_on_val": helped,
        "val_images": n,
        "head_only": before,
        "fine_tuned": after,
    }
