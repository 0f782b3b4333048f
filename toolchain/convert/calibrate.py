"""``edgetl calibrate``: choose and record the int8 representative set of a run.

The choice itself (seeded, class-balanced, bounded) is :mod:`calibration`'s; this
stage reads the run's train split, writes ``RUN/calibration.json``, and gives
``convert`` the manifest it asks for (the existing one when its settings match).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from edgetl import calibration, data, log, runfolder
from edgetl.config import DEFAULT_CALIB_SEED, DEFAULT_CALIB_SIZE, CalibrationConfig
from edgetl.errors import RunFolderError
from edgetl.runfolder import ModelCard


def calibrate(config: CalibrationConfig) -> calibration.Manifest:
    """Choose the representative set from the run's train split and write ``RUN/calibration.json``.

    Raises:
        RunFolderError: not a run folder, or its train split is missing or empty.
    """
    run = Path(config.run)
    manifest = choose(run, runfolder.float_card(run), config.size, config.seed, config.data_root)
    if manifest.size < config.size:
        log.warn(f"the train split has only {manifest.size} images; calibrating on all of them, not {config.size}")
    manifest.save(run / calibration.MANIFEST_NAME)
    return manifest


def choose(run: Path, card: ModelCard, size: int, seed: int, data_root: Optional[str] = None) -> calibration.Manifest:
    """The representative set of ``size`` images from the run's train split, not written anywhere.

    Raises:
        RunFolderError: the train split is missing or empty.
    """
    dataset, items = data.load_split(run, "train", data_root)
    try:  # refs relative to the data root: the sha256 does not depend on where the run or the cwd is
        refs = [(dataset.relative(it.ref), it.label) for it in items]
        return calibration.build_manifest(refs, card.labels, size, seed)
    except calibration.CalibrationError as exc:
        raise RunFolderError(f"{run}: {exc}") from None


def ensure_manifest(
    run: Path, card: ModelCard, size: Optional[int], seed: Optional[int], data_root: Optional[str] = None
) -> calibration.Manifest:
    """The run's manifest when it matches the asked size and seed (None = any), else a new one."""
    path = Path(run) / calibration.MANIFEST_NAME
    if path.exists():
        try:
            manifest = calibration.load_manifest(path)
        except calibration.CalibrationError as exc:
            raise RunFolderError(str(exc)) from None
        if size in (None, manifest.requested) and seed in (None, manifest.seed) and manifest.class_names == card.labels:
            log.info(f"calibrating on {path.name}: {manifest.size} images, sha256 {manifest.sha256[:12]}…")
            return manifest
        log.info(f"{path.name} was made with other settings; choosing a new representative set")
    manifest = calibrate(
        CalibrationConfig(str(run), size or DEFAULT_CALIB_SIZE, DEFAULT_CALIB_SEED if seed is None else seed, data_root)
    )
    log.info(f"calibrating on a new {path.name}: {manifest.size} images, sha256 {manifest.sha256[:12]}…")
    return manifest
