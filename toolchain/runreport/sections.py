"""The page's first half: the data, the training and the float model's test results.

Each function takes the run's files (:class:`files.RunFiles`) and returns one HTML
section; every string from the files is escaped (:func:`html.esc`).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
from edgetl import metrics, stats
from edgetl.runreport import pictures
from edgetl.runreport.files import RunFiles, as_dict, as_list, num, numbers
from edgetl.runreport.html import esc, image, para, table, tag

SPLITS = ("train", "val", "test")


def _pct(share: Optional[float], digits: int = 1) -> str:
    return "–" if share is None else f"{100 * share:.{digits}f}%"


def _interval(successes: int, n: int) -> str:
    """``85.3% [80.9, 88.9]`` (Wilson 95%) or ``–`` for no images."""
    if n <= 0:
        return "–"
    low, high = stats.wilson(successes, n)
    return f"{100 * successes / n:.1f}% <span class=muted>[{100 * low:.1f}, {100 * high:.1f}]</span>"


def _confusion(value: Any, size: int) -> Optional[np.ndarray]:
    """A ``size``×``size`` matrix of non-negative integers, or None."""
    try:
        matrix = np.asarray(value, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        return None
    return matrix if matrix.shape == (size, size) and (matrix >= 0).all() else None


def data_section(files: RunFiles) -> str:
    """Class counts per split and a strip of training images per class."""
    labels, counts = files.labels, as_dict(files.data.get("counts"))
    per_split = {s: [int(v or 0) for v in numbers(counts.get(s))] for s in SPLITS}
    strips, note = pictures.sample_rows(files.run, len(labels), files.card.interpolation)
    rows = []
    for i, name in enumerate(labels):
        got = [per_split[s][i] if i < len(per_split[s]) else 0 for s in SPLITS]
        strip = (
            image(strips[i], f"training images of {name}", mime="image/jpeg")
            if strips[i]
            else "<span class=muted>–</span>"
        )
        rows.append([esc(name), *(f"{c:,}" for c in got), f"{sum(got):,}", strip])
    totals = [sum(per_split[s]) for s in SPLITS]
    rows.append(["<b>all</b>", *(f"<b>{t:,}</b>" for t in totals), f"<b>{sum(totals):,}</b>", ""])
    skipped = as_list(files.data.get("skipped"))
    kind = str(files.data.get("kind", "?"))
    root = str(files.data.get("root", "")).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    intro = (
        f"{len(labels)} classes from a {kind} named {root or '?'} (data.json records where it lives); "
        f"seeded, stratified splits (seed {files.config.get('seed', '?')}); {len(skipped)} unreadable image(s) skipped. "
        f"Samples: the first {pictures.SAMPLES_PER_CLASS} training images of each class, as the device decodes them."
    )
    return (
        '<section id="data"><h2>Data</h2>'
        + para(intro)
        + (para(note, "note") if note else "")
        + table(["class", *SPLITS, "total", "samples (train)"], rows, numeric=(1, 2, 3, 4))
        + "</section>"
    )


def _phase_rows(phases: Sequence[dict[str, Any]]) -> list[list[str]]:
    rows, offset = [], 0
    for phase in phases:
        loss = numbers(phase.get("loss"))
        best = metrics.restored_epoch(phase)
        val_loss, val_acc = numbers(phase.get("val_loss")), numbers(phase.get("val_accuracy"))
        pick = (best or 0) - 1
        seconds, speed = num(phase.get("seconds")), num(phase.get("images_per_s"))
        rows.append(
            [
                esc(phase["phase"]),
                f"{len(loss)}",
                f"{offset + best} ({best} of the phase)" if best else "last",
                f"{val_loss[pick]:.4f}" if best and val_loss[pick] is not None else "–",
                _pct(val_acc[pick], 2) if best and pick < len(val_acc) else "–",
                f"{seconds:,.0f}" if seconds is not None else "–",
                f"{speed:,.0f}" if speed is not None else "–",
            ]
        )
        offset += len(loss)
    return rows


def training_section(files: RunFiles) -> str:
    """Learning curves with the phase boundaries and restored epochs, and one line per phase."""
    if not files.phases:
        return (
            '<section id="training"><h2>Training</h2>'
            + para("history.json is missing: no curves.", "note")
            + "</section>"
        )
    backbone = as_dict(files.card.extra.get("backbone"))
    config = files.config
    intro = (
        f"{backbone.get('name', 'backbone ?')} alpha {backbone.get('alpha', '?')}, weights "
        f"{backbone.get('weights', '?')}, {files.card.height}×{files.card.width} px input, "
        f"head up to {config.get('epochs', '?')} epochs, fine-tuning up to {config.get('fine_tune_epochs', '?')} "
        f"(top {config.get('fine_tune_layers', '?')} layers), early stopping on val loss with patience "
        f"{config.get('patience', '?')}: each phase keeps the weights of its lowest val loss (★ below)."
    )
    curves = image(metrics.history_figure(files.phases), "learning curves: loss and accuracy per epoch", 1000)
    head = ["phase", "epochs run", "restored epoch", "val loss there", "val top-1 there", "seconds", "images/s"]
    return (
        '<section id="training"><h2>Training</h2>'
        + para(intro)
        + curves
        + table(head, _phase_rows(files.phases), numeric=(1, 3, 4, 5, 6))
        + tag(
            "p",
            'Every epoch as a table: <a href="results.csv">results.csv</a> (one row per epoch, opens in a spreadsheet).',
        )
        + "</section>"
    )


def test_source(files: RunFiles) -> tuple[Optional[np.ndarray], str]:
    """The float model's confusion on the most images: parity's evaluation when it ran, else the test split."""
    size = len(files.labels)
    parity_float = _confusion(as_dict(files.parity.get("float")).get("confusion"), size)
    if parity_float is not None and parity_float.sum():
        data = as_dict(files.parity.get("config")).get("data")
        where = "the images given to parity (--data)" if data else "the run's test split, as parity evaluated it"
        return parity_float, f"model.keras on {where}"
    test = _confusion(as_dict(files.metrics.get("test")).get("confusion"), size)
    return test, "model.keras on the run's test split"


def per_class_rows(confusion: np.ndarray, labels: Sequence[str]) -> list[list[str]]:
    """Class, images, recall and precision with their 95% Wilson intervals (a bar for recall)."""
    rows = []
    for i, name in enumerate(labels):
        n_true, n_pred, right = int(confusion[i].sum()), int(confusion[:, i].sum()), int(confusion[i, i])
        bar = f'<span class=bar style="width:{round(60 * right / n_true) if n_true else 0}px"></span>'
        rows.append([esc(name), f"{n_true:,}", bar + _interval(right, n_true), _interval(right, n_pred)])
    return rows


def test_section(files: RunFiles) -> str:
    """Normalised confusion and per-class precision/recall with intervals, for the float model."""
    confusion, what = test_source(files)
    if confusion is None:
        return '<section id="test"><h2>Test results</h2>' + para("No readable confusion matrix.", "note") + "</section>"
    figure = metrics.confusion_figure(confusion, files.labels, what, counts=False)
    explain = (
        f"{what}: {metrics.top1_text(confusion)}. Recall: the share of a class's images called that class; "
        "precision: the share of the images called that class that are it. Brackets: 95% Wilson intervals "
        "(per class, not adjusted for the number of classes)."
    )
    return (
        '<section id="test"><h2>Test results (float model)</h2>'
        + para(explain)
        + image(figure, "normalised confusion matrix", 640)
        + table(["class", "images", "recall", "precision"], per_class_rows(confusion, files.labels), numeric=(1,))
        + "</section>"
    )
