"""The run folder: its file names, the one "is this a run" check, the float model and card, versions.

Every stage (``train``, ``qat``, ``convert``, ``parity``) reads and writes a run
folder through this module, so its layout is written down once::

    RUN/model.keras          float Keras model (train)     RUN/model_card.json   its card
    RUN/model_qat.keras      QAT weights (qat)              RUN/model_qat.json    its card
    RUN/model_<variant>.tflite + model_<variant>.json      one per variant (convert)
    RUN/calibration.json     the int8 representative set (calibrate)
    RUN/data.json, RUN/splits/{train,val,test}.csv         the data (train; see :mod:`data`)

The atomic writers live in ``edgetl.runtime.model_card`` (the device writes files
too, and never imports the toolchain); they are re-exported here so stage code
has one place to import run-folder I/O from. TensorFlow is imported only by
:func:`load_float_model` and :func:`versions` when given it.
"""

from __future__ import annotations

import glob
import importlib.metadata
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
from edgetl import log
from edgetl.config import Quantization
from edgetl.errors import ConfigError, RunFolderError
from edgetl.model import classifier, graph
from edgetl.runtime.model_card import (
    CardError,
    ModelCard,
    card_path_for,
    load_card,
    read_json,
    sha256_file,
    verify_model_file,
)

__all__ = [
    "CardError",
    "ModelCard",
    "FLOAT_MODEL",
    "FLOAT_CARD",
    "QAT_MODEL",
    "QAT_CARD",
    "QAT_SCHEME",
    "CONFIG",
    "variant_file",
    "variant_rank",
    "VARIANT_ORDER",
    "float_card",
    "load_float_model",
    "versions",
    "card_path_for",
    "load_card",
    "read_json",
    "sha256_file",
    "verify_model_file",
]

FLOAT_MODEL = "model.keras"
FLOAT_CARD = "model_card.json"
QAT_MODEL = "model_qat.keras"
QAT_CARD = "model_qat.json"
# The fake-quant layout of model_qat.keras (see qat_scheme); load_qat refuses files made with another.
QAT_SCHEME = "bn-folded-per-channel"
CONFIG = "config.json"
VARIANT_GLOB = "model_*.tflite"


# The order a person reads variants in: the float reference, then smaller and more quantized (the enum's order).
VARIANT_ORDER = tuple(q.value for q in Quantization)


def variant_rank(variant: str) -> tuple[int, str]:
    """Sort key for variant names: :data:`VARIANT_ORDER`, then any other name alphabetically."""
    return (VARIANT_ORDER.index(variant) if variant in VARIANT_ORDER else len(VARIANT_ORDER), variant)


def variant_file(variant: str) -> str:
    """File name of one TFLite variant (``fp32`` -> ``model_fp32.tflite``); its card is the same stem + ``.json``."""
    return f"model_{variant}.tflite"


def float_card(run: Path) -> ModelCard:
    """The float model's card, after checking the run folder holds a usable model: the one "is this a run" check.

    Raises:
        RunFolderError: no ``model.keras`` or ``model_card.json``, or a card this version cannot read.
    """
    run = Path(run)
    if not (run / FLOAT_MODEL).is_file() or not (run / FLOAT_CARD).is_file():
        raise RunFolderError(f"{run} has no {FLOAT_MODEL} and {FLOAT_CARD}; is it an `edgetl train` run folder?")
    path = run / FLOAT_CARD
    try:
        return load_card(path)
    except CardError as exc:  # name the file where the card's own message does not
        raise RunFolderError(str(exc) if str(path) in str(exc) else f"{path}: {exc}") from None


def load_float_model(run: Path, card: Optional[ModelCard] = None) -> Any:
    """``RUN/model.keras`` loaded in safe mode, after checking it is the file its card describes.

    Raises:
        RunFolderError: not a run folder, or a model that is not a loadable, code-free Keras file.
        CardError: the model's sha256 differs from its card's.
    """

    run = Path(run)
    card = card or float_card(run)
    verify_model_file(card, run / FLOAT_MODEL)
    return classifier.load(str(run / FLOAT_MODEL))


