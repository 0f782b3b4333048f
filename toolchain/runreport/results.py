"""``results.csv``: one row per training epoch, flat columns a spreadsheet opens.

Written by ``edgetl train`` (its phases) and ``edgetl qat`` (the QAT epochs appended
as their own phase), rebuilt by ``edgetl report``. Columns: ``stage`` (train/qat),
``phase``, ``epoch`` (counted over all phases), ``phase_epoch``, ``loss``,
``accuracy``, ``val_loss``, ``val_accuracy``, ``restored`` (1 on the epoch whose
weights the phase kept), ``epoch_end_utc``, then any other per-epoch figure the
history holds.
"""

from __future__ import annotations

import csv
import datetime
import io
from pathlib import Path
from typing import Any, Sequence

from edgetl import metrics
from edgetl.runtime.model_card import write_bytes_atomic

RESULTS_CSV = "results.csv"
FIRST = ("loss", "accuracy", "val_loss", "val_accuracy")
SKIP = frozenset({"epoch_end_unix"})


def rows(phases: Sequence[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, one dict per epoch) from cleaned phases (:func:`edgetl.runreport.files.phases`)."""
    extra = sorted(
        {k for p in phases for k, v in p.items() if isinstance(v, list) and k not in FIRST and k not in SKIP}
    )
    columns = ["stage", "phase", "epoch", "phase_epoch", *FIRST, *extra, "restored", "epoch_end_utc"]
    out, epoch = [], 0
    for phase in phases:
        best = metrics.restored_epoch(phase)
        ends = phase.get("epoch_end_unix") if isinstance(phase.get("epoch_end_unix"), list) else []
        for k in range(len(phase["loss"])):
            epoch += 1
            row: dict[str, Any] = {
                "stage": "qat" if phase["phase"] == "QAT" else "train",
                "phase": phase["phase"],
                "epoch": epoch,
                "phase_epoch": k + 1,
                "restored": int(best == k + 1),
                "epoch_end_utc": _utc(ends[k]) if k < len(ends) else "",
            }
            for key in (*FIRST, *extra):
                values = phase.get(key) if isinstance(phase.get(key), list) else []
                row[key] = _cell(values[k]) if k < len(values) else ""
            out.append(row)
    return columns, out


def _cell(value: Any) -> str:
    return "" if value != value else f"{value:.6g}"  # NaN (missing) stays empty


def _utc(stamp: Any) -> str:
    if stamp != stamp:
        return ""
    return datetime.datetime.fromtimestamp(float(stamp), datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def write(run: Path, phases: Sequence[dict[str, Any]]) -> Path:
    """Write ``RUN/results.csv`` atomically and return its path."""
    columns, table = rows(phases)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    path = Path(run) / RESULTS_CSV
    write_bytes_atomic(path, buffer.getvalue().encode("utf-8"))
    return path
