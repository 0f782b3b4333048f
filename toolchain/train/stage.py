"""``edgetl train``: transfer learning from ImageNet MobileNetV2 to a run folder.

Phase 1 trains only the head, on backbone features computed once (and, with
augmentation, on a few cached augmented views): the frozen backbone gives the
same features every epoch, so recomputing it, as the tutorials do, only burns
time. Phase 2 optionally fine-tunes the top layers, BatchNorm kept in inference
mode, at a low learning rate, and is kept only when the val split says it beat the
head alone (``--keep-fine-tune``). Early stopping restores the best weights in both.
The run folder is assembled under a temporary name and renamed when complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
from edgetl import data as data_mod
from edgetl import log, runfolder, runreport, untrusted
from edgetl import metrics as report
from edgetl.config import MixedPrecision, Strategy, TrainConfig
from edgetl.data import pipeline
from edgetl.data import pixels as cache
from edgetl.errors import RunFolderError
from edgetl.model import classifier, graph
from edgetl.runfolder import CONFIG, FLOAT_CARD, FLOAT_MODEL, read_json, sha256_file
from edgetl.runtime.model_card import ModelCard, TensorSpec, atomic_path, write_bytes_atomic, write_json_atomic
from edgetl.train import checkpoint, distribute
from edgetl.train.checkpoint import save_weights_atomic
from edgetl.train.phases import PhaseRun, Splits, fine_tune_phase, head_phase, keep_fine_tune, stage_count, timed


@dataclasses.dataclass
class TrainResult:
    """Where the run went and how well it did."""

    run_dir: Path
    metrics: dict[str, Any]
    seconds: float


def partial_dir(run: Path, worker: distribute.Worker = distribute.Worker()) -> Path:
    """Where a run is assembled (and checkpointed) until it is complete; other workers' own folders."""
    run = Path(run)
    return run.parent / (f".{run.name}.partial" if worker.chief else f".{run.name}.worker{worker.index}.partial")


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
    worker = distribute.worker_from_env(config.strategy)
    work = partial_dir(final, worker)
    if resume and not (work / CONFIG).exists():
        raise RunFolderError(f"nothing to resume at {final}: no interrupted run ({work.name}) beside it")
    created = None  # the first folder this run creates (a new --output's parents too), removed on early failure
    if not resume:
        if worker.chief:
            runfolder.check_output(final)
        runfolder.check_no_partial(final, work, worker.count)
        created = runfolder.first_missing(work)
        work.mkdir(parents=True)
        write_json_atomic(work / CONFIG, config.to_dict())
    try:
        metrics = _train_into(config, work, worker)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (the CLI turns it into the same)
        if (work / "checkpoint" / "state.json").exists():
            log.warn(
                f"interrupted; the last completed epoch is saved in {work}: continue with "
                f"`edgetl train --resume {final}`, or delete that folder to start over"
            )
        else:
            shutil.rmtree(work, ignore_errors=True)
            log.warn("interrupted before the first epoch was saved; nothing kept")
        raise
    except BaseException:
        if not (work / "checkpoint" / "state.json").exists():
            shutil.rmtree(work, ignore_errors=True)  # nothing trained yet: nothing worth keeping
            runfolder.remove_empty_parents(created, work)
        raise
    shutil.rmtree(work / "checkpoint", ignore_errors=True)
    shutil.rmtree(work / "features", ignore_errors=True)
    if not worker.chief:  # the chief writes the run; this worker's checkpoints were only its part of the saves
        shutil.rmtree(work, ignore_errors=True)
        return TrainResult(final, metrics, time.monotonic() - started)
    if final.exists():
        final.rmdir()
    os.replace(work, final)
    runreport.refresh(final)
    return TrainResult(final, metrics, time.monotonic() - started)


