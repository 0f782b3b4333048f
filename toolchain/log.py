"""Stage lines, notes and progress on stderr; stdout is kept for results.

Stage lines, notes and warnings are ``logging`` records of the ``edgetl`` logger:
a library user sees warnings only (Python's last-resort handler) unless they add
a handler; the ``edgetl`` command calls :func:`configure`, which prints them on
stderr as before. ``-q`` sets ``QUIET`` and silences all but warnings (errors
still reach the user through ``cli.py``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
QUIET = False
VERBOSE = False
LOGGER = logging.getLogger("edgetl")


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (click's test runner swaps it), warnings prefixed."""

    def emit(self, record: logging.LogRecord) -> None:
        prefix = "warning: " if record.levelno == logging.WARNING else ""
        sys.stderr.write(f"{prefix}{record.getMessage()}\n")
        sys.stderr.flush()


def configure() -> None:
    """Print the ``edgetl`` logger's records on stderr (once per process): what the command line shows."""
    if not any(isinstance(h, _StderrHandler) for h in LOGGER.handlers):
        LOGGER.addHandler(_StderrHandler())
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False


_OFFSET = 0  # stages already shown by the command that runs this stage (see continued_stages)
_LAST = 0  # the number of the last stage line


def stage(step: int, total: int, message: str) -> None:
    """A numbered stage line: ``[2/5] converting int8``."""
    global _LAST
    _LAST = _OFFSET + step
    if not QUIET:
        LOGGER.info(f"[{_OFFSET + step}/{_OFFSET + total}] {message}")


@contextlib.contextmanager
def continued_stages() -> Iterator[None]:
    """Number the block's stages after those already shown (``[8/11]`` after ``[7/7]``, not ``[1/4]`` again).

    For a command that runs a second stage at its end (``edgetl convert`` then the parity gate).
    """
    global _OFFSET
    saved, _OFFSET = _OFFSET, _LAST
    try:
        yield
    finally:
        _OFFSET = saved


def info(message: str) -> None:
    """A note under the current stage line."""
    if not QUIET:
        LOGGER.info(f"      {message}")


def warn(message: str) -> None:
    """Warnings are shown even with -q: they change what the user should trust."""
    LOGGER.warning(message)


def progress(items: Iterable[T], total: int, label: str) -> Iterator[T]:
    """Yield ``items`` with a tqdm bar on stderr when it is a terminal.

    Not a terminal (CI logs, ``2>file``): no bar and no carriage-return redraws, one
    plain line at the end. ``-q``: nothing.
    """
    show = not QUIET and total > 0
    start = time.monotonic()
    if show and sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(
            items, total=total, desc=f"      {label}", unit="img", file=sys.stderr, leave=False, dynamic_ncols=True
        )
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
