"""Decoded pixels on disk: each image decoded once, in parallel, into a ``.npy`` per split.

``edgetl train`` used to decode every split into one in-memory uint8 array, so
memory grew with the dataset (60,000 photos at 224 px are 9 GB). Here each split
becomes a uint8 ``(N, size, size, 3)`` ``.npy`` file (``np.load(mmap_mode="r")``
opens it) in a cache folder, decoded by ``edgetl.runtime.decode`` -- the
device's decode and resize, the one preprocessing contract -- in a thread pool
(OpenCV releases the GIL).

Rows are written and read with ``os.pwrite``/``os.pread``, not through a memory
map: pages of a mapped file count towards the process's resident memory once
touched, so reading a 4.6 GB map in an epoch would show a 4.6 GB process; plain
reads leave those pages in the kernel's page cache, which it can drop.

The cache lives under ``$EDGETL_CACHE/pixels``, else ``$XDG_CACHE_HOME/edgetl/pixels``
(``~/.cache/edgetl/pixels``; ``$EDGETL_PIXEL_CACHE`` moves it alone),
beside ``edgetl``'s weights cache, not in the run folder: a second run on the
same data (other hyperparameters, another ``--output``, a resume) reuses it, and
run folders stay small. A file's name is a hash of what its content depends on
(each image's path, size, mtime, inode and ctime -- or the array file's --, the
labels, the pixel size and the interpolation), so changed data gets a new file,
never a stale one. The cache is not trusted blindly: an entry is reused only when
its shape, its rows and a CRC-32 of its pixels (stored beside it) check out;
anything else is a miss and the split is decoded again. Files appear complete or
not at all (temporary name + rename);
``edgetl cache clean`` frees the space; a cache past 5 GB warns when it grows.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import os
import zlib
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
from edgetl import log
from edgetl.data.items import Dataset, Item
from edgetl.runtime import decode
from edgetl.runtime.model_card import read_json, write_json_atomic

FORMAT = 2  # bump when what a cached file holds changes
CHUNK = 64  # images per decode task


CACHE_ENV = "EDGETL_CACHE"  # moves all of edgetl's cache: weights/ and pixels/
PIXEL_CACHE_ENV = "EDGETL_PIXEL_CACHE"  # moves the pixel cache alone (overrides EDGETL_CACHE for it)
WARN_ENV = "EDGETL_PIXEL_CACHE_WARN_GB"
WARN_GB = 5.0  # a pixel cache past this size gets one warning per new entry


def cache_root() -> Path:
    """edgetl's cache: ``$EDGETL_CACHE``, else ``$XDG_CACHE_HOME/edgetl``, else ``~/.cache/edgetl``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "edgetl"


def default_dir() -> Path:
    """``$EDGETL_PIXEL_CACHE``, else ``pixels`` in :func:`cache_root` (``~/.cache/edgetl/pixels``)."""
    if os.environ.get(PIXEL_CACHE_ENV):
        return Path(os.environ[PIXEL_CACHE_ENV]).expanduser()
    return cache_root() / "pixels"


def folder_size(folder: Path) -> tuple[int, int]:
    """(bytes, files) under ``folder``; (0, 0) when it does not exist."""
    total = count = 0
    for path in Path(folder).rglob("*") if Path(folder).is_dir() else ():
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
            count += 1
    return total, count


def size_warning(folder: Path) -> Optional[str]:
    """The warning for a pixel cache larger than ``$EDGETL_PIXEL_CACHE_WARN_GB`` (default 5), or None."""
    try:
        limit = float(os.environ.get(WARN_ENV) or WARN_GB)
    except ValueError:
        limit = WARN_GB
    size = folder_size(folder)[0]
    if size <= limit * 1e9:
        return None
    return (
        f"the pixel cache {folder} holds {size / 1e9:.1f} GB (over {limit:g} GB): `edgetl cache clean` empties it "
        "(entries are decoded again when needed)"
    )


