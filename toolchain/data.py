"""Datasets in, seeded splits out: class folders, ``path,label`` CSVs and numpy arrays.

A dataset is a list of items (a file path, or ``#index`` into an image array) with
integer labels into sorted class names. ``split`` makes the seeded, stratified
train/val/test lists that ``edgetl train`` writes into the run folder, so every
later stage (calibration, convert, parity) reads exactly the same held-out files.
Pixels are decoded and resized by ``edgetl.runtime.preprocess``, the device's code.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from edgetl import datapaths, log
from edgetl.errors import DataError, RunFolderError
from edgetl.runtime import decode, preprocess
from edgetl.runtime.model_card import write_bytes_atomic, write_json_atomic

SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class Item:
    """One labelled image: ``ref`` is a file path or ``#N`` (row N of an image array)."""

    ref: str
    label: int


@dataclasses.dataclass
class Dataset:
    """Where the images are and how they are labelled."""

    kind: str  # "folder", "csv" or "array"
    root: str
    class_names: list[str]
    items: list[Item]
    presplit: Optional[dict[str, list[Item]]] = None
    _array: Optional[np.ndarray] = dataclasses.field(default=None, repr=False)
    legacy: bool = False  # a run folder from before the relative layout (datapaths)

    def relative(self, ref: str) -> str:
        """``ref`` as a run folder records it: relative to ``root`` (``#N`` as is)."""
        return datapaths.relative_ref(self.root, ref)

    def load_ref(self, ref: str, size: int, interpolation: str) -> np.ndarray:
        """RGB uint8 pixels of a recorded ``ref`` (a manifest's), resolved under ``root``.

        Raises:
            RunFolderError: the ref escapes the root, or its image is gone or unreadable.
        """
        path = datapaths.resolve_ref(self.root, ref, "calibration.json", self.legacy)
        try:
            return self._load(Item(path, 0), size, interpolation)
        except (decode.ImageDecodeError, ValueError, IndexError) as exc:
            raise RunFolderError(
                f"calibration image {path} is unreadable or gone ({str(exc)[:120]}); restore it, "
                "or run `edgetl calibrate` to choose a new set"
            ) from None

    def pixels(
        self, items: Sequence[Item], size: int, interpolation: str = "area", warn: bool = True
    ) -> tuple[np.ndarray, list[Item], list[dict[str, str]]]:
        """Decode and resize ``items`` to RGB uint8 (N, size, size, 3); ``warn`` logs the skips.

        Returns:
            (pixels, items that decoded, skipped ``{"ref", "reason"}`` records): an
            unreadable file is counted and listed, never fatal.
        """
        out = np.empty((len(items), size, size, 3), dtype=np.uint8)
        kept: list[Item] = []
        skipped: list[dict[str, str]] = []
        for item in log.progress(items, len(items), f"decoding {size}px images"):
            try:
                out[len(kept)] = self._load(item, size, interpolation)
                kept.append(item)
            except (decode.ImageDecodeError, ValueError) as exc:
                skipped.append({"ref": item.ref, "reason": str(exc)})
        if skipped and warn:
            log.warn(f"skipped {len(skipped)} unreadable image(s), e.g. {skipped[0]['reason']}")
        return out[: len(kept)], kept, skipped

    def _load(self, item: Item, size: int, interpolation: str) -> np.ndarray:
        if item.ref.startswith("#"):
            assert self._array is not None
            rgb = preprocess.to_rgb(self._array[int(item.ref[1:])], "RGB")
            return preprocess.resize(rgb, size, size, interpolation)
        return decode.load_image(item.ref, size, size, interpolation)


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
        dataset = _from_folder(Path(os.path.abspath(source)))
    elif source.suffix.lower() == ".csv":
        dataset = _from_csv(source, allow_outside_root)
    elif source.suffix.lower() in (".npz", ".npy"):
        dataset = _from_arrays(source)
    else:
        raise DataError(f"{path}: unsupported data file; pass a folder, a .csv of path,label, or a .npz/.npy")
    _check_classes(dataset, min_classes)
    return dataset


def _images_in(folder: Path) -> list[str]:
    """Image files under ``folder`` as strings (see ``decode.image_files``: recursive, sorted, hidden skipped)."""
    return [str(path) for path in decode.image_files(folder)]


def _class_dirs(folder: Path) -> list[Path]:
    """Visible sub-folders, sorted; a symlinked one may point elsewhere, but not back up (a loop)."""
    found = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)
    here = folder.resolve()
    for sub in found:
        target = sub.resolve()
        if sub.is_symlink() and (target == here or target in here.parents):
            raise DataError(
                f"{sub} is a symlink to {target}, which holds the data folder itself (a loop); remove the link"
            )
    return found