def resume_config(run: Path, trusted: bool = False, confirmed: Optional[dict[str, Any]] = None) -> TrainConfig:
    """The config an interrupted run was started with (this worker's copy in a multi-worker run).

    Args:
        trusted: ``--trust-config``: the saved config may choose a hub backbone or weights file.
        confirmed: command-line values; a saved value that loads a model is accepted when repeated here.

    Raises:
        RunFolderError: nothing to resume. ConfigError: the saved config loads a model and is neither
            trusted nor confirmed (a received ``.RUN.partial`` must not run code).
    """
    worker = distribute.worker_from_env(Strategy.MULTI_WORKER) if os.environ.get("TF_CONFIG") else distribute.Worker()
    path = partial_dir(run, worker) / CONFIG
    try:
        data = read_json(path)
    except (ValueError, OSError) as exc:
        raise RunFolderError(
            f"{path} is not readable JSON ({str(exc)[:120]}); remove {path.parent} and start again"
        ) from None
    if data is None:
        raise RunFolderError(f"nothing to resume at {run}: no interrupted run ({path.parent.name}) beside it")
    if not isinstance(data, dict):
        raise RunFolderError(f"{path} is not a saved config; remove {path.parent} and start again")
    given = [k for k, v in (confirmed or {}).items() if data.get(k) == v]
    untrusted.check_config_values(data, f"{path}", given, trusted)
    return TrainConfig.from_dict(data)


def _train_into(config: TrainConfig, work: Path, worker: distribute.Worker) -> dict[str, Any]:
    log.stage(1, stage_count(config), f"reading {config.data}")
    dataset = data_mod.discover(config.data, config.allow_outside_root)
    splits = data_mod.split(dataset, config.val_fraction, config.test_fraction, config.seed, config.max_per_class)
    log.info(data_mod.describe(splits, dataset.class_names))
    log.stage(2, stage_count(config), f"decoding images at {config.image_size}px into the pixel cache")
    pixels, skipped = _decode(dataset, splits, config, worker)
    if worker.chief:
        data_mod.write_splits(work, dataset, splits, skipped)
    fresh = not (work / "checkpoint" / "state.json").exists()  # stopped while forming a cluster: nothing to keep
    tf, strategy, policy = _runtime(config, work if fresh else None)
    distribute.check_same_data(strategy, worker, json.dumps([dataset.class_names, _relative_splits(dataset, splits)]))
    log.stage(
        3,
        stage_count(config),
        f"building MobileNetV2 alpha={config.alpha} ({policy}, {strategy.num_replicas_in_sync} replica(s))",
    )
    state = checkpoint.State(work / "checkpoint")
    with strategy.scope():
        built = classifier.build(config, len(dataset.class_names))
        run = PhaseRun(config, built, pixels, state, strategy)
        history = [timed(head_phase, run)]
        if config.fine_tune_epochs:
            save_weights_atomic(built.full, state.weights("head_only", "full"))
            history.append(timed(fine_tune_phase, run))
            history[-1]["decision"] = keep_fine_tune(run, history[0], history[-1])
    if policy != "float32" or worker.count > 1:
        built = _to_float32(config, built, len(dataset.class_names))
    log.stage(
        stage_count(config),
        stage_count(config),
        "evaluating"
        + (" and writing the run folder" if worker.chief else f" ({worker.name}: the chief writes the run)"),
    )
    metrics = _evaluate(built, pixels, dataset.class_names, config.image_size)
    metrics["skipped"] = len(skipped)
    if worker.chief:
        _write_run(config, work, built, dataset.class_names, history, metrics, tf, policy)
    distribute.barrier(strategy, worker)
    return metrics


def _decode(
    dataset: data_mod.Dataset, splits: dict[str, list[data_mod.Item]], config: TrainConfig, worker: distribute.Worker
) -> tuple[Splits, list[dict[str, str]]]:
    """Each split decoded once into the pixel cache (reused when the data has not changed)."""
    parts, skipped = {}, []
    folder = Path(config.cache_dir).expanduser() if config.cache_dir else None
    for name in data_mod.SPLITS:
        parts[name] = cache.load_split(dataset, splits[name], config.image_size, folder=folder, name=name)
        splits[name] = parts[name].items
        skipped += parts[name].skipped
    if skipped:
        log.warn(f"skipped {len(skipped)} unreadable image(s) (listed in data.json), e.g. {skipped[0]['reason']}")
    data_mod.check_readable(dataset, splits, skipped)
    return Splits(parts, worker), skipped


