"""Which ``.tflite`` files of a run are checked, and the proof each belongs to it (source model, labels, size)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Sequence

from edgetl import runfolder
from edgetl.errors import RunFolderError
from edgetl.runtime.model_card import ModelCard, load_card, sha256_file, verify_model_file

QAT_MODEL = runfolder.QAT_MODEL


@dataclasses.dataclass(frozen=True)
class Variant:
    """A .tflite of the run, its card, and the Keras model it was converted from."""

    name: str
    path: Path
    card: ModelCard
    reference: str  # "model.keras" or "model_qat.keras"


def inventory(run: Path, keras_card: ModelCard, models: Optional[Sequence[str]]) -> list[Variant]:
    found = sorted(run.glob("model_*.tflite"), key=lambda p: runfolder.variant_rank(p.stem.removeprefix("model_")))
    paths = [run / f"model_{m}.tflite" for m in models] if models else found
    if not paths:
        raise RunFolderError(f"{run} has no model_*.tflite; run `edgetl convert {run}` first")
    variants = []
    source_hashes: dict[str, str] = {}  # each source model hashed once, however many variants name it
    for path in paths:
        if not path.is_file():
            present = ", ".join(p.stem.removeprefix("model_") for p in sorted(run.glob("model_*.tflite"))) or "none"
            raise RunFolderError(
                f"{path} does not exist (variants in this run: {present}); run `edgetl convert {run}` or fix --models"
            )
        if not path.with_suffix(".json").is_file():
            raise RunFolderError(f"{path} has no card {path.with_suffix('.json').name}; re-run `edgetl convert {run}`")
        card = load_card(path.with_suffix(".json"))
        verify_model_file(card, path)
        variants.append(lineage(run, path, card, keras_card, source_hashes))
    return variants


def lineage(run: Path, path: Path, card: ModelCard, keras_card: ModelCard, hashes: dict[str, str]) -> Variant:
    """Refuse a variant that was not converted from this run's model, or whose card disagrees with it."""
    name = path.stem.removeprefix("model_")
    fix = f"run `edgetl convert {run}` again (or remove {path.name})"
    if tuple(card.labels) != tuple(keras_card.labels):
        raise RunFolderError(
            f"{path.name}'s card labels {list(card.labels)} differ from the run's {list(keras_card.labels)}; {fix}"
        )
    if (card.height, card.width) != (keras_card.height, keras_card.width):
        raise RunFolderError(
            f"{path.name} takes {card.height}x{card.width} images, the run's model "
            f"{keras_card.height}x{keras_card.width}; {fix}"
        )
    source = card.extra.get("source") if isinstance(card.extra.get("source"), dict) else {}
    reference = QAT_MODEL if source.get("file") == QAT_MODEL else "model.keras"
    if not (run / reference).is_file():
        raise RunFolderError(f"{path.name} was converted from {reference}, which this run does not have; {fix}")
    if reference not in hashes:
        hashes[reference] = sha256_file(run / reference)
    if (
        source.get("sha256") != hashes[reference]
        or source.get("float_sha256", keras_card.model_sha256) != keras_card.model_sha256
    ):
        raise RunFolderError(
            f"{path.name} was not converted from this run's {reference} "
            f"(its card records sha256 {str(source.get('sha256'))[:12]}…); {fix}"
        )
    return Variant(name, path, card, reference)
