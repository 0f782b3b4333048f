"""The val split as ``convert --max-drop`` judges it: decoded once through the device's preprocessing,
each candidate ``.tflite`` run through ``edgetl.runtime``, and judged by the parity gate's own checks
(:mod:`edgetl.gate`) with the float model's noise floor on the same images. See :mod:`edgetl.convert.budget`
for the rule and why."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from edgetl import data, log, runfolder, stats
from edgetl.config.parity import DEFAULT_THRESHOLDS
from edgetl.data import feed, paths
from edgetl.errors import RunFolderError
from edgetl.gate import noise_floor
from edgetl.gate.checks import threshold_checks
from edgetl.runtime import decode, preprocess
from edgetl.runtime.classifier import Classifier, ClassifierOptions
from edgetl.runtime.model_card import ModelCard

LIMITS = DEFAULT_THRESHOLDS["int8"]  # the gate's other int8 checks, which must not fail on evidence on val
RULE = (
    "the parity gate's checks on val (max_drop as the top-1 drop limit, fidelity against model.keras's noise floor "
    "on val) do not fail on evidence, and the candidate flips no more val answers than the noise floor does"
)


@dataclasses.dataclass
class ValSet:
    """The val split, decoded once: labels, model.keras's probabilities, and device input tensors by input spec."""

    labels: np.ndarray
    float_probs: np.ndarray
    class_names: tuple[str, ...]
    frames: Callable[[], list[np.ndarray]]
    floor: Optional[dict[str, np.ndarray]] = (
        None  # model.keras's noise floor on val (edgetl.gate.noise_floor.floor_flips)
    )
    tensors: dict[tuple[str, float, int], list[np.ndarray]] = dataclasses.field(default_factory=dict)


def check_val_split(run: Path, card: ModelCard) -> int:
    """Number of images in the run's val split, refused when there are none (before any work).

    Raises:
        RunFolderError: the val split is missing or lists no image.
    """
    path = Path(run) / "splits" / "val.csv"
    if path.is_file() and not any(line.strip() for line in path.read_text(encoding="utf-8").splitlines()[1:]):
        raise RunFolderError(
            f"{run}/splits/val.csv lists no images: --max-drop measures int8 on the validation split (never on "
            "test, which the parity gate keeps); train with a val split (--val-fraction), or convert without --max-drop"
        )
    return len(paths.read_split_rows(Path(run), "val", len(card.labels)))


def load_val(run: Path, card: ModelCard, data_root: Optional[str] = None) -> ValSet:
    """The val split: each image decoded as the device decodes it, and model.keras's probabilities on it.

    ``data_root``: the user's ``--data-root`` (a run folder this machine did not record; ``edgetl.untrusted``).
    """
    dataset, items = data.load_split(run, "val", data_root)
    pixels, kept, _ = dataset.pixels(items, card.height, card.interpolation)
    if not kept:
        raise RunFolderError(f"none of the {len(items)} val images of {run} could be read; restore the data")
    with log.quiet_native():
        model = runfolder.load_float_model(run, card)

    def predict(images: np.ndarray) -> np.ndarray:
        return feed.predict(model, images, card.normalization)

    probs = predict(pixels)
    floor = noise_floor.floor_flips(predict, pixels, probs)  # as the gate measures it, on the val images

    def frames() -> list[np.ndarray]:
        if dataset.kind == "array":
            return [preprocess.to_rgb(dataset.array[int(it.ref[1:])], "RGB") for it in kept]
        return [decode.decode_image(it.ref) for it in kept]

    return ValSet(np.asarray([it.label for it in kept]), probs, tuple(card.labels), frames, floor)


def evaluate(path: Path, val: ValSet) -> tuple[np.ndarray, float]:
    """Scores of a staged .tflite on every val image through ``edgetl.runtime.Classifier``, and its median ms."""

    with log.quiet_native():
        classifier = Classifier(ClassifierOptions(model_path=str(path), num_threads=1))
    spec = classifier.input_spec  # the tensors depend only on the input's type, scale and zero point
    key = (spec.dtype, round(spec.scale, 12), spec.zero_point)
    if key not in val.tensors:
        val.tensors[key] = [classifier.prepare(frame, "RGB") for frame in val.frames()]
    probs, times = [], []
    for tensor in val.tensors[key]:
        start = time.perf_counter()
        probs.append(classifier.invoke(tensor))
        times.append(time.perf_counter() - start)
    return np.asarray(probs, dtype=np.float32), 1000 * float(np.median(times))


def judge(val: ValSet, probs: np.ndarray, max_drop: float) -> dict[str, Any]:
    """The parity gate's checks on val, and ``holds`` by the search's rule (see the module docstring).

    The checks are :func:`edgetl.gate.checks.threshold_checks`, what ``edgetl parity`` runs
    on the test split, with ``max_drop`` as the top-1 drop limit and the gate's other int8
    limits; with ``val.floor`` they include fidelity against the float model's noise floor.
    """
    limits = dataclasses.replace(LIMITS, max_drop=max_drop)
    checks, figures = threshold_checks(
        "int8", probs, val.float_probs, val.float_probs, val.labels, val.class_names, limits, floor=val.floor
    )
    by_name = {check.name: check for check in checks}
    drop, classes = by_name["top-1 drop"].estimate, figures["per_class_drop"]
    worst = max(classes, key=lambda c: (classes[c]["verdict"] == stats.Verdict.FAIL.value, classes[c]["value"]))
    flips = int((probs.argmax(1) != val.float_probs.argmax(1)).sum())
    floor_flips = int(val.floor[noise_floor.chosen(val.floor)].sum()) if val.floor else None
    failed = [check.name for check in checks if check.verdict == stats.Verdict.FAIL]
    if failed:
        why = f"{', '.join(failed)} failed on evidence"
    elif floor_flips is not None:
        why = "noise floor" if flips <= floor_flips else ""
    else:  # no noise floor measured (a val set built without one): the point estimate alone
        why = "drop" if drop.value <= max_drop else ""  # type: ignore[union-attr]
    return {
        "drop": drop,
        "agreement": by_name["agreement"].estimate,
        "worst_class": worst,
        "class_drop": by_name["per-class drop"].estimate,
        "holds": why in ("drop", "noise floor"),
        "flips": flips,
        "floor_flips": floor_flips,
        "why": why,
    }