def _relative_splits(dataset: data_mod.Dataset, splits: dict[str, list[data_mod.Item]]) -> dict[str, list[Any]]:
    return {name: [[dataset.relative(it.ref), it.label] for it in items] for name, items in splits.items()}


def _runtime(config: TrainConfig, work: Optional[Path] = None) -> tuple[Any, Any, str]:
    """TensorFlow, the distribution strategy and the dtype policy for this machine."""
    k = graph.keras()
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    strategy = distribute.make_strategy(config, len(gpus), work)  # multi-worker must exist before any other TF op
    k.utils.set_random_seed(config.seed)
    policy = classifier.set_precision(config.mixed_precision, bool(gpus))
    if config.mixed_precision == MixedPrecision.FLOAT16 and not gpus:
        log.warn("float16 mixed precision without a GPU is slow; bfloat16 suits CPUs with AVX-512 BF16")
    return tf, strategy, policy


def _to_float32(config: TrainConfig, built: classifier.BuiltModel, num_classes: int) -> classifier.BuiltModel:
    """Rebuild the graph in float32 and copy the weights: the saved model is what TFLite converts."""
    classifier.set_precision(MixedPrecision.OFF, False)
    plain = classifier.build(dataclasses.replace(config, weights="none"), num_classes)
    plain.full.set_weights([np.asarray(w, dtype=np.float32) for w in built.full.get_weights()])
    plain.weights_info = built.weights_info
    return plain


def _evaluate(built: classifier.BuiltModel, px: Splits, class_names: list[str], size: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("val", "test"):
        if not len(px.y[name]):  # --test-fraction 0: the user tests on their own images
            out[name] = {"count": 0, "top1": None}
            log.info(f"no {name} split (--test-fraction 0): test with `edgetl parity RUN --data DIR`")
            continue
        probs = pipeline.predict(built.full, px.source(name, sharded=False), built.normalization, (size, size, 3))
        out[name] = report.classification_metrics(probs, px.y[name], class_names)
        log.info(f"{name} top-1 {out[name]['top1']:.4f} on {out[name]['count']} images")
    return out


def _write_run(
    config: TrainConfig,
    work: Path,
    built: classifier.BuiltModel,
    class_names: list[str],
    history: list[dict[str, Any]],
    metrics: dict[str, Any],
    tf: Any,
    policy: str,
) -> None:
    model_path = work / FLOAT_MODEL
    with atomic_path(model_path, suffix=".keras") as tmp:
        built.full.save(str(tmp))
    write_bytes_atomic(work / "labels.txt", ("\n".join(class_names) + "\n").encode("utf-8"))
    write_json_atomic(work / "history.json", history)
    write_json_atomic(work / "metrics.json", metrics)
    report.plot_history(history, work / "learning_curves.png")
    shown = "test" if metrics["test"]["count"] else "val"  # no test split: the val confusion instead
    report.plot_confusion(
        metrics[shown]["confusion"], class_names, f"model.keras on the {shown} split", work / f"confusion_{shown}.png"
    )
    card = ModelCard(
        labels=tuple(class_names),
        height=config.image_size,
        width=config.image_size,
        model_file=model_path.name,
        model_sha256=sha256_file(model_path),
        quantization="keras",
        normalization=built.normalization,
        input=TensorSpec("float32"),
        output=TensorSpec("float32"),
        extra={
            "backbone": {"name": config.backbone, "alpha": config.alpha, **built.weights_info},
            "training": {
                "seed": config.seed,
                "precision": policy,
                "epochs_run": [len(h["loss"]) for h in history],
                "fine_tune_kept": history[-1]["decision"]["kept"] if len(history) > 1 else None,
            },
            "metrics": {s: {"top1": metrics[s]["top1"], "count": metrics[s]["count"]} for s in ("val", "test")},
            "versions": runfolder.versions(tf),
        },
    )
    card.save(work / FLOAT_CARD)
