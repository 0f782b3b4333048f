"""Folder prediction on the device: ``edge-classify --image DIR --csv out.csv``.

Every image under DIR becomes one CSV row ``path,label,score,label_2,score_2,…`` (paths
relative to DIR). When DIR holds class sub-folders named like the model's labels (the
layout ``edgetl train`` and ``edgetl parity --data`` read), each image's folder is its
true class and the summary adds top-1 accuracy with a 95% Wilson interval and a
confusion matrix, computed as parity computes it: the file decoded by
``decode.decode_image``, the argmax of ``Classifier.scores`` (``--threshold`` and
``--top-k`` shape the CSV only). ``draw_confusion`` renders the matrix with OpenCV, as a
Pi has no matplotlib.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from edgetl.runtime.classifier import Category
from edgetl.runtime.decode import image_files
from edgetl.runtime.guard import csv_cell
from edgetl.runtime.model_card import write_bytes_atomic
from edgetl.runtime.proportion import wilson


class FolderError(ValueError):
    """The folder cannot be classified as asked (a class sub-folder no label matches, nothing to write)."""


@dataclasses.dataclass(frozen=True)
class FolderPlan:
    """The images of a folder in order and, in class-folder mode, each one's true label index.

    Attributes:
        root: the folder CSV paths are relative to (None: paths as given).
        paths: image files, sorted folder by folder.
        truth: label index per path (None: top-level or unlabelled image).
        labelled: True when DIR has class sub-folders named like the model's labels.
    """

    root: Optional[Path]
    paths: tuple[Path, ...]
    truth: tuple[Optional[int], ...]
    labelled: bool


def plan(images: Sequence[str], labels: Sequence[str]) -> FolderPlan:
    """The images to classify: one folder walked recursively (class sub-folders), or files as given.

    Raises:
        FolderError: some sub-folders are named like labels and others are not (a typo
            would otherwise drop a class silently from the accuracy).
    """
    if len(images) != 1 or not Path(images[0]).is_dir():
        return FolderPlan(None, tuple(Path(p) for p in images), (None,) * len(images), False)
    root = Path(images[0])
    subs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    known = [s for s in subs if s in labels]
    unknown = [s for s in subs if s not in labels]
    if known and unknown:
        raise FolderError(
            f"{root}: sub-folders {', '.join(unknown)} are not among the model's labels ({', '.join(labels)}); "
            "name each class folder as its label, or move the others out"
        )
    index = {name: labels.index(name) for name in known}
    paths = image_files(root)
    truth = [
        index.get(path.relative_to(root).parts[0]) if len(path.relative_to(root).parts) > 1 else None for path in paths
    ]
    return FolderPlan(root, tuple(paths), tuple(truth), bool(known))


class FolderResults:
    """CSV rows and the confusion matrix, filled one image at a time."""

    def __init__(self, folder: FolderPlan, labels: Sequence[str], top_k: int):
        self.folder, self.labels, self.top_k = folder, list(labels), top_k
        self._truth = {str(p): t for p, t in zip(folder.paths, folder.truth)}
        self.rows: list[list[Any]] = []
        self.confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
        self.unlabelled = 0

    def add(self, source: str, scores: np.ndarray, categories: Sequence[Category]) -> None:
        path = Path(source)
        shown = path.relative_to(self.folder.root) if self.folder.root is not None else path
        row: list[Any] = [shown.as_posix()]
        for c in list(categories)[: self.top_k]:
            row += [c.label, float(c.score)]
        self.rows.append(row + [""] * (1 + 2 * self.top_k - len(row)))
        truth = self._truth.get(source)
        if truth is None:
            self.unlabelled += 1
        else:
            self.confusion[truth, int(np.argmax(scores))] += 1

    def header(self) -> list[str]:
        out = ["path", "label", "score"]
        for i in range(2, self.top_k + 1):
            out += [f"label_{i}", f"score_{i}"]
        return out

    def write_csv(self, target: str) -> None:
        """All rows to ``target`` (``-``: stdout), written to a temporary file first so no half CSV is left."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)  # RFC 4180 "\r\n": a file name with a CR or LF in it is quoted, not split
        writer.writerow(self.header())
        for row in self.rows:  # file names and labels are untrusted text; scores are ours and stay numbers
            writer.writerow([f"{v:.6f}" if isinstance(v, float) else csv_cell(v) for v in row])
        if target == "-":
            sys.stdout.write(buffer.getvalue())
            sys.stdout.flush()
            return
        write_bytes_atomic(Path(target), buffer.getvalue().encode("utf-8"))

    def accuracy(self) -> Optional[dict[str, Any]]:
        """Top-1 accuracy, its 95% Wilson interval and the confusion matrix (rows true, columns predicted)."""
        if not self.folder.labelled:
            return None
        n, correct = int(self.confusion.sum()), int(np.trace(self.confusion))
        low, high = wilson(correct, n)
        return {
            "top1": round(correct / n, 6) if n else None,
            "n": n,
            "correct": correct,
            "ci95": [round(low, 6), round(high, 6)],
            "unlabelled": self.unlabelled,
            "labels": self.labels,
            "confusion": self.confusion.tolist(),
        }


