"""Accuracy figures and pictures shared by training and parity: metrics, confusion, curves."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from edgetl.runtime.folder import focus
from edgetl.runtime.model_card import write_bytes_atomic


def classification_metrics(probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Top-1 (and top-5 with >= 5 classes), per-class accuracy and the confusion matrix."""
    labels = np.asarray(labels)
    pred = probs.argmax(axis=1)
    n = len(class_names)
    confusion = np.zeros((n, n), dtype=int)
    np.add.at(confusion, (labels, pred), 1)
    per_class = {
        name: (float(confusion[i, i] / confusion[i].sum()) if confusion[i].sum() else None)
        for i, name in enumerate(class_names)
    }
    out: dict[str, Any] = {
        "count": int(len(labels)),
        "top1": float((pred == labels).mean()) if len(labels) else 0.0,
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }
    if n >= 5 and len(labels):
        top5 = np.argsort(-probs, axis=1)[:, :5]
        out["top5"] = float((top5 == labels[:, None]).any(axis=1).mean())
    return out


def _save_figure(fig: Any, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    write_bytes_atomic(path, buffer.getvalue())


def _pyplot() -> Any:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def plot_confusion(confusion: Sequence[Sequence[int]], class_names: Sequence[str], title: str, path: Path) -> None:
    """Write a confusion-matrix PNG (rows: true class, columns: predicted); past 40 classes, the top confusions only."""
    plt = _pyplot()
    class_names, matrix, note = focus(class_names, confusion)
    title = f"{title}\n({note})" if note else title
    size = max(4.0, 0.55 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=60, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=8, color="white" if v > threshold else "black")
    _save_figure(fig, path)
    plt.close(fig)


def plot_history(history: list[dict[str, Any]], path: Path) -> None:
    """Write loss and accuracy learning curves for every phase, one colour per phase."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    offset = 0
    for phase in history:
        epochs = np.arange(offset + 1, offset + 1 + len(phase["loss"]))
        for ax, key in zip(axes, ("loss", "accuracy")):
            ax.plot(epochs, phase[key], marker="o", label=f"{phase['phase']} train")
            if f"val_{key}" in phase:
                ax.plot(epochs, phase[f"val_{key}"], marker="x", linestyle="--", label=f"{phase['phase']} val")
        offset += len(phase["loss"])
    for ax, key in zip(axes, ("loss", "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    _save_figure(fig, path)
    plt.close(fig)