def _from_folder(folder: Path) -> Dataset:
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


def _from_csv(path: Path, allow_outside_root: bool) -> Dataset:
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


def _from_arrays(path: Path) -> Dataset:
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
    return Dataset("array", str(path.resolve()), names, items, _array=images)


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

    Every class gets at least one image in each split when it has three or more.
    """
    rng = np.random.default_rng(seed)
    if dataset.presplit:
        given = {s: _cap(v, max_per_class, rng) for s, v in dataset.presplit.items()}
        if "val" not in given:
            given["train"], given["val"] = _stratify(given["train"], val_fraction, rng)
        if "test" not in given:
            given["train"], given["test"] = _stratify(given["train"], test_fraction, rng)
        empty = [s for s in SPLITS if not given[s]]
        if empty:
            raise DataError(
                f"{dataset.root}/{empty[0]}/ holds no images; add images to it, or remove the folder to split it off train"
            )
        return {s: given[s] for s in SPLITS}
    items = _cap(dataset.items, max_per_class, rng)
    rest, test = _stratify(items, test_fraction, rng)
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
    root = datapaths.record_root(dataset.kind, dataset.root, (it.ref for v in splits.values() for it in v))
    for name, items in splits.items():
        lines = ["ref,label"] + [f"{_csv_field(datapaths.relative_ref(root, it.ref))},{it.label}" for it in items]
        write_bytes_atomic(run_dir / "splits" / f"{name}.csv", ("\n".join(lines) + "\n").encode("utf-8"))
    counts = {
        s: np.bincount([i.label for i in v], minlength=len(dataset.class_names)).tolist() for s, v in splits.items()
    }
    skipped = [{**s, "ref": datapaths.relative_ref(root, s["ref"])} for s in skipped]
    write_json_atomic(
        run_dir / "data.json",
        {
            "kind": dataset.kind,
            "root": root,
            "paths": datapaths.LAYOUT,
            "class_names": dataset.class_names,
            "counts": counts,
            "skipped": skipped,
        },
    )


def _csv_field(value: str) -> str:
    return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\n\r') else value


def load_split(run_dir: Path, name: str) -> tuple[Dataset, list[Item]]:
    """The dataset a run was trained on and the items of one of its splits (absolute paths).

    Raises:
        RunFolderError: the run folder lacks ``data.json`` or the split list, either is
            damaged, a path escapes the data root, or the images are gone.
    """
    run_dir = Path(run_dir)
    meta = datapaths.read_meta(run_dir)
    legacy = meta.get("paths") != datapaths.LAYOUT
    rows = datapaths.read_split_rows(run_dir, name, len(meta["class_names"]))
    items = [Item(datapaths.resolve_ref(meta["root"], ref, where, legacy), label) for ref, label, where in rows]
    array = None
    if meta["kind"] == "array":
        if not Path(meta["root"]).is_file():
            raise RunFolderError(
                f"the run's image array {meta['root']} is gone; restore it there (data.json records it)"
            )
        array = _from_arrays(Path(meta["root"]))._array  # noqa: SLF001 - this module's own Dataset
        if any(int(it.ref[1:]) >= len(array) for it in items):
            raise RunFolderError(
                f"{run_dir}/splits/{name}.csv lists rows beyond {meta['root']}'s {len(array)} images; "
                "the array changed since training: restore it or re-run `edgetl train`"
            )
    elif not Path(items[0].ref).exists():
        raise RunFolderError(
            f"the run's images under {meta['root']} are gone; restore them there (data.json records "
            "where they were), or re-run `edgetl train`"
        )
    return Dataset(meta["kind"], meta["root"], list(meta["class_names"]), items, _array=array, legacy=legacy), items


def split_image_loader(
    run_dir: Path, size: int, interpolation: str, refs: Sequence[str] = ()
) -> Callable[[str], np.ndarray]:
    """``ref -> RGB uint8 (size, size, 3)`` for a run's calibration refs, resolved under its data root.

    ``refs`` are checked up front (each under the root, each file present), so a
    deleted calibration image fails in a line before any conversion starts.

    Raises:
        RunFolderError: a ref escapes the data root or its file is gone.
    """
    dataset, _ = load_split(run_dir, "train")
    for ref in refs:
        path = datapaths.resolve_ref(dataset.root, ref, f"{run_dir}/calibration.json", dataset.legacy)
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
