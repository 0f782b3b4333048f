"""Image paths in a run folder: relative to one recorded data root, wherever the run lives.

``edgetl train`` records the data root once, absolute, in ``data.json`` and every
image of ``splits/*.csv`` (and so of ``calibration.json``) relative to it, with
``/`` separators. Later stages resolve them against that root, so a run works from
any working directory and after the run folder is copied or moved, and the
calibration sha256 (over the relative list) does not depend on either. A
relative path is confined to the root lexically: no absolute path, no ``..``,
so an edited split cannot send a stage to ``/etc/passwd``. Run folders written
before this layout (absolute or working-directory-relative paths) are read when
their paths still lie under the recorded root, else refused with one line.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Optional

from edgetl import untrusted
from edgetl.errors import RunFolderError
from edgetl.runtime.model_card import read_json

LAYOUT = "relative-to-root"  # data.json "paths": how split refs are written
CSV_CELLS = "formula-safe"  # data.json "csv_cells": refs starting like a formula (or with ') carry one leading '

RETRAIN = "re-run `edgetl train` to write it again"


def record_root(kind: str, root: str, refs: Iterable[str]) -> str:
    """The data root to record: ``root``, widened to hold every file (``--allow-outside-root`` CSVs)."""
    if kind == "array":
        return root
    return os.path.commonpath([root, *(os.path.abspath(r) for r in refs)])


def relative_ref(root: str, ref: str) -> str:
    """``ref`` as written in a run folder: ``#N`` as is, a file relative to ``root`` with ``/``."""
    if ref.startswith("#"):
        return ref
    return PurePosixPath(*Path(os.path.relpath(os.path.abspath(ref), root)).parts).as_posix()


def resolve_ref(root: str, ref: str, where: str, legacy: bool = False) -> str:
    """The absolute path of a recorded ``ref`` under ``root``; ``#N`` array rows unchanged.

    Args:
        legacy: the run predates the relative layout: its absolute paths, and its
            paths relative to the working directory, are accepted while under ``root``.

    Raises:
        RunFolderError: the ref escapes the root (absolute, ``..``) or is not a row number.
    """
    if ref.startswith("#"):
        if not ref[1:].isdigit():
            raise RunFolderError(
                f"{where}: {ref!r} is not an image-array row (#N); the run folder was edited: {RETRAIN}"
            )
        return ref
    if legacy and "\0" not in ref:
        found = os.path.normpath(os.path.abspath(ref))
        if inside(root, found):
            return found
        if not os.path.isabs(ref):
            raise RunFolderError(
                f"{where}: this run folder (an older edgetl) records image paths relative to the directory "
                f"it was trained from; run the command from there, or {RETRAIN}"
            )
    path = PurePosixPath(ref)
    if not ref or path.is_absolute() or ".." in path.parts or "\0" in ref:
        raise RunFolderError(
            f"{where}: {ref[:120]!r} is not a path inside the run's data root {root}; "
            f"the run folder was edited or is damaged: {RETRAIN}"
        )
    return os.path.join(root, *path.parts)


def inside(root: str, path: str) -> bool:
    """Whether ``path`` is ``root`` or under it, lexically (symlinks inside the data are the data's own)."""
    root, path = os.path.normpath(root), os.path.normpath(path)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def read_meta(run_dir: Path) -> dict[str, Any]:
    """``data.json`` of a run, checked for the fields later stages use.

    Raises:
        RunFolderError: missing, truncated, or malformed.
    """
    path = Path(run_dir) / "data.json"
    if not path.is_file():
        raise RunFolderError(f"{run_dir} has no data.json; is it an `edgetl train` run folder?")
    try:
        meta = read_json(path)
    except (ValueError, OSError) as exc:
        raise RunFolderError(
            f"{path} is not readable JSON ({str(exc)[:120]}); the run folder is damaged: {RETRAIN}"
        ) from None
    names = meta.get("class_names") if isinstance(meta, dict) else None
    if (
        not isinstance(meta, dict)
        or meta.get("kind") not in ("folder", "csv", "array")
        or not isinstance(meta.get("root"), str)
        or not os.path.isabs(meta["root"])
        or not isinstance(names, list)
        or len(names) < 2
        or not all(isinstance(n, str) for n in names)
    ):
        raise RunFolderError(
            f"{path} lacks its kind, absolute root or class names; the run folder is damaged: {RETRAIN}"
        )
    return meta


def read_split_rows(
    run_dir: Path, name: str, num_classes: int, escaped: bool = False, allow_empty: bool = False
) -> list[tuple[str, int, str]]:
    """``(ref, label, where)`` of every row of ``splits/NAME.csv``; ``where`` is ``file:line``.

    ``escaped``: the refs were written formula-safe (``untrusted.csv_field``); the leading ``'`` is removed.
    ``allow_empty``: no rows is what the run recorded (a run without a test split).

    Raises:
        RunFolderError: missing, unreadable, no rows (unless ``allow_empty``), a bad label, or a malformed row.
    """
    path = Path(run_dir) / "splits" / f"{name}.csv"
    if not path.is_file():
        raise RunFolderError(f"{run_dir} has no splits/{name}.csv; is it an `edgetl train` run folder?")
    rows: list[tuple[str, int, str]] = []
    try:
        with open(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:  # non-UTF-8 file names
            reader = csv.DictReader(handle)
            for row in reader:
                where = f"{path}:{reader.line_num}"
                label = _label(row.get("label"), num_classes)
                if not isinstance(row.get("ref"), str) or label is None:
                    raise RunFolderError(
                        f"{where}: expected 'ref,label' with a label in 0..{num_classes - 1}; "
                        f"the run folder is damaged: {RETRAIN}"
                    )
                rows.append((untrusted.csv_value(row["ref"], escaped), label, where))
    except (UnicodeDecodeError, csv.Error, OSError) as exc:
        raise RunFolderError(
            f"{path} is not a readable split list ({str(exc)[:120]}); the run folder is damaged: {RETRAIN}"
        ) from None
    if not rows and not allow_empty:
        raise RunFolderError(f"{path} lists no images; the run folder is damaged: {RETRAIN}")
    return rows


def _label(text: Optional[str], num_classes: int) -> Optional[int]:
    try:
        value = int(str(text).strip())
    except ValueError:
        return None
    return value if 0 <= value < num_classes else None
