"""Datasets in, seeded splits out: class folders, ``path,label`` CSVs and numpy arrays.

A dataset is a list of items (a file path, or ``#index`` into an image array) with
integer labels into sorted class names. ``split`` makes the seeded, stratified
train/val/test lists that ``edgetl train`` writes into the run folder, so every
later stage (calibration, convert, parity) reads exactly the same held-out files.
Pixels are decoded and resized by ``edgetl.runtime.preprocess``, the device's code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from edgetl import untrusted
from edgetl.data import paths, sources
from edgetl.data.items import SPLITS, Dataset, Item
from edgetl.data.sources import from_arrays
from edgetl.errors import DataError, RunFolderError
from edgetl.runtime.model_card import write_bytes_atomic, write_json_atomic


def discover(path: str, allow_outside_root: bool = False, min_classes: int = 2) -> Dataset:
    """Read a dataset description from a folder, CSV, ``.npz`` or ``.npy``.

    ``min_classes`` is 2 for training (a classifier needs two); evaluation data
    (``parity --data``) may hold a single class of the model's labels.

    Raises:
        DataError: missing path, no images, fewer than two classes, an empty class,
            or a malformed CSV/array.
    """
    source = Path(path).expanduser()
    if not source.exists():
        raise DataError(f"{path} does not exist; pass a folder of class sub-folders, a .csv of path,label, or a .npz")
    if source.is_dir():
        dataset = sources.from_folder(Path(os.path.abspath(source)))
    elif source.suffix.lower() == ".csv":
        dataset = sources.from_csv(source, allow_outside_root)
    elif source.suffix.lower() in (".npz", ".npy"):
        dataset = sources.from_arrays(source)
    else:
        raise DataError(f"{path}: unsupported data file; pass a folder, a .csv of path,label, or a .npz/.npy")
    _check_classes(dataset, min_classes)
    return dataset


def _check_classes(dataset: Dataset, min_classes: int = 2) -> None:
    counts = np.bincount([it.label for it in dataset.items], minlength=len(dataset.class_names))
    if len(dataset.class_names) < min_classes:
        found = f"only class {dataset.class_names[0]!r}" if dataset.class_names else "no classes"
        raise DataError(f"{dataset.root}: found {found}; a classifier needs at least two, add images of another class")
    odd = [n for n in dataset.class_names if not n.strip() or any(ord(c) < 32 or ord(c) == 127 for c in n)]
    if odd:
        raise DataError(
            f"{dataset.root}: class name {odd[0]!r} is blank or has control characters "
            "(labels.txt holds one name per line); rename it"
        )
    empty = [n for n, c in zip(dataset.class_names, counts) if c == 0]
    if empty:
        raise DataError(f"{dataset.root}: class(es) {', '.join(empty)} have no images; add images or remove the folder")


def check_readable(dataset: Dataset, kept: dict[str, list[Item]], skipped: list[dict[str, str]]) -> None:
    """Refuse a dataset that decoding left unusable: a class with no readable training image.

    Raises:
        DataError: no readable train or val image, or a class whose train images were all skipped.
    """
    example = f" (e.g. {skipped[0]['reason']})" if skipped else ""
    if (not kept["train"] or not kept["val"]) and not skipped:
        raise DataError(
            f"{dataset.root}: too few images to split ({len(dataset.items)} in {len(dataset.class_names)} classes leave "
            "the train or val split empty); add at least 3 images per class"
        )
    if not kept["train"] or not kept["val"]:
        raise DataError(
            f"{dataset.root}: no readable training or validation images left, {len(skipped)} skipped{example}; "
            "replace or remove the unreadable files"
        )
    counts = class_balance(kept["train"], len(dataset.class_names))
    empty = [n for n, c in zip(dataset.class_names, counts) if c == 0]
    if empty:
        raise DataError(
            f"{dataset.root}: class(es) {', '.join(empty)} have no readable training image, {len(skipped)} "
            f"skipped{example}; replace or remove the unreadable files"
        )


def split(
    dataset: Dataset, val_fraction: float, test_fraction: float, seed: int, max_per_class: Optional[int] = None
) -> dict[str, list[Item]]:
    """Seeded, stratified train/val/test lists (a given train/val/test layout is kept).

    Every class gets at least one image in each split when it has three or more;
    ``test_fraction`` 0 keeps no test split (the user tests on held-out images of
    their own, ``edgetl parity RUN --data DIR``), unless the layout gives one.
    """
    rng = np.random.default_rng(seed)
    if dataset.presplit:
        given = {s: _cap(v, max_per_class, rng) for s, v in dataset.presplit.items()}
        if "val" not in given:
            given["train"], given["val"] = _stratify(given["train"], val_fraction, rng)
        if "test" not in given:
            given["train"], given["test"] = (
                _stratify(given["train"], test_fraction, rng) if test_fraction else (given["train"], [])
            )
        empty = [s for s in SPLITS if not given[s] and (s != "test" or test_fraction or "test" in dataset.presplit)]
        if empty:
            raise DataError(
                f"{dataset.root}/{empty[0]}/ holds no images; add images to it, or remove the folder to split it off train"
            )
        return {s: given[s] for s in SPLITS}
    items = _cap(dataset.items, max_per_class, rng)
    rest, test = _stratify(items, test_fraction, rng) if test_fraction else (items, [])
    train, val = _stratify(rest, val_fraction / (1 - test_fraction), rng)
    return {"train": train, "val": val, "test": test}


def _cap(items: list[Item], per_class: Optional[int], rng: np.random.Generator) -> list[Item]:
    if per_class is None:
        return list(items)
    out: list[Item] = []
    for label in sorted({it.label for it in items}):
        members = [it for it in items if it.label == label]
        keep = rng.permutation(len(members))[:per_class]
        out.extend(members[i] for i in sorted(keep))
    return out


def _stratify(items: list[Item], fraction: float, rng: np.random.Generator) -> tuple[list[Item], list[Item]]:
    keep: list[Item] = []
    held: list[Item] = []
    for label in sorted({it.label for it in items}):
        members = [it for it in items if it.label == label]
        order = rng.permutation(len(members))
        n_held = min(max(1, round(len(members) * fraction)), len(members) - 1) if len(members) > 1 else 0
        held.extend(members[i] for i in order[:n_held])
        keep.extend(members[i] for i in order[n_held:])
    return keep, held


def write_splits(run_dir: Path, dataset: Dataset, splits: dict[str, list[Item]], skipped: list[dict[str, str]]) -> None:
    """Record the data source and split lists in the run folder (``data.json``, ``splits/*.csv``).

    The root is recorded once, absolute; every image relative to it (``datapaths``),
    so the run folder works from any directory and after being moved.
    """
    root = paths.record_root(dataset.kind, dataset.root, (it.ref for v in splits.values() for it in v))
    for name, items in splits.items():
        lines = ["ref,label"] + [f"{untrusted.csv_field(paths.relative_ref(root, it.ref))},{it.label}" for it in items]
        text = "\n".join(lines) + "\n"  # a file name that is not UTF-8 keeps its bytes (read back alike)
        write_bytes_atomic(run_dir / "splits" / f"{name}.csv", text.encode("utf-8", "surrogateescape"))
    counts = {
        s: np.bincount([i.label for i in v], minlength=len(dataset.class_names)).tolist() for s, v in splits.items()
    }
    skipped = [{**s, "ref": paths.relative_ref(root, s["ref"])} for s in skipped]
    write_json_atomic(
        run_dir / "data.json",
        {
            "kind": dataset.kind,
            "root": root,
            "root_hmac": untrusted.sign_root(dataset.kind, root),  # this machine's word that the root is its data
            "paths": paths.LAYOUT,
            "csv_cells": paths.CSV_CELLS,
            "class_names": dataset.class_names,
            "counts": counts,
            "skipped": skipped,
        },
    )


def load_split(
    run_dir: Path, name: str, data_root: Optional[str] = None, elsewhere: str = ""
) -> tuple[Dataset, list[Item]]:
    """The dataset a run was trained on and the items of one of its splits (absolute paths).

    Args:
        data_root: where the images are, as the user names it (``--data-root``); None reads
            the root ``data.json`` records, which only a run trained on this machine may do.
        elsewhere: the other way this stage can get images, for the refusal (``or pass --data DIR``).

    Raises:
        RunFolderError: the run folder lacks ``data.json`` or the split list, either is
            damaged, its root was not recorded on this machine and no ``data_root`` is
            given, a path escapes the data root, or the images are gone.
    """
    run_dir = Path(run_dir)
    meta = paths.read_meta(run_dir)
    if data_root is not None:
        meta = {**meta, "root": os.path.abspath(os.path.expanduser(data_root))}
    elif not untrusted.root_verified(meta):
        raise RunFolderError(
            f"{run_dir}/data.json records its images under {meta['root'][:200]}, but not with this machine's key "
            "(a run folder trained elsewhere, by an older edgetl, or edited), so edgetl reads no images through it; "
            f"pass --data-root DIR, the folder that holds this run's images{elsewhere}"
        )
    legacy = meta.get("paths") != paths.LAYOUT
    no_test = name == "test" and not sum(meta.get("counts", {}).get("test", [1]))  # trained with --test-fraction 0
    rows = paths.read_split_rows(
        run_dir, name, len(meta["class_names"]), meta.get("csv_cells") == paths.CSV_CELLS, allow_empty=no_test
    )
    items = [Item(paths.resolve_ref(meta["root"], ref, where, legacy), label) for ref, label, where in rows]
    array = None
    if meta["kind"] == "array":
        if not Path(meta["root"]).is_file():
            raise RunFolderError(
                f"the run's image array {meta['root']} is gone; restore it there (data.json records it)"
            )
        array = from_arrays(Path(meta["root"])).array
    _check_array_refs(run_dir, name, items, meta["root"], array)
    if array is None and items and not Path(items[0].ref).exists():
        raise RunFolderError(
            f"the run's images under {meta['root']} are gone; restore them there (data.json records "
            "where they were), pass --data-root DIR where they are now, or re-run `edgetl train`"
        )
    return Dataset(meta["kind"], meta["root"], list(meta["class_names"]), items, array=array, legacy=legacy), items


def _check_array_refs(run_dir: Path, name: str, items: Sequence[Item], root: str, array: Optional[np.ndarray]) -> None:
    """``#N`` refs name rows of the run's array (and only an array run has them): a damaged split file is one line.

    Raises:
        RunFolderError: a ``#N`` ref in a run of image files, a ref that is not ``#`` and digits, or a row
            beyond the array.
    """
    for item in items:
        if array is None and not item.ref.startswith("#"):
            continue
        row = item.ref[1:] if item.ref.startswith("#") else ""
        if array is None or not row.isdigit():
            raise RunFolderError(
                f"{run_dir}/splits/{name}.csv lists {item.ref!r}, which is not "
                f"{'a row #N of the image array' if array is not None else 'an image file of this run'}; "
                "the split file is damaged: re-run `edgetl train`"
            )
        if int(row) >= len(array):
            raise RunFolderError(
                f"{run_dir}/splits/{name}.csv lists rows beyond {root}'s {len(array)} images; "
                "the array changed since training: restore it or re-run `edgetl train`"
            )


def split_image_loader(
    run_dir: Path, size: int, interpolation: str, refs: Sequence[str] = (), data_root: Optional[str] = None
) -> Callable[[str], np.ndarray]:
    """``ref -> RGB uint8 (size, size, 3)`` for a run's calibration refs, resolved under its data root.

    ``refs`` are checked up front (each under the root, each file present), so a
    deleted calibration image fails in a line before any conversion starts.

    Raises:
        RunFolderError: a ref escapes the data root or its file is gone.
    """
    dataset, _ = load_split(run_dir, "train", data_root)
    for ref in refs:
        path = paths.resolve_ref(dataset.root, ref, f"{run_dir}/calibration.json", dataset.legacy)
        if not ref.startswith("#") and not os.path.isfile(path):
            raise RunFolderError(
                f"calibration image {path} is gone; restore it, or run `edgetl calibrate` to choose a new set"
            )
    return lambda ref: dataset.load_ref(ref, size, interpolation)


def class_balance(items: Sequence[Item], num_classes: int) -> list[int]:
    return np.bincount([it.label for it in items], minlength=num_classes).tolist()


def describe(splits: dict[str, Any], class_names: Sequence[str]) -> str:
    sizes = ", ".join(f"{s} {len(v)}" for s, v in splits.items())
    return f"{len(class_names)} classes ({', '.join(class_names[:6])}{'…' if len(class_names) > 6 else ''}); {sizes}"
