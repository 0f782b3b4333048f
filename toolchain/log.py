"""Stage lines, notes and progress on stderr; stdout is kept for results.

``-q`` sets ``QUIET`` and silences all of it (errors still reach the user
through ``cli.py``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
QUIET = False
VERBOSE = False


def stage(step: int, total: int, message: str) -> None:
    """A numbered stage line: ``[2/5] converting int8``."""
    if not QUIET:
        print(f"[{step}/{total}] {message}", file=sys.stderr, flush=True)


def info(message: str) -> None:
    if not QUIET:
        print(f"      {message}", file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """Warnings are shown even with -q: they change what the user should trust."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def progress(items: Iterable[T], total: int, label: str) -> Iterator[T]:
    """Yield ``items`` with a tqdm bar on stderr when it is a terminal.

    Not a terminal (CI logs, ``2>file``): no bar and no carriage-return redraws, one
    plain line at the end. ``-q``: nothing.
    """
    show = not QUIET and total > 0
    start = time.monotonic()
    if show and sys.stderr.isatty():
        from tqdm import tqdm  # noqa: PLC0415

        yield from tqdm(items, total=total, desc=f"      {label}", unit="img", file=sys.stderr, leave=False, dynamic_ncols=True)
    else:
        yield from items
    if show:
        print(f"      {label}: {total} in {time.monotonic() - start:.1f}s", file=sys.stderr, flush=True)


@contextlib.contextmanager
def quiet_native() -> Iterator[None]:
    """Hide what TensorFlow, absl and the TFLite converter print (C++ and Python) unless -v.

    File descriptors 1 and 2 are pointed at a temporary file for the block; when
    the block raises, the captured text is replayed on stderr so the cause is not
    lost. With ``VERBOSE`` nothing is hidden.
    """
    if VERBOSE:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    sink = tempfile.TemporaryFile()
    try:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
    except BaseException:
        sink.seek(0)
        sys.stderr.write(sink.read()[-4000:].decode("utf-8", "replace"))
        raise
    finally:
        os.close(saved[0])
        os.close(saved[1])
        sink.close()
