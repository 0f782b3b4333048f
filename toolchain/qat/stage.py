"""``edgetl qat``: quantization-aware fine-tuning of a trained run.

The flat tf_keras graph of ``RUN/model.keras`` is rewritten with every frozen
BatchNorm folded into its conv, then wrapped by tfmot's ``quantize_apply`` with
fake quantization laid out as TFLite will run it (kernels per output channel,
no fake-quant between a conv and its ReLU6), and a short low-learning-rate
fine-tune on the train split (early stopping on val, best weights restored)
lets the weights adapt to int8 rounding. The result is ``RUN/model_qat.keras`` plus its card
``RUN/model_qat.json``; ``edgetl convert`` turns it into ``model_qat_int8.tflite``.

The fine-tune is distilled from the float model by default (``distill`` = 1: the
loss is the cross-entropy to ``model.keras``'s probabilities on the same
augmented batch). QAT's job is to make int8 behave like the float model the user
trained and gated; trained on the labels instead, it keeps learning where the
float model stopped and trades accuracy between classes (on the CI recipe: 1.7
pt better overall, one class 5 pt worse, which the parity gate fails).

The fake-quantization scheme, the wrapper and the loader of a saved QAT model
live in :mod:`edgetl.model.qat_scheme` (convert loads QAT models too); BatchNorm
folding is graph surgery shared with the int8 rounding (:mod:`edgetl.model.graph`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from edgetl import data as data_mod
from edgetl import log, runfolder, runreport
from edgetl import metrics as report
from edgetl.config import MixedPrecision, QatConfig
from edgetl.data import feed, pipeline, pixels
from edgetl.errors import RunFolderError
from edgetl.model import classifier, graph
from edgetl.runfolder import FLOAT_MODEL, QAT_CARD, QAT_MODEL, QAT_SCHEME, ModelCard, read_json, sha256_file

STAGES = 4
RANGE_BATCHES = 8


@dataclasses.dataclass
class QatResult:
    """Where the QAT model went and how well it does (fake-quantized, in Keras)."""

    model_path: Path
    card_path: Path
    metrics: dict[str, Any]
    float_metrics: dict[str, Any]
    seconds: float


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
    card = runfolder.float_card(run)
    check_qat_backbone(card)
    runfolder.verify_model_file(card, run / FLOAT_MODEL)
    trained = read_json(run / runfolder.CONFIG) or {}
    seed = config.seed if config.seed is not None else int(trained.get("seed", 42))
    log.stage(1, STAGES, "the train, val and test splits from the pixel cache (decoded once)")
    # The run's own pixel cache, unless the run came from elsewhere (--data-root): its config does not pick folders here.
    cache_dir = trained.get("cache_dir") if config.data_root is None else None
    splits = _splits(run, card, cache_dir if isinstance(cache_dir, str) else None, config.data_root)
    log.stage(2, STAGES, "folding BatchNorm and wrapping the model with fake quantization (tfmot)")
    with log.quiet_native():
        k = graph.keras()
        from edgetl.model import qat_scheme  # imports TensorFlow and tfmot

        classifier.set_precision(MixedPrecision.OFF, False)
        k.utils.set_random_seed(seed)
        float_model = classifier.load(str(run / FLOAT_MODEL))
        quantized = qat_scheme.quantize(float_model)
        initialize_ranges(quantized, splits["train"].rows, card, seed)
    trainer = distiller(quantized, float_model, config.distill)
    trainer.compile(k.optimizers.Adam(config.learning_rate))
    teacher = f", distilled from model.keras ({config.distill:g})" if config.distill else ", on the labels"
    log.stage(3, STAGES, f"fine-tuning for up to {config.epochs} epoch(s) at lr {config.learning_rate:g}{teacher}")
    history = _fit(trainer, config, splits, card, seed)
    log.stage(4, STAGES, "evaluating and writing model_qat.keras")
    shape = (card.height, card.width, 3)
    metrics = {
        s: report.classification_metrics(
            pipeline.predict(quantized, _source(splits[s]), card.normalization, shape), splits[s].labels, card.labels
        )
        if len(splits[s].labels)
        else {"count": 0, "top1": None}  # a run trained with --test-fraction 0
        for s in ("val", "test")
    }
    for split in ("val", "test"):
        if metrics[split]["top1"] is None:
            continue
        log.info(
            f"QAT {split} top-1 {metrics[split]['top1']:.4f} (float {card.extra.get('metrics', {}).get(split, {}).get('top1', float('nan')):.4f})"
        )
    model_path = qat_scheme.save_qat(quantized, run / QAT_MODEL)
    qat_card = _card(card, run, model_path, config, history, metrics, seed)
    qat_card.save(run / QAT_CARD)
    runreport.refresh(run)  # results.csv gains the QAT epochs
    return QatResult(
        model_path, run / QAT_CARD, metrics, dict(card.extra.get("metrics", {})), time.monotonic() - started
    )


def initialize_ranges(
    quantized: Any,
    images: np.ndarray | pixels.Rows,
    card: ModelCard,
    seed: int,
    batches: int = RANGE_BATCHES,
    batch_size: int = 32,
) -> None:
    """Set every activation range to the mean of a few training batches' ranges.

    tfmot starts activation ranges at [-6, 6] and moves them with an EMA of decay
    0.999, which needs thousands of steps: a short fine-tune would clip wide
    activations (MobileNetV2's linear bottlenecks) for most of its epochs and end
    well below the float model. Running ``batches`` forward passes with the decay
    set to i/(i+1) makes each range the running mean of the batch ranges, as if
    calibrated, before training starts.
    """
    from edgetl.model.qat_scheme import running_mean_ranges  # TensorFlow and tfmot

    order = np.random.default_rng((seed, 7)).permutation(len(images))
    with running_mean_ranges() as at_step:
        for i in range(min(batches, max(1, len(images) // batch_size))):
            at_step(i)
            chosen = np.sort(order[i * batch_size : (i + 1) * batch_size])
            batch = images.take(chosen) if isinstance(images, pixels.Rows) else images[chosen]
            quantized(feed.normalize(batch, card.normalization), training=True)


def distiller(student: Any, teacher: Any, weight: float) -> Any:
    """A Keras model that trains ``student`` on ``weight`` x soft + (1 - weight) x hard cross-entropy.

    Soft: cross-entropy to ``teacher``'s probabilities on the same batch (the
    teacher runs in inference mode: no dropout, frozen BatchNorm; its weights never
    change); hard: to the labels. Both models end in softmax, so probabilities
    are compared directly (temperature 1: the aim is to match the teacher, not to
    transfer it to a smaller network). ``fit`` on the result updates ``student``
    in place; its weights are what early stopping restores.
    """
    import tensorflow as tf

    k = graph.keras()
    teacher.trainable = False

    class Distiller(k.Model):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.student, self.teacher = student, teacher
            self.loss_tracker = k.metrics.Mean(name="loss")
            self.accuracy = k.metrics.SparseCategoricalAccuracy(name="accuracy")

        @property
        def metrics(self) -> list[Any]:
            return [self.loss_tracker, self.accuracy]

        def call(self, x: Any, training: bool = False) -> Any:
            return self.student(x, training=training)

        def _loss(self, x: Any, y: Any, training: bool) -> tuple[Any, Any]:
            p = self.student(x, training=training)
            loss = (1.0 - weight) * k.losses.sparse_categorical_crossentropy(y, p) if weight < 1 else 0.0
            if weight > 0:
                loss += weight * k.losses.categorical_crossentropy(self.teacher(x, training=False), p)
            return tf.reduce_mean(loss), p

        def _update(self, loss: Any, y: Any, p: Any) -> dict[str, Any]:
            self.loss_tracker.update_state(loss)
            self.accuracy.update_state(y, p)
            return {m.name: m.result() for m in self.metrics}

        def train_step(self, data: Any) -> dict[str, Any]:
            x, y = data
            with tf.GradientTape() as tape:
                loss, p = self._loss(x, y, True)
            variables = self.student.trainable_variables
            self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return self._update(loss, y, p)

        def test_step(self, data: Any) -> dict[str, Any]:
            x, y = data
            loss, p = self._loss(x, y, False)
            return self._update(loss, y, p)

    return Distiller()


def _splits(run: Path, card: ModelCard, cache_dir: str | None, data_root: str | None) -> dict[str, pixels.Split]:
    """Each split's pixels in the on-disk cache, as ``edgetl train`` left them (decoded now if not).

    Streaming from the cache keeps QAT's memory flat in the dataset's size, like
    training's; the run's own ``cache_dir`` is used, so its entries are reused.
    """
    folder = Path(cache_dir).expanduser() if cache_dir else None
    splits = {}
    for name in data_mod.SPLITS:
        dataset, items = data_mod.load_split(run, name, data_root)
        splits[name] = pixels.load_split(dataset, items, card.height, card.interpolation, folder=folder, name=name)
    if not len(splits["train"].labels) or not len(splits["val"].labels):
        raise RunFolderError(f"{run}: no readable train or val images left for QAT; restore the run's data")
    return splits


def _source(split: pixels.Split) -> pipeline.Source:
    return pipeline.Source(split.rows, split.labels, np.arange(len(split.labels), dtype=np.int64))


def _fit(
    model: Any, config: QatConfig, splits: dict[str, pixels.Split], card: ModelCard, seed: int
) -> dict[str, list[float]]:
    """Fine-tune on batches streamed from the pixel cache, early stopping on val loss; epoch lines go to stderr.

    The batches (order and augmentation per epoch and batch index) are those
    ``edgetl train``'s pipeline draws for the same seed.
    """
    k = graph.keras()
    shape = (card.height, card.width, 3)
    train, val = _source(splits["train"]), _source(splits["val"])
    batch = config.batch_size
    prepare = pipeline.pixel_preparer(card.normalization, seed, config.augment)
    x = pipeline.training_batches(train, batch, seed, 0, config.epochs, prepare, shape)
    v = pipeline.ordered_batches(val, batch, pipeline.pixel_preparer(card.normalization, seed, False), shape)
    stop = k.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True)
    with contextlib.redirect_stdout(sys.stderr):
        hist = model.fit(
            x,
            steps_per_epoch=pipeline.steps(len(train), batch),
            validation_data=v,
            validation_steps=pipeline.steps(len(val), batch),
            epochs=config.epochs,
            callbacks=[stop],
            verbose=0 if log.QUIET else 2,
        )
    return {key: [float(v) for v in values] for key, values in hist.history.items()}


def _card(
    card: ModelCard,
    run: Path,
    model_path: Path,
    config: QatConfig,
    history: dict[str, list[float]],
    metrics: dict[str, Any],
    seed: int,
) -> ModelCard:
    import tensorflow as tf

    extra = {
        "backbone": card.extra.get("backbone", {}),
        "source": {"file": FLOAT_MODEL, "sha256": sha256_file(run / FLOAT_MODEL)},
        "qat": {
            "scheme": QAT_SCHEME,
            "epochs_run": len(history.get("loss", [])),
            "learning_rate": config.learning_rate,
            "seed": seed,
            "batch_size": config.batch_size,
            "augment": config.augment,
            "distill": config.distill,
            "history": history,
        },
        "metrics": {s: {"top1": metrics[s]["top1"], "count": metrics[s]["count"]} for s in ("val", "test")},
        "float_metrics": card.extra.get("metrics", {}),
        "versions": runfolder.versions(tf),
    }
    return card.replace(
        model_file=model_path.name, model_sha256=sha256_file(model_path), quantization="qat", extra=extra
    )
