"""The root of edgetl's error family, shared by the toolchain and the device runtime.

``edgetl.errors.EdgeTLError`` is this class (the toolchain re-exports it), so one
``except EdgeTLError`` catches a bad run folder as well as a bad card, model,
source or runtime argument. Standard library only: the device imports nothing else.
"""

from __future__ import annotations


class EdgeTLError(Exception):
    """Base of every user-facing error; ``exit_code`` is what the ``edgetl`` CLI exits with.

    Exit codes of ``edgetl``: 0 success; 1 the parity gate failed (evidence that a
    threshold is crossed) or ``convert --max-drop`` found no int8 model within its budget; 2 usage or an invalid option/config value; 3 bad input or
    setup (data, run folder, weights, model, conversion); 4 parity inconclusive under
    ``--inconclusive fail``; 130 interrupted.
    """

    exit_code = 3


class ArgumentError(EdgeTLError, ValueError):
    """An argument of the runtime's Python API has the wrong kind or value; the message names it and the fix."""

    exit_code = 2
