"""The three kinds of dataset ``edgetl train`` reads: class folders, ``path,label`` CSVs, image arrays.

Each reader returns a :class:`edgetl.data.Dataset` (items and sorted class names) or
refuses its input with one :class:`DataError` line; ``edgetl.data.discover`` picks the
reader and checks the classes.
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np
from edgetl import log
from edgetl.data.items import SPLITS, Dataset, Item
from edgetl.errors import DataError
from edgetl.runtime import decode


def _images_in(folder: Path) -> list[str]:
    """Image files under ``folder`` as strings (see ``decode.image_files``: recursive, sorted, hidden skipped,
    regular files only); run folders below it are left out with a note."""
    runs: list[Path] = []
    found = [str(path) for path in decode.image_files(folder, runs)]
    for run in runs:
        log.warn(f"{run} is an edgetl run folder: its images are not data, skipped")
    return found


def _class_dirs(folder: Path) -> list[Path]:
    """Visible sub-folders, sorted; a symlinked one may point elsewhere, but not back up (a loop).

    A run folder saved inside the data (``-o DATA/run``; ``decode.is_run_folder``) is
    not a class, nor is a folder that holds only run folders (``DATA/runs/``): both are
    skipped with a note.
    """
    found = []
    for sub in sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name):
        if _only_runs(sub):
            log.warn(f"{sub} holds an edgetl run folder, not a class of images: skipped")
        else:
            found.append(sub)
    here = folder.resolve()
    for sub in found:
        target = sub.resolve()
        if sub.is_symlink() and (target == here or target in here.parents):
            raise DataError(
                f"{sub} is a symlink to {target}, which holds the data folder itself (a loop); remove the link"
            )
    return found


def _only_runs(folder: Path) -> bool:
    """A run folder, or a folder whose only non-hidden entries are run folders."""
    if decode.is_run_folder(folder):
        return True
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return bool(entries) and all(p.is_dir() and decode.is_run_folder(p) for p in entries)


def from_folder(folder: Path) -> Dataset:
    subdirs = {p.name for p in _class_dirs(folder)}
    if "train" in subdirs and not subdirs <= set(SPLITS):
        others = ", ".join(sorted(subdirs - set(SPLITS)))
        raise DataError(
            f"{folder} has a train/ folder (a pre-split layout) beside other folders ({others}); move those out, "
            "or rename train/ if it is a class"
        )
    if "train" in subdirs:
        names = sorted({c.name for s in subdirs for c in _class_dirs(folder / s)})
        index = {n: i for i, n in enumerate(names)}
        presplit = {
            s: [Item(f, index[c.name]) for c in _class_dirs(folder / s) for f in _images_in(c)] for s in sorted(subdirs)
        }
        items = [it for s in presplit.values() for it in s]
        return Dataset("folder", str(folder.resolve()), names, items, presplit)
    classes = _class_dirs(folder)
    if not classes:
        raise DataError(f"{folder} has no class sub-folders; put each class's images in {folder}/<class name>/")
    names = [c.name for c in classes]
    items = [Item(f, i) for i, c in enumerate(classes) for f in _images_in(c)]
    return Dataset("folder", str(folder.resolve()), names, items)


def from_csv(path: Path, allow_outside_root: bool) -> Dataset:
    root = path.parent.resolve()
    rows: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            for lineno, row in enumerate(csv.reader(handle), 1):
                if not row or (lineno == 1 and [c.strip().lower() for c in row[:2]] == ["path", "label"]):
                    continue
                file = _csv_image(path, root, lineno, row, allow_outside_root)
                if file in seen:  # a repeated image would land in train and test alike, or carry two labels
                    raise DataError(
                        f"{path}:{lineno}: {row[0].strip()!r} is already listed on line {seen[file]}; list each "
                        "image once, with one label"
                    )
                seen[file] = lineno
                rows.append((file, row[1].strip()))
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; save the CSV as UTF-8") from None
    except (csv.Error, ValueError) as exc:  # ValueError: a NUL byte in a path
        raise DataError(f"{path} is not a readable CSV ({exc}); write one path,label row per image") from None
    if not rows:
        raise DataError(f"{path} has no path,label rows; write one row per image, e.g. 'cat/1.jpg,cat'")
    names = sorted({label for _, label in rows})
    index = {n: i for i, n in enumerate(names)}
    return Dataset("csv", str(root), names, [Item(f, index[label]) for f, label in rows])


def _csv_image(path: Path, root: Path, lineno: int, row: list[str], allow_outside_root: bool) -> str:
    """The checked absolute image path of one CSV row."""
    where = f"{path}:{lineno}"
    if len(row) < 2 or not row[0].strip() or not row[1].strip():
        raise DataError(f"{where}: expected 'path,label' with both set, got {','.join(row)!r}; fix or delete the row")
    file = (root / row[0].strip()).resolve()
    if not allow_outside_root and root not in file.parents:
        raise DataError(
            f"{where}: {row[0]!r} points outside {root}; keep images under the CSV's folder or pass --allow-outside-root"
        )
    if file.is_dir():
        raise DataError(f"{where}: {row[0]!r} is a folder; list one image file per row")
    if not file.is_file():
        header = " (a header row must read 'path,label')" if lineno == 1 else ""
        raise DataError(f"{where}: image {row[0]!r} does not exist (paths are relative to the CSV){header}")
    return str(file)


def from_arrays(path: Path) -> Dataset:
    """An image array with its labels (``.npz``, or ``<name>images.npy`` + ``<name>labels.npy``), checked."""
    images, labels, names = _read_arrays(path)
    _check_arrays(path, images, labels, names)
    if names is None:
        names = [str(v) for v in sorted(set(labels.tolist()))]
        index = {v: i for i, v in enumerate(sorted(set(labels.tolist())))}
        codes = [index[v] for v in labels.tolist()]
    else:
        codes = [int(v) for v in labels.tolist()]
        if min(codes) < 0 or max(codes) >= len(names):
            raise DataError(
                f"{path}: labels must index class_names (0..{len(names) - 1}), got {min(codes)}..{max(codes)}; "
                "fix the labels or class_names"
            )
    items = [Item(f"#{i}", c) for i, c in enumerate(codes)]
    return Dataset("array", str(path.resolve()), names, items, array=images)


def _read_arrays(path: Path) -> tuple[np.ndarray, np.ndarray, Optional[list[str]]]:
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                keys = set(archive.files)
                x_key = next((k for k in ("images", "x", "x_train") if k in keys), None)
                y_key = next((k for k in ("labels", "y", "y_train") if k in keys), None)
                if x_key is None or y_key is None:
                    raise DataError(
                        f"{path} needs arrays named 'images' and 'labels' (has: {', '.join(sorted(keys))}); "
                        "save with np.savez(path, images=..., labels=...)"
                    )
                images, labels = archive[x_key], archive[y_key]
                names = [str(n) for n in archive["class_names"]] if "class_names" in keys else None
        else:
            label_file = path.with_name(path.name.replace("images", "labels")) if "images" in path.name else None
            if label_file is None or not label_file.exists():
                raise DataError(f"{path}: name the arrays <name>images.npy and <name>labels.npy side by side")
            images, labels = np.load(path, allow_pickle=False), np.load(label_file, allow_pickle=False)
            names = None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile):
        raise DataError(
            f"{path} is not a numpy file edgetl reads (not .npz/.npy, truncated, or pickled objects, "
            "which are never loaded); save uint8 arrays with np.savez / np.save"
        ) from None
    return images, labels, names


def _check_arrays(path: Path, images: np.ndarray, labels: np.ndarray, names: Optional[list[str]]) -> None:
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] not in (1, 3, 4)):
        raise DataError(
            f"{path}: images must be (N, H, W[, 1|3|4]), got shape {images.shape}; "
            "save RGB as (N, H, W, 3) or grey as (N, H, W)"
        )
    if images.dtype != np.uint8:
        fix = (
            "if they are 0..1, scale them: (images * 255).round().astype(np.uint8)"
            if images.dtype.kind == "f"
            else "convert with .astype(np.uint8)"
        )
        raise DataError(f"{path}: images must be uint8 pixels 0-255, got {images.dtype}; {fix}")
    if images.ndim >= 3 and 0 in images.shape[1:3]:
        raise DataError(f"{path}: images have zero size {images.shape[1:3]}; save real (N, H, W[, C]) pixels")
    if labels.shape != (len(images),):
        raise DataError(f"{path}: labels must be shape ({len(images)},), got {labels.shape}; save one label per image")
    if not len(images):
        raise DataError(f"{path} holds no images; save at least a few per class")
    if names is not None and labels.dtype.kind not in "iu":
        raise DataError(
            f"{path}: labels must be integer indices into class_names, got {labels.dtype}; "
            "store indices, or leave class_names out to use the labels as names"
        )
    if labels.dtype.kind not in "iuUS":
        raise DataError(
            f"{path}: labels must be integers or strings, got {labels.dtype}; convert them with .astype(int)"
        )
