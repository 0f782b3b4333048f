"""Benchmark sections that run the toolchain: training speed, accuracy and size, conversion time.

Everything goes through the library's public stage functions (``train``, ``qat``,
``calibrate``, ``convert``, ``run_parity``) on real Fashion-MNIST photos with the
offline ImageNet MobileNetV2 weights, so the numbers are what a user gets.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from edgetl.config import Quantization

from benchmarks.util import ratio

VARIANTS = tuple(q.value for q in Quantization)  # every variant convert can write
# The goals of issue #6, shown next to the numbers (not asserted).
GOALS = {"int8_drop_pt": 0.3, "qat_int8_drop_pt": 0.2, "min_agreement": 0.995, "int8_size_ratio": 0.31}


@dataclasses.dataclass(frozen=True)
class Data:
    """The two real-data folders: a train-part subset (split by ``edgetl train``) and a held-out test-part subset."""

    train: Path
    test: Path
    train_per_class: int
    test_per_class: int


def write_data(work: Path, train_per_class: int, test_per_class: int) -> Data:
    """Write class-balanced Fashion-MNIST subsets: ``train_per_class`` from its train part, ``test_per_class`` from its test part."""
    from edgetl.data.fashion_mnist import write_fashion_mnist_folder

    train_dir, test_dir = work / "fashion-train", work / "fashion-test"
    write_fashion_mnist_folder(train_dir, per_class=train_per_class, seed=0, part="train")
    write_fashion_mnist_folder(test_dir, per_class=test_per_class, seed=0, part="test")
    return Data(train_dir, test_dir, train_per_class, test_per_class)


def _head_val_accuracy(phase: dict[str, Any]) -> float:
    """Val accuracy of the epoch whose weights were kept (lowest val loss), as early stopping restores."""
    losses = phase.get("val_loss") or []
    if not losses:
        return float("nan")
    best = min(range(len(losses)), key=losses.__getitem__)
    return float(phase["val_accuracy"][best])


def _split_counts(run: Path) -> dict[str, int]:
    counts = json.loads((run / "data.json").read_text())["counts"]
    return {split: int(sum(values)) for split, values in counts.items()}


def _train_once(name: str, config: Any) -> dict[str, Any]:
    from edgetl.train.stage import train

    result = train(config)
    history = json.loads((result.run_dir / "history.json").read_text())
    head = history[0]
    row: dict[str, Any] = {
        "name": name,
        "run": str(result.run_dir),
        "cache_views": config.cache_views,
        "augment": config.augment,
        "epochs": len(head["loss"]),
        "head_seconds": head["seconds"],
        "head_images_per_s": head["images_per_s"],
        "head_val_top1": _head_val_accuracy(head),
        "final_val_top1": result.metrics["val"]["top1"],
        "final_test_top1": result.metrics["test"]["top1"],
        "total_seconds": round(result.seconds, 1),
        "splits": _split_counts(result.run_dir),
    }
    if len(history) > 1:
        fine = history[1]
        row["fine_tune"] = {
            "epochs": len(fine["loss"]),
            "seconds": fine["seconds"],
            "images_per_s": fine["images_per_s"],
            "trainable_layers": fine.get("trainable_layers"),
        }
    return row


def training_speed(params: Any, data: Data, work: Path) -> dict[str, Any]:
    """Section 1: head phase uncached vs cached on the same data and epochs, and a full fine-tune.

    Early stopping is set past the last epoch so every run trains exactly ``params.epochs``
    head epochs. The 3-view cached run also fine-tunes every backbone layer (BatchNorm
    frozen) and is the model the accuracy section quantizes.
    """
    from edgetl.config import TrainConfig

    base = dict(
        data=str(data.train),
        alpha=1.0,
        image_size=params.image_size,
        weights="imagenet",
        epochs=params.epochs,
        patience=params.epochs + 1,
        seed=42,
        mixed_precision="off",
        fine_tune_epochs=0,
        fine_tune_learning_rate=1e-5,
    )
    plans = [
        ("uncached (backbone every epoch), augmented", dict(cache_views=0)),
        (
            "cached, 3 views (default), augmented",
            dict(cache_views=3, fine_tune_epochs=params.fine_tune_epochs, fine_tune_layers=10_000),
        ),
        ("cached, 1 view, no augmentation", dict(cache_views=1, augment=False)),
    ]
    rows = []
    for index, (name, extra) in enumerate(plans):
        config = TrainConfig.from_dict({**base, **extra, "output": str(work / f"train-{index}")})
        rows.append(_train_once(name, config))
    uncached = rows[0]["head_images_per_s"]
    for row in rows:
        row["speedup_vs_uncached"] = ratio(row["head_images_per_s"], uncached)
    return {"rows": rows, "model_run": rows[1]["run"], "image_size": params.image_size, "epochs": params.epochs}


def _timed(call: Any, *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = call(*args)
    return out, time.perf_counter() - start


def prepare_variants(params: Any, run: Path) -> dict[str, Any]:
    """QAT (unless ``params.qat_epochs`` is 0), calibration and conversion of every variant of the trained run, each timed.

    Returns:
        ``qat_seconds``, ``calibrate_seconds`` (choosing + writing the manifest),
        ``calibration_feed_seconds`` (decoding and preparing the representative set once,
        the input side of what the int8 converter does), and ``convert`` (the library's
        own per-variant times).
    """
    from edgetl import calibration
    from edgetl.config import CalibrationConfig, ConvertConfig, QatConfig
    from edgetl.convert.calibrate import calibrate
    from edgetl.convert.stage import convert
    from edgetl.data import split_image_loader
    from edgetl.qat.stage import qat
    from edgetl.runtime.model_card import load_card

    qat_result, qat_seconds = (
        _timed(qat, QatConfig(str(run), epochs=params.qat_epochs)) if params.qat_epochs else (None, None)
    )
    manifest, calibrate_seconds = _timed(calibrate, CalibrationConfig(str(run), size=params.calib_size))
    card = load_card(run / "model_card.json")
    feed = calibration.representative_dataset(manifest, card, split_image_loader(run, card.height, card.interpolation))
    _, feed_seconds = _timed(lambda: sum(1 for _ in feed()))
    converted = convert(ConvertConfig(str(run)))
    return {
        "qat_seconds": None if qat_result is None else round(qat_seconds, 1),
        "qat_epochs": 0 if qat_result is None else _qat_epochs(qat_result.card_path),
        "calibrate_seconds": round(calibrate_seconds, 3),
        "calibration_feed_seconds": round(feed_seconds, 2),
        "calibration_images": manifest.size,
        "convert": converted.to_dict(),
    }


def _qat_epochs(card_path: Path) -> int:
    from edgetl.runtime.model_card import load_card

    return int(load_card(card_path).extra.get("qat", {}).get("epochs_run", 0))


def accuracy(run: Path, data: Data, threads: int) -> dict[str, Any]:
    """Section 2: float Keras vs every .tflite on the held-out Fashion-MNIST test part, through edge_runtime.

    ``run_parity`` evaluates the Keras model and each ``.tflite`` (via
    ``edgetl.runtime.Classifier``) on the same images; it returns the report
    whatever the verdict (the benchmark reports the goals rather than gating on them).
    """
    from edgetl.config.parity import ParityConfig
    from edgetl.parity.stage import run_parity

    config = ParityConfig(str(run), data=str(data.test), threads=threads)
    result, seconds = _timed(run_parity, config)
    fp32 = result.models.get("fp32", {}).get("size_bytes")
    rows = [
        {
            "variant": "float (Keras)",
            "top1": result.float_metrics["top1"],
            "drop_pt": None,
            "agreement": None,
            "size_bytes": None,
            "size_ratio": None,
        }
    ]
    for name in VARIANTS:
        m = result.models.get(name)
        if m is None:
            continue
        rows.append(
            {
                "variant": name,
                "top1": m["top1"],
                "drop_pt": m["drop_pt"],
                "agreement": m["agreement"],
                "size_bytes": m["size_bytes"],
                "size_ratio": ratio(m["size_bytes"], fp32),
                "device_median_ms": m["median_ms"],
            }
        )
    return {
        "rows": rows,
        "images": result.float_metrics["count"],
        "seconds": round(seconds, 1),
        "goals": _goals(rows),
        "via": "edgetl.parity.run_parity (edgetl.runtime.Classifier.scores per image)",
    }


def _goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each goal of the issue with the measured value and whether it holds."""
    by = {r["variant"]: r for r in rows}
    out = []

    def add(name: str, value: Any, limit: float, at_most: bool) -> None:
        met = None if value is None else (value <= limit if at_most else value >= limit)
        out.append({"goal": name, "value": value, "limit": limit, "at_most": at_most, "met": met})

    add("int8 top-1 drop (pt)", by.get("int8", {}).get("drop_pt"), GOALS["int8_drop_pt"], True)
    add("QAT-int8 top-1 drop (pt)", by.get("qat_int8", {}).get("drop_pt"), GOALS["qat_int8_drop_pt"], True)
    for name in ("int8", "qat_int8"):
        add(f"{name} agreement with float", by.get(name, {}).get("agreement"), GOALS["min_agreement"], False)
    add("int8 size vs fp32", by.get("int8", {}).get("size_ratio"), GOALS["int8_size_ratio"], True)
    return out


def conversion_rows(name: str, converted: dict[str, Any]) -> list[dict[str, Any]]:
    """Section 5 rows of one ``ConvertResult.to_dict()``: per-variant seconds, and export + overhead."""
    variants = converted["variants"]
    rows = [
        {"model": name, "step": v["quantization"], "seconds": v["seconds"], "size_bytes": v["size_bytes"]}
        for v in variants
    ]
    rest = converted["seconds"] - sum(v["seconds"] for v in variants)
    rows.append(
        {
            "model": name,
            "step": "rest (export, QAT rebuild, read-back, cards)",
            "seconds": round(rest, 2),
            "size_bytes": None,
        }
    )
    rows.append({"model": name, "step": "total (convert call)", "seconds": converted["seconds"], "size_bytes": None})
    return rows
