"""What the run report reads: the run folder's own files, each checked for the shape the page needs.

A run folder may come from someone else (a CI artifact, a colleague's upload), so
nothing here trusts it: every JSON value is checked for its type before use, an
unreadable file leaves its section out with a note, and image paths are resolved
only under the run's recorded data root (:mod:`edgetl.data.paths`).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Optional

from edgetl import runfolder
from edgetl.runtime.model_card import ModelCard

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_EMBEDDED_PNG = 8 * 1024 * 1024  # a run-folder picture larger than this is linked, not embedded
DEBUG_CSV = "int8_debug.csv"


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def num(value: Any) -> Optional[float]:
    """A finite number, or None for anything else (strings, booleans, NaN, missing)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def numbers(value: Any) -> list[Optional[float]]:
    return [num(v) for v in as_list(value)]


@dataclasses.dataclass
class VariantFile:
    """One ``model_<variant>.tflite`` of the run: its size and its card (raw JSON, may be empty)."""

    name: str
    file: str
    size_bytes: int
    card: dict[str, Any]


@dataclasses.dataclass
class RunFiles:
    """Everything the page shows, read once; missing or unreadable files are empty and listed in ``problems``."""

    run: Path
    card: ModelCard
    config: dict[str, Any]
    data: dict[str, Any]
    phases: list[dict[str, Any]]  # train phases, then "QAT" when the run has one
    metrics: dict[str, Any]
    qat_card: dict[str, Any]
    variants: list[VariantFile]
    parity: dict[str, Any]
    debug: list[dict[str, str]]
    problems: list[str]

    @property
    def labels(self) -> list[str]:
        return list(self.card.labels)


def _json(run: Path, name: str, problems: list[str]) -> Any:
    path = run / name
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        problems.append(f"{name} is unreadable ({type(exc).__name__}); its part of the page is left out")
        return None


def phases(history: Any, qat_card: dict[str, Any]) -> list[dict[str, Any]]:
    """Training phases with per-epoch lists of equal length (``loss`` first), plus QAT's from its card."""
    raw = [as_dict(p) for p in as_list(history)]
    qat_history = as_dict(as_dict(as_dict(qat_card.get("extra")).get("qat")).get("history"))
    if qat_history:
        raw.append({"phase": "QAT", **qat_history})
    out = []
    for phase in raw:
        clean: dict[str, Any] = {"phase": str(phase.get("phase", f"phase {len(out) + 1}"))[:80]}
        for key, value in phase.items():
            if isinstance(value, list):
                clean[str(key)[:80]] = [math.nan if num(v) is None else num(v) for v in value]
            elif num(value) is not None:
                clean.setdefault(str(key)[:80], num(value))
        if clean.get("loss"):
            out.append(clean)
    return out


def _variants(run: Path, problems: list[str]) -> list[VariantFile]:
    found = []
    for path in run.glob(runfolder.VARIANT_GLOB):
        name = path.stem.removeprefix("model_")
        card = as_dict(_json(run, path.with_suffix(".json").name, problems))
        found.append(VariantFile(name, path.name, path.stat().st_size, card))
    return sorted(found, key=lambda v: runfolder.variant_rank(v.name))


def _debug_rows(run: Path, problems: list[str]) -> list[dict[str, str]]:
    path = run / DEBUG_CSV
    if not path.is_file():
        return []
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return [dict(row) for row in csv.DictReader(handle)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        problems.append(f"{DEBUG_CSV} is unreadable ({type(exc).__name__}); the quantization error is left out")
        return []


def load(run: Path) -> RunFiles:
    """Read a run folder for the report.

    Raises:
        RunFolderError: not a run folder (no ``model.keras`` + readable ``model_card.json``).
    """
    run = Path(run)
    card = runfolder.float_card(run)
    problems: list[str] = []
    qat_card = as_dict(_json(run, runfolder.QAT_CARD, problems))
    return RunFiles(
        run=run,
        card=card,
        config=as_dict(_json(run, runfolder.CONFIG, problems)),
        data=as_dict(_json(run, "data.json", problems)),
        phases=phases(_json(run, "history.json", problems), qat_card),
        metrics=as_dict(_json(run, "metrics.json", problems)),
        qat_card=qat_card,
        variants=_variants(run, problems),
        parity=as_dict(_json(run, "parity.json", problems)),
        debug=_debug_rows(run, problems),
        problems=problems,
    )


def png(run: Path, name: str) -> Optional[bytes]:
    """A PNG file of the run folder (by its plain name, nothing outside it), or None when absent or not a PNG."""
    if "/" in name or "\\" in name or name.startswith("."):
        return None
    path = run / name
    if not path.is_file() or path.is_symlink() or path.stat().st_size > MAX_EMBEDDED_PNG:
        return None
    content = path.read_bytes()
    return content if content.startswith(PNG_SIGNATURE) else None