MAX_MATRIX_CLASSES = 40  # beyond this a full matrix is unreadable (300 classes: an 18,000-px figure, 9 GB to draw)


def focus(
    labels: Sequence[str], confusion: Sequence[Sequence[int]], limit: int = MAX_MATRIX_CLASSES
) -> tuple[list[str], np.ndarray, str]:
    """The matrix itself up to ``limit`` classes; beyond, the sub-matrix of the classes in the largest confusions.

    Returns:
        (labels shown, their matrix, a note for the title: ``""`` when nothing was left out).
    """
    matrix = np.asarray(confusion, dtype=np.int64)
    if len(labels) <= limit:
        return list(labels), matrix, ""
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    chosen: list[int] = []
    for flat in np.argsort(-off, axis=None, kind="stable"):
        i, j = divmod(int(flat), len(labels))
        if off[i, j] == 0 or len(chosen) >= limit:
            break
        chosen += [k for k in (i, j) if k not in chosen][: limit - len(chosen)]
    for k in np.argsort(-matrix.sum(axis=1), kind="stable"):  # no (more) confusions: the largest classes
        if len(chosen) >= limit:
            break
        if int(k) not in chosen:
            chosen.append(int(k))
    keep = sorted(chosen)
    note = f"top confusions: {len(keep)} of {len(labels)} classes"
    return [labels[k] for k in keep], matrix[np.ix_(keep, keep)], note


def confusion_text(labels: Sequence[str], confusion: Sequence[Sequence[int]]) -> list[str]:
    """The matrix as aligned text lines for the log (rows true, columns predicted); see :func:`focus` past 40 classes."""
    labels, confusion, note = focus(labels, confusion)
    corner = "true \\ predicted"
    first = max([len(s) for s in labels] + [len(corner)])
    width = max([len(str(v)) for row in confusion for v in row] + [len(s) for s in labels])
    lines = [corner.ljust(first) + " " + " ".join(s.rjust(width) for s in labels)]
    for name, row in zip(labels, confusion):
        lines.append(name.ljust(first) + " " + " ".join(str(v).rjust(width) for v in row))
    return lines + ([f"({note})"] if note else [])


def draw_confusion(labels: Sequence[str], confusion: Sequence[Sequence[int]], title: str, path: Path) -> None:
    """A confusion-matrix PNG drawn with OpenCV: rows true class, columns predicted, shade by row share.

    Past 40 classes only the top confusions are drawn (:func:`focus`), so the image stays under ~2,500 px.
    """
    import cv2

    labels, matrix, note = focus(labels, confusion)
    title = f"{title} ({note})" if note else title
    n, cell, font = len(labels), 48, cv2.FONT_HERSHEY_SIMPLEX
    margin = 16 + max(cv2.getTextSize(s, font, 0.5, 1)[0][0] for s in labels)
    top = margin + 40
    image = np.full((top + n * cell + 30, margin + n * cell + 20, 3), 255, np.uint8)
    cv2.putText(image, title, (10, 24), font, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    for i in range(n):
        y = top + i * cell
        cv2.putText(image, labels[i], (8, y + cell // 2 + 5), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        for j in range(n):
            x = margin + j * cell
            shade = int(255 * (1 - 0.8 * shares[i, j]))
            cv2.rectangle(image, (x, y), (x + cell - 1, y + cell - 1), (255, shade, shade), -1)
            cv2.rectangle(image, (x, y), (x + cell - 1, y + cell - 1), (200, 200, 200), 1)
            text = str(matrix[i, j])
            (w, h), _ = cv2.getTextSize(text, font, 0.45, 1)
            colour = (255, 255, 255) if shares[i, j] > 0.5 else (0, 0, 0)
            cv2.putText(image, text, (x + (cell - w) // 2, y + (cell + h) // 2), font, 0.45, colour, 1, cv2.LINE_AA)
    for j, name in enumerate(labels):  # column labels, written sideways
        (w, h), _ = cv2.getTextSize(name, font, 0.5, 1)
        strip = np.full((h + 8, w + 8, 3), 255, np.uint8)
        cv2.putText(strip, name, (4, h + 3), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        strip = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)[-(top - 36) :]
        x = margin + j * cell + (cell - strip.shape[1]) // 2
        image[top - strip.shape[0] - 2 : top - 2, x : x + strip.shape[1]] = strip
    cv2.putText(
        image,
        "rows: true class, columns: predicted",
        (10, image.shape[0] - 10),
        font,
        0.45,
        (80, 80, 80),
        1,
        cv2.LINE_AA,
    )
    ok, buffer = cv2.imencode(".png", image)
    if not ok:
        raise FolderError(f"{path}: OpenCV could not encode the confusion matrix as PNG")
    write_bytes_atomic(path, buffer.tobytes())