class Rows:
    """Random access to the rows of a ``.npy`` array by ``pread``: nothing stays mapped or resident."""

    def __init__(self, path: Path) -> None:
        view = np.load(path, mmap_mode="r")  # reads the header only
        self.path = Path(path)
        self.shape: tuple[int, ...] = tuple(view.shape)
        self.dtype = view.dtype
        self.offset = int(view.offset)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        del view
        self.fd = os.open(self.path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` (one read)."""
        start, stop = min(start, len(self)), min(stop, len(self))
        raw = os.pread(self.fd, (stop - start) * self.row_bytes, self.offset + start * self.row_bytes)
        return np.frombuffer(raw, dtype=self.dtype).reshape((stop - start,) + self.shape[1:])

    def take(self, indices: Sequence[int]) -> np.ndarray:
        """Rows at ``indices`` in that order (consecutive indices are read together)."""
        out = np.empty((len(indices),) + self.shape[1:], dtype=self.dtype)
        order = np.argsort(indices, kind="stable")
        chosen = np.asarray(indices)[order]
        i = 0
        while i < len(chosen):
            j = i + 1
            while j < len(chosen) and chosen[j] == chosen[j - 1] + 1:
                j += 1
            out[order[i:j]] = self.read(int(chosen[i]), int(chosen[j - 1]) + 1)
            i = j
        return out

    def __del__(self) -> None:
        try:
            os.close(self.fd)
        except (AttributeError, OSError):
            pass


def create_npy(path: Path, dtype: str, shape: tuple[int, ...]) -> int:
    """Create a sparse ``.npy`` file of ``shape`` and return where its data starts (no page is touched)."""
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    offset = int(array.offset)
    del array
    return offset


def pwrite_rows(fd: int, offset: int, start: int, rows: np.ndarray) -> None:
    """Write ``rows`` as rows ``start...`` of a ``.npy`` whose data starts at ``offset``."""
    data = np.ascontiguousarray(rows).tobytes()
    row_bytes = len(data) // max(len(rows), 1)
    os.pwrite(fd, data, offset + start * row_bytes)


@contextlib.contextmanager
def writing(path: Path, dtype: str, shape: tuple[int, ...]) -> Iterator[Callable[[int, np.ndarray], None]]:
    """Fill a new ``.npy`` at ``path`` through ``write(start_row, rows)``; it appears only when the block succeeds.

    The file is built under a temporary name beside ``path`` and renamed at the
    end; on any error (or Ctrl-C) the temporary file is removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
    offset = create_npy(tmp, dtype, shape)
    fd = os.open(tmp, os.O_RDWR)
    try:
        yield lambda start, rows: pwrite_rows(fd, offset, start, rows)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)


@dataclasses.dataclass
class Split:
    """One decoded split: its pixels on disk, the items that decoded, their labels, the skips."""

    rows: Rows
    items: list[Item]
    labels: np.ndarray
    skipped: list[dict[str, str]]


def key(dataset: Dataset, items: Sequence[Item], size: int, interpolation: str) -> str:
    """A hash of everything the decoded pixels depend on.

    A file is identified by path, size, mtime, inode and ctime: ``cp -p``, ``rsync -t``
    or tar restore a file's size and mtime, but a rewritten file gets a new ctime
    (and often a new inode), which no user-level tool sets back. Paths are hashed as
    bytes (``surrogateescape``), so file names that are not UTF-8 work too.
    """
    digest = hashlib.sha256(json.dumps([FORMAT, dataset.kind, size, interpolation]).encode())
    if dataset.kind == "array":
        digest.update(_identity(dataset.root))
    for item in items:
        if item.ref.startswith("#"):
            digest.update(f"{item.ref}\0{item.label}\n".encode())
            continue
        digest.update(_identity(item.ref) + f"\0{item.label}\n".encode())
    return digest.hexdigest()[:32]


def _identity(path: str) -> bytes:
    try:
        st = os.stat(path)
        facts = f"{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0{st.st_ctime_ns}"
    except (OSError, ValueError):
        facts = "missing"
    return os.fsencode(path) + b"\0" + facts.encode()


def checksums(rows: Rows, kept: Sequence[int]) -> list[int]:
    """CRC-32 of each block of ``CHUNK`` rows and the item indices they hold: stored with an entry, compared on reuse.

    The indices are part of it, so a record whose rows were re-paired with other
    items (other labels) fails the check like changed pixels do.
    """
    return [
        zlib.crc32(
            rows.read(start, start + CHUNK).data, zlib.crc32(np.asarray(kept[start : start + CHUNK], "<i8").data)
        )
        for start in range(0, len(rows), CHUNK)
    ]


def load_split(
    dataset: Dataset,
    items: Sequence[Item],
    size: int,
    interpolation: str = "area",
    folder: Optional[Path] = None,
    name: str = "images",
) -> Split:
    """The split's decoded pixels from the cache, decoding (and caching) them first when needed.

    An entry is reused only when it checks out (:func:`_verified`): its shape, the
    rows it keeps and their checksums. Anything else -- a zeroed, truncated or
    edited file, a damaged ``.json`` -- is a cache miss: the entry is decoded again.
    """
    folder = Path(folder) if folder else default_dir()
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{size}px-{interpolation}-{key(dataset, items, size, interpolation)}"
    npy, meta_path = folder / f"{stem}.npy", folder / f"{stem}.json"
    found = _verified(npy, meta_path, len(items), size)
    if found is None:
        kept_at, skipped = _decode_to(npy, dataset, items, size, interpolation, name)
        rows = Rows(npy)
        meta = {"format": FORMAT, "shape": list(rows.shape), "kept": kept_at, "crc32": checksums(rows, kept_at)}
        meta["skipped"] = [{"index": i, "reason": _text(reason)} for i, reason in skipped]
        write_json_atomic(meta_path, meta)  # written last: its presence marks a complete entry
        warning = size_warning(folder)
        if warning:
            log.warn(warning)
    else:
        rows, meta = found
        log.info(f"{name}: {len(meta['kept'])} decoded images reused from {npy}")
    kept = [items[i] for i in meta["kept"]]
    skips = [{"ref": items[s["index"]].ref, "reason": s["reason"]} for s in meta["skipped"]]
    return Split(rows, kept, np.asarray([it.label for it in kept], dtype=np.int32), skips)


def _text(reason: str) -> str:
    """A skip reason that JSON can hold (a non-UTF-8 file name inside it is escaped)."""
    return reason.encode("utf-8", "backslashreplace").decode("utf-8")


def _verified(npy: Path, meta_path: Path, count: int, size: int) -> Optional[tuple[Rows, dict]]:
    """The entry's rows and record when every check passes; None (a miss, logged) otherwise.

    The record names rows by their index into this split's items (the key hashed
    those items), never by a path read back from disk, so a shifted or edited
    record cannot pair pixels with another image's label.
    """
    if not meta_path.exists() or not npy.exists():
        return None
    try:
        meta = read_json(meta_path)
        rows = Rows(npy)
        problem = _problem(meta, rows, count, size)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        problem = f"an unreadable entry ({type(exc).__name__})"
    if problem:
        log.warn(f"pixel cache entry {npy.name} has {problem}: decoding again")
        return None
    return rows, meta


def _problem(meta: dict, rows: Rows, count: int, size: int) -> str:
    """What is wrong with a cache entry (its record ``meta`` and its rows), or ``""``."""
    kept, skipped = meta["kept"], meta["skipped"]
    if meta.get("format") != FORMAT:
        return "a record of another format"
    if sorted([*kept, *(s["index"] for s in skipped)]) != list(range(count)) or kept != sorted(kept):
        return "rows missing or duplicated"
    expected = (len(kept), size, size, 3)
    if rows.shape != expected or rows.dtype != np.uint8 or list(rows.shape) != meta["shape"]:
        return f"shape {rows.shape} instead of {expected}"
    if rows.path.stat().st_size != rows.offset + len(kept) * rows.row_bytes:
        return f"a file size of {rows.path.stat().st_size} bytes that does not match its shape"
    if checksums(rows, kept) != meta["crc32"]:
        return "pixels that changed since they were decoded (checksum)"
    return ""


def _decode_to(
    npy: Path, dataset: Dataset, items: Sequence[Item], size: int, interpolation: str, name: str
) -> tuple[list[int], list[tuple[int, str]]]:
    """Decode ``items`` in parallel into ``npy``; unreadable ones are left out.

    Returns:
        the indices of the items kept (the rows of ``npy``, in order) and
        ``(index, reason)`` of each skipped one.
    """
    ok = np.zeros(len(items), dtype=bool)
    reasons: dict[int, str] = {}
    with writing(npy, "uint8", (len(items), size, size, 3)) as write:

        def work(start: int) -> int:
            block = np.zeros((min(CHUNK, len(items) - start), size, size, 3), dtype=np.uint8)
            for i in range(len(block)):
                try:
                    block[i] = dataset.load_item(items[start + i], size, interpolation)
                    ok[start + i] = True
                except (decode.ImageDecodeError, ValueError) as exc:
                    reasons[start + i] = str(exc)
            write(start, block)
            return len(block)

        workers = max(1, min(8, os.cpu_count() or 1))
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(work, s) for s in range(0, len(items), CHUNK)]

            def done() -> Iterator[int]:  # one tick per image, as each chunk completes
                for future in concurrent.futures.as_completed(futures):
                    yield from range(future.result())

            for _ in log.progress(done(), len(items), f"{name}: decoding at {size}px ({workers} threads)"):
                pass
    if not ok.all():
        _shrink(npy, ok)  # before the .json that marks the entry complete is written
    return [int(i) for i in np.flatnonzero(ok)], [(i, reasons[i]) for i in sorted(reasons)]


def _shrink(path: Path, ok: np.ndarray) -> None:
    """Rewrite ``path`` keeping only the rows that decoded (rare: a few unreadable files)."""
    src = Rows(path)
    kept = np.flatnonzero(ok)
    with writing(path, "uint8", (len(kept),) + src.shape[1:]) as write:
        for start in range(0, len(kept), 256):
            write(start, src.take(kept[start : start + 256]))
