"""Output hygiene shared by every writer on the device side (and re-used by the toolchain).

Three small rules, each in one place so no writer forgets it:

- :func:`check_outputs`: an output path given by the user is never one of the
  inputs (the model, its card, an input image, a file inside an input folder, or
  a new image there that the next run would read), and two outputs are never
  the same file. Compared after resolving symlinks,
  and by inode when the file exists (a hard link is the same file).
- :func:`csv_cell` / :func:`csv_row`: text cells that a spreadsheet would read as a
  formula (first character ``= + - @``, TAB or CR; OWASP "CSV injection") get a
  leading single quote. File names and labels come from untrusted folders and
  model metadata; numbers we format ourselves are written as numbers.
- :func:`redact`: URL user information (``rtsp://user:pass@host``) is replaced by
  ``***`` wherever a source is shown (logs, JSON lines, ``/latest.json``, errors).

Standard library only: the device imports no toolchain and no TensorFlow.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from edgetl.runtime.decode import IMAGE_EXTENSIONS
from edgetl.runtime.model_card import card_path_for

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/\s@]*(?:@[^/\s@]*)*)@")


class OutputPathError(ValueError):
    """An output path would overwrite an input, or two outputs name one file; the message says which."""


def csv_cell(value: Any, numbers: bool = False) -> Any:
    """``value`` safe as a CSV cell: text that starts like a formula gets a leading ``'`` (numbers unchanged).

    Args:
        numbers: the text may be a number another tool formatted (``-0.25``, ``1e-05``):
            one that parses as a number is kept, so it stays a number in a spreadsheet.
    """
    if isinstance(value, str) and value.startswith(FORMULA_START):
        if numbers and _is_number(value):
            return value
        return "'" + value
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip() == text and "_" not in text


def csv_row(values: Iterable[Any]) -> list[Any]:
    """:func:`csv_cell` applied to every cell of a row."""
    return [csv_cell(v) for v in values]


def redact(text: str) -> str:
    """``text`` with the user information of every URL in it replaced: ``rtsp://***@host/path``."""
    return _USERINFO.sub(lambda m: m.group("scheme") + "***@", text)


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def _under(path: Path, folder: Path) -> bool:
    real, root = os.path.realpath(path), os.path.realpath(folder)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def output_conflict(
    output: str,
    inputs: Sequence[tuple[Optional[str], str]] = (),
    folders: Sequence[tuple[Optional[str], str]] = (),
    suffixes: Iterable[str] = (),
) -> Optional[str]:
    """Why ``output`` may not be written, or None when it may.

    Args:
        output: the path the user asked us to write.
        inputs: ``(path, what)`` of input files (``what`` names it in the message: "the model").
        folders: ``(path, what)`` of input folders: no output may replace a file inside one, nor
            add a file there that a later run would read as input (a name ending in ``suffixes``).
        suffixes: file endings the folders' readers take (image extensions), lower case.
    """
    target = Path(output)
    for path, what in inputs:
        if path and _same(target, Path(path)):
            return f"is {what} ({path})"
    for path, what in folders:
        if path and Path(path).is_dir() and _under(target, Path(path)):
            if target.exists() or target.is_symlink():
                return f"is a file of {what} ({path})"
            if target.suffix.lower() in set(suffixes):
                return f"would add an input file to {what} ({path})"
    return None


def check_outputs(
    outputs: Sequence[tuple[Optional[str], str]],
    inputs: Sequence[tuple[Optional[str], str]] = (),
    folders: Sequence[tuple[Optional[str], str]] = (),
    suffixes: Iterable[str] = (),
) -> None:
    """Refuse outputs that would overwrite an input or each other.

    Args:
        outputs: ``(path or None, option)``, e.g. ``(config.csv, "--csv")``; ``-`` (stdout) is skipped.
        inputs, folders, suffixes: as in :func:`output_conflict`.

    Raises:
        OutputPathError: one line naming the option, the clash and the fix.
    """
    given = [(p, option) for p, option in outputs if p and p != "-"]
    for i, (path, option) in enumerate(given):
        reason = output_conflict(path, inputs, folders, suffixes)
        if reason is None:
            reason = next(
                (f"is the same file as {other} ({p})" for p, other in given[:i] if _same(Path(path), Path(p))), None
            )
        if reason is not None:
            raise OutputPathError(
                f"{option} {path} {reason}: an output may not overwrite an input or another output; "
                "choose a path outside the inputs"
            )


def check_run_outputs(config: Any) -> None:
    """``edge-classify``'s ``--csv``/``--summary-json``/``--confusion``: none is an input (model, card, image) or another.

    Args:
        config: the run's ``RunConfig`` (``model``, ``card``, ``video``, ``images`` and the three outputs).

    Raises:
        OutputPathError: the option, the clash and the fix, in one line.
    """

    card = config.card or str(card_path_for(Path(config.model)))
    inputs = [(config.model, "the model"), (card, "the model's card"), (config.video, "the input video")]
    inputs += [(p, "an input image") for p in config.images if not os.path.isdir(p)]
    folders = [(p, "the input folder") for p in config.images if os.path.isdir(p)]
    outputs = [(config.csv, "--csv"), (config.summary_json, "--summary-json"), (config.confusion, "--confusion")]
    check_outputs(outputs, inputs, folders, IMAGE_EXTENSIONS)