def versions(tf: Any = None, litert: bool = False) -> dict[str, str]:
    """Library versions a card records: edgetl, TensorFlow and tf_keras (when ``tf`` is given), numpy, OpenCV, Python.

    Args:
        tf: the imported ``tensorflow`` module, or None to leave TensorFlow out.
        litert: also record the installed ``ai-edge-litert`` version.
    """
    import cv2

    found = {"edgetl": package_version("edgetl")}
    if tf is not None:
        found.update(tensorflow=tf.__version__, tf_keras=graph.keras().__version__)
    found.update(numpy=np.__version__, opencv=cv2.__version__, python=sys.version.split()[0])
    if litert:
        found["ai_edge_litert"] = package_version("ai-edge-litert")
    return found


def package_version(name: str, missing: str = "unknown") -> str:
    """The installed version of a distribution (read from its metadata, not imported), or ``missing``."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return missing


def check_output(final: Path) -> None:
    """Refuse an ``--output`` the finished run could not be renamed to, before any training.

    The run folder must be new, or an empty real folder that is not the working
    directory (renaming over ``.`` or through a symlink fails after training);
    its parent must be a folder this process can write in.

    Raises:
        ConfigError: a file, a path under a file, a symlink, ``.``, a non-empty or unwritable place.
    """
    fix = "choose another --output (a new folder)"
    if final.is_symlink():
        raise ConfigError(f"--output {final} is a symlink; pass the folder it points to, or {fix}")
    if final.exists() and not final.is_dir():
        raise ConfigError(f"--output {final} is a file; {fix}")
    if final.is_dir() and (final.resolve() == Path.cwd().resolve() or any(final.iterdir())):
        what = (
            "is the current directory" if final.resolve() == Path.cwd().resolve() else "already exists and is not empty"
        )
        raise ConfigError(f"--output {final} {what}; {fix}")
    parent = Path(os.path.abspath(final)).parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"--output {final} lies under {parent}, which is a file; {fix}")
    try:  # a real probe: os.access says yes to root on a read-only mount
        tempfile.TemporaryDirectory(prefix=".edgetl-probe-", dir=parent).cleanup()
    except OSError as exc:
        raise ConfigError(f"--output {final}: cannot write in {parent} ({exc.strerror or exc}); {fix}") from None


def check_no_partial(final: Path, work: Path, workers: int) -> None:
    """Refuse a new run where an interrupted one of the same output waits; name other outputs' leftovers.

    A kill (SIGKILL, a lost machine) leaves the hidden ``.RUN.partial`` (and each
    worker's ``.RUN.workerN.partial``); the next run says how to resume or remove it.

    Raises:
        RunFolderError: the partial folders of ``final``, ``--resume`` and the ``rm -r`` line.
    """
    leftovers = [work] if work.exists() else []
    if workers == 1:  # no cluster running now: any worker's folder is an earlier run's
        mine = re.compile(re.escape(f".{final.name}.") + r"(worker\d+\.)?partial")
        leftovers = sorted(
            p for p in final.parent.glob(f".{glob.escape(final.name)}.*partial") if mine.fullmatch(p.name)
        )
    if leftovers:
        raise RunFolderError(
            f"an interrupted run of {final} exists ({', '.join(p.name for p in leftovers)}); continue it with "
            f"`edgetl train --resume {final}` (on every host of a cluster), or remove it: "
            f"rm -r {' '.join(str(p) for p in leftovers)}"
        )
    _report_other_partials(final)


def first_missing(path: Path) -> Path:
    """The outermost folder of ``path`` that does not exist yet (``path`` itself when its parent exists)."""
    path = Path(os.path.abspath(path))
    while not path.parent.exists():
        path = path.parent
    return path


def remove_empty_parents(created: Optional[Path], work: Path) -> None:
    """Remove the folders this run created above ``work`` (``-o new/parents/RUN``), while they are empty."""
    if created is None:
        return
    folder = Path(os.path.abspath(work)).parent
    while len(folder.parts) >= len(created.parts):
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (another run put something there) or already gone
        folder = folder.parent


def _report_other_partials(final: Path) -> None:
    """Warn about interrupted runs of other outputs beside ``final`` (hidden folders a kill left behind)."""
    parent = Path(os.path.abspath(final)).parent
    if not parent.is_dir():
        return
    for path in sorted(parent.glob(".*.partial")):
        name = re.sub(r"\.worker\d+$", "", path.name[1:].removesuffix(".partial"))
        if path.is_dir() and name != final.name:
            log.warn(
                f"{path} is an interrupted run of {parent / name}: continue it with "
                f"`edgetl train --resume {parent / name}`, or remove it (rm -r {path})"
            )
