"""Hide the native (C++) log lines TensorFlow and LiteRT write straight to file descriptor 2.

TensorFlow's import prints ``oneDNN custom operations are on``, ``Could not find
cuda drivers`` and absl's ``All log messages before absl::InitializeLog()`` before
any Python logging exists, and ``TF_CPP_MIN_LOG_LEVEL`` does not reach them (they
are written before absl reads it); the first device query adds ``E0000 …
failed call to cuInit … (303)`` on every CPU-only machine; LiteRT's interpreter
announces ``Created TensorFlow Lite XNNPACK delegate for CPU``; OpenCV's FFmpeg backend
writes ``[tcp @ 0x…] Failed to resolve hostname …`` when a stream does not open. None of them is
actionable, so :func:`hide_native_logs` points fd 2 at a temporary file around the
code that prints them, then writes back every captured line that is *not* one of
these known patterns (a real error is never swallowed). ``SHOW = True`` (``edgetl
-v``, or ``EDGETL_NATIVE_LOGS=1`` in the environment, e.g. for ``edge-classify``)
turns the capture off.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from typing import Iterator

SHOW = os.environ.get("EDGETL_NATIVE_LOGS", "") not in ("", "0")  # -v: let native logs through untouched

# glog/absl lines ("I0000 00:00:1796398594.010108   25079 port.cc:153] ..."), absl's pre-init
# banner, the CPU-feature line's continuation and LiteRT's delegate banner.
NATIVE_LINE = re.compile(
    r"^(?:[IWEF]\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\] "
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|To enable the following instructions: .*rebuild TensorFlow"
    r"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU"
    r"|INFO: Initialized TensorFlow Lite runtime"
    r"|\[[\w:-]+ @ 0x[0-9a-f]+\] )"  # FFmpeg's av_log prefix (OpenCV's video backend): "[tcp @ 0x55b4...] ..."
)


def drop_native_lines(text: str) -> str:
    """``text`` without the lines that match :data:`NATIVE_LINE`."""
    return "".join(line for line in text.splitlines(keepends=True) if not NATIVE_LINE.match(line))


@contextlib.contextmanager
def hide_native_logs() -> Iterator[None]:
    """Capture fd 2 for the block; replay what is not a known native log line.

    On an exception everything captured is replayed (the native lines may explain
    it). A no-op when :data:`SHOW` is set.
    """
    if SHOW:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    sink = tempfile.TemporaryFile()
    failed = False
    try:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
    finally:
        os.close(saved)
        sink.seek(0)
        text = sink.read().decode("utf-8", "replace")
        sink.close()
        rest = text if failed else drop_native_lines(text)
        if rest:
            sys.stderr.write(rest)
            sys.stderr.flush()
