"""Accuracy figures and pictures shared by training, parity and the run report: metrics, confusion, curves, flips.

Every figure says what it shows in its title (which images, how many, top-1 with its 95%
Wilson interval) and is drawn at a size that stays readable at 100% (text ≥ 11 px).
matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from edgetl import stats
from edgetl.runtime.folder import focus
from edgetl.runtime.model_card import write_bytes_atomic

DPI = 110  # at 110 dpi, 8 pt is 12 px: every label below stays >= 11 px at 100%
SMALL = 8.5  # pt: tick labels, cell numbers, captions
SHEET_FLIPS = 24  # thumbnails on a flip sheet
SHEET_COLUMNS = 6
FLIP_COLOURS = {"lost": "#c62828", "gained": "#2e7d32", "changed": "#757575"}


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


def top1_interval(confusion: Sequence[Sequence[int]]) -> tuple[float, float, float, int]:
    """(top-1, low, high, n) from a confusion matrix: the 95% Wilson interval of :mod:`edgetl.stats`."""
    matrix = np.asarray(confusion, dtype=np.int64)
    n = int(matrix.sum())
    right = int(np.trace(matrix)) if matrix.size else 0
    low, high = stats.wilson(right, n)
    return (right / n if n else 0.0), low, high, n


def top1_text(confusion: Sequence[Sequence[int]]) -> str:
    """``top-1 85.33% [80.87, 88.93] (95%), n = 300`` from a confusion matrix."""
    share, low, high, n = top1_interval(confusion)
    return f"top-1 {100 * share:.2f}% [{100 * low:.2f}, {100 * high:.2f}] (95%), n = {n:,}"


def normalised(confusion: Sequence[Sequence[int]]) -> np.ndarray:
    """Each row divided by its count (the share of a true class predicted as each class); empty rows stay 0."""
    matrix = np.asarray(confusion, dtype=float)
    rows = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)


def figure_png(fig: Any) -> bytes:
    """The figure as PNG bytes (and closed)."""
    plt = pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _save_figure(fig: Any, path: Path) -> None:
    write_bytes_atomic(path, figure_png(fig))


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _matrix_axes(ax: Any, class_names: Sequence[str]) -> None:
    ax.set_xticks(range(len(class_names)), class_names, rotation=50, ha="right", fontsize=SMALL)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=SMALL)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")


def _draw_counts(ax: Any, matrix: np.ndarray, class_names: Sequence[str], title: str) -> None:
    ax.imshow(matrix, cmap="Blues")
    _matrix_axes(ax, class_names)
    ax.set_title(title, fontsize=10)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), v in np.ndenumerate(matrix):
        if v:
            ax.text(
                j, i, f"{v:,}", ha="center", va="center", fontsize=SMALL, color="white" if v > threshold else "black"
            )


def _draw_normalised(ax: Any, confusion: np.ndarray, class_names: Sequence[str], title: str) -> None:
    share = normalised(confusion)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    _matrix_axes(ax, class_names)
    ax.set_title(title, fontsize=10)
    for (i, j), v in np.ndenumerate(share):
        if v >= 0.005:
            ax.text(
                j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=SMALL, color="white" if v > 0.5 else "black"
            )


def confusion_figure(
    confusion: Sequence[Sequence[int]], class_names: Sequence[str], what: str, counts: bool = True
) -> bytes:
    """PNG of a confusion matrix: counts beside the row-normalised view (``counts=False``: the normalised view only).

    Args:
        what: which model on which images (``"model.keras on the test split"``); the
            title adds top-1 with its 95% interval and n.
    """
    plt = pyplot()
    class_names, matrix, note = focus(class_names, confusion)  # past 40 classes: the top confusions only
    what = f"{what} ({note})" if note else what
    counts = counts and not note  # that many classes: the normalised view alone keeps the figure readable and small
    side = max(4.0, 0.5 * len(class_names) + 2)
    panels = 2 if counts else 1
    fig, axes = plt.subplots(1, panels, figsize=(side * panels, side), squeeze=False)
    if counts:
        _draw_counts(axes[0, 0], matrix, class_names, "images (rows: true class)")
    _draw_normalised(axes[0, -1], matrix, class_names, "% of each true class (rows sum to 100)")
    fig.suptitle(f"{what}: {top1_text(np.asarray(confusion, dtype=np.int64))}", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / side))
    return figure_png(fig)


def plot_confusion(confusion: Sequence[Sequence[int]], class_names: Sequence[str], what: str, path: Path) -> None:
    """Write a confusion-matrix PNG: counts and the row-normalised view, top-1 with its interval and n in the title."""
    write_bytes_atomic(path, confusion_figure(confusion, class_names, what))


def confusion_difference_figure(
    variant: Sequence[Sequence[int]], reference: Sequence[Sequence[int]], class_names: Sequence[str], name: str
) -> bytes:
    """PNG of a variant's confusion minus the float model's on the same images.

    Red cells are where the variant does worse (fewer right on the diagonal, more
    confusions off it), blue where it does better; empty cells are unchanged.
    """
    plt = pyplot()
    diff = np.asarray(variant, dtype=np.int64) - np.asarray(reference, dtype=np.int64)
    shown, _, note = focus(class_names, np.abs(diff))  # past 40 classes: where the two differ most
    if note:
        keep = [list(class_names).index(label) for label in shown]
        diff, class_names, name = diff[np.ix_(keep, keep)], shown, f"{name} ({note})"
    harm = diff.astype(float) * np.where(np.eye(len(diff), dtype=bool), -1, 1) if diff.size else diff.astype(float)
    side = max(4.5, 0.5 * len(class_names) + 2.5)
    fig, ax = plt.subplots(figsize=(side, side))
    limit = max(1.0, float(np.abs(harm).max()) if harm.size else 1.0)
    ax.imshow(
        np.where(harm == 0, np.nan, harm), cmap="RdBu_r", vmin=-1.8 * limit, vmax=1.8 * limit
    )  # mid tones: the numbers stay legible
    _matrix_axes(ax, class_names)
    for (i, j), v in np.ndenumerate(diff):
        if v:
            ax.text(j, i, f"{v:+d}", ha="center", va="center", fontsize=SMALL)
    same = "" if diff.any() else "\nidentical to float on every image"
    ax.set_title(
        f"{name}: {top1_text(variant)}\nfloat (model.keras) on the same images: {100 * top1_interval(reference)[0]:.2f}%"
        f"\ncell = {name} images − float images; red: worse than float, blue: better{same}",
        fontsize=10,
    )
    ax.set_facecolor("white")
    return figure_png(fig)


def plot_variant_confusion(
    variant: Sequence[Sequence[int]],
    reference: Sequence[Sequence[int]],
    class_names: Sequence[str],
    name: str,
    path: Path,
) -> None:
    """Write ``confusion_<variant>.png``: the difference from the float model, not the whole matrix again."""
    write_bytes_atomic(path, confusion_difference_figure(variant, reference, class_names, name))


def restored_epoch(phase: dict[str, Any]) -> Optional[int]:
    """1-based epoch whose weights a phase kept: the first lowest val loss (edgetl's checkpoint and Keras' EarlyStopping)."""
    values = phase.get("val_loss")
    if not isinstance(values, list) or not values:
        return None
    try:
        return int(np.argmin(np.asarray(values, dtype=float))) + 1
    except (TypeError, ValueError):
        return None


def history_figure(history: list[dict[str, Any]]) -> bytes:
    """PNG of loss and accuracy per epoch for every phase, phase boundaries and each phase's restored epoch marked."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    offset = 0
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, phase in enumerate(history):
        count = len(phase.get("loss", []))
        epochs = np.arange(offset + 1, offset + 1 + count)
        colour = colours[k % len(colours)]
        best = restored_epoch(phase)
        for ax, key in zip(axes, ("loss", "accuracy")):
            if len(phase.get(key, [])) == count:
                ax.plot(epochs, phase[key], marker="o", ms=3, color=colour, label=f"{phase['phase']} train")
            if len(phase.get(f"val_{key}", [])) == count:
                ax.plot(epochs, phase[f"val_{key}"], marker="x", ls="--", color=colour, label=f"{phase['phase']} val")
                if best:
                    ax.plot(offset + best, phase[f"val_{key}"][best - 1], marker="*", ms=15, color=colour, mec="black")
            if offset:
                ax.axvline(offset + 0.5, color="0.4", ls=":", lw=1)
                ax.text(
                    offset + 0.6,
                    0.975,
                    f" {phase['phase']} →",
                    transform=ax.get_xaxis_transform(),
                    va="top",
                    fontsize=SMALL,
                    color="0.3",
                )
        offset += count
    for ax, key in zip(axes, ("loss", "accuracy")):
        ax.set_xlabel("epoch (all phases)")
        ax.set_title(key, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].plot([], [], "*", ms=12, color="white", mec="black", label="restored epoch (lowest val loss)")
    handles, names = axes[0].get_legend_handles_labels()
    rows = -(-len(handles) // 4)
    fig.legend(handles, names, loc="lower center", ncol=min(4, len(handles)), fontsize=SMALL, frameon=False)
    fig.suptitle("learning curves: dotted line = next phase starts; ★ = the epoch whose weights were kept", fontsize=10)
    fig.tight_layout(rect=(0, 0.045 * rows + 0.03, 1, 1))
    return figure_png(fig)


def plot_history(history: list[dict[str, Any]], path: Path) -> None:
    """Write ``learning_curves.png``: loss and accuracy per phase, phase boundaries and restored epochs marked."""
    write_bytes_atomic(path, history_figure(history))


def flip_kind(row: dict[str, Any]) -> str:
    """``lost`` (the reference was right), ``gained`` (the variant is right) or ``changed`` (both wrong)."""
    if row.get("lost"):
        return "lost"
    return "gained" if row.get("variant") == row.get("true") else "changed"


def flip_sheet_figure(
    rows: list[dict[str, Any]], frame: Callable[[str], np.ndarray], name: str, reference: str, total: int
) -> bytes:
    """PNG of the worst flipped images: each with its number, true label, reference→variant answers and scores.

    The canvas grows with the flips (up to :data:`SHEET_COLUMNS` per line, :data:`SHEET_FLIPS`
    in all); the title and the colour legend sit on top, whatever the number of lines.
    """
    plt = pyplot()
    from matplotlib.patches import Patch

    shown = rows[:SHEET_FLIPS]
    cols = min(len(shown), SHEET_COLUMNS)
    lines = -(-len(shown) // cols)
    pitch_x, pitch_y, side = 1.7, 2.25, 1.45  # inches: one tile's column, line and picture
    width = max(cols * pitch_x, 5.4)
    wide = width >= 7.5
    header = 0.85 if wide else 1.3
    height = header + lines * pitch_y
    fig = plt.figure(figsize=(width, height))
    short = "QAT" if "qat" in reference else "float"
    left = (width - cols * pitch_x) / 2 + (pitch_x - side) / 2
    for k, row in enumerate(shown):
        x, y = left + (k % cols) * pitch_x, height - header - (k // cols) * pitch_y - 0.28 - side
        _flip_tile(fig.add_axes((x / width, y / height, side / width, side / height)), k + 1, row, frame, name, short)
    more = f" (the worst {len(shown)} shown)" if len(rows) > len(shown) else ""
    fig.text(
        0.5,
        1 - 0.12 / height,
        f"{name}: {len(rows):,} of {total:,} images change top-1 vs {reference}{more}",
        ha="center",
        va="top",
        fontsize=11,
    )
    legend = [
        Patch(color=FLIP_COLOURS["lost"], label=f"lost: {short} right, {name} wrong"),
        Patch(color=FLIP_COLOURS["gained"], label=f"gained: {name} right, {short} wrong"),
        Patch(color=FLIP_COLOURS["changed"], label="changed: both wrong"),
    ]
    fig.legend(
        handles=legend,
        loc="upper center",
        bbox_to_anchor=(0.5, 1 - 0.38 / height),
        ncol=3 if wide else 1,
        fontsize=SMALL,
        frameon=False,
    )
    return figure_png(fig)


def _flip_tile(
    ax: Any, number: int, row: dict[str, Any], frame: Callable[[str], np.ndarray], name: str, short: str
) -> None:
    """One flipped image: a frame coloured by what changed, the true label above, both answers below."""
    colour = FLIP_COLOURS[flip_kind(row)]
    image = frame(row["ref"])
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set(color=colour, linewidth=3)
    ax.set_title(f"#{number}  true: {row['true'][:15]}", fontsize=SMALL, loc="left", pad=3)
    ax.set_xlabel(
        f"{short}: {row['reference'][:13]} {row['reference_score']:.2f}\n{name}: {row['variant'][:13]} "
        f"{row['variant_score']:.2f}",
        fontsize=SMALL,
        color=colour,
        loc="left",
        labelpad=3,
    )


def flip_sheet(
    rows: list[dict[str, Any]], frame: Callable[[str], np.ndarray], path: Path, name: str, reference: str, total: int
) -> None:
    """Write ``flips_<variant>.png`` (see :func:`flip_sheet_figure`); remove a stale one when nothing flipped."""
    if not rows:
        path.unlink(missing_ok=True)
        return
    write_bytes_atomic(path, flip_sheet_figure(rows, frame, name, reference, total))
