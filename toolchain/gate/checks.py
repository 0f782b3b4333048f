"""The statistical half of the parity gate: one variant's checks from per-image outputs.

Pure numpy on top of :mod:`edgetl.stats`; ``edgetl parity`` calls it once per variant,
and the gate study (``benchmarks/gate.py``) on many subsets of one evaluation.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import numpy as np
from edgetl import stats
from edgetl.config.parity import Thresholds
from edgetl.gate import noise_floor, texts


@dataclasses.dataclass
class Check:
    """One line of the report: a named check of one variant and its verdict."""

    model: str
    name: str
    verdict: stats.Verdict
    detail: str
    estimate: Optional[stats.Estimate] = None

    @property
    def passed(self) -> bool:
        return self.verdict == stats.Verdict.PASS

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "name": self.name,
            "verdict": self.verdict.value,
            "passed": self.passed,
            "detail": self.detail,
            "estimate": self.estimate.to_dict() if self.estimate else None,
        }


def threshold_checks(
    name: str,
    probs: np.ndarray,
    ref_probs: np.ndarray,
    float_probs: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    limits: Thresholds,
    reference: str = "model.keras",
    floor: Optional[dict[str, np.ndarray]] = None,
) -> tuple[list[Check], dict[str, Any]]:
    """Judge one variant from per-image outputs: the statistical half of the gate.

    Top-1 drop and per-class drop are measured against ``float_probs`` (``model.keras``,
    the model the user trained); agreement against ``ref_probs`` (the model the variant
    was converted from). With ``floor`` (per perturbation, per image: the reference's
    top-1 changed under it, :mod:`edgetl.gate.noise_floor`) the variant's flips are judged
    against the larger of those flip rates (at most ``limits.max_flip_ratio`` times it),
    and the per-class limit rises to that rate in points when it is larger. Pure numpy:
    the gate study (``benchmarks/gate.py``) calls it on many subsets of one evaluation.

    Returns:
        The checks (drop, fidelity when ``floor`` is given, agreement, per-class drop)
        and the figures behind them (for the report).
    """
    pred = probs.argmax(1)
    float_right, right = float_probs.argmax(1) == labels, pred == labels
    n = len(labels)
    drop = stats.drop_check(float_right, right, limits.max_drop)
    flipped = pred != ref_probs.argmax(1)
    agree = stats.agreement_check(~flipped, limits.min_agreement)
    figures: dict[str, Any] = {"flip_rate": stats.Rate.of(flipped).to_dict()}
    moved = noise_floor.shift(probs, ref_probs)
    figures["shift"] = stats.Mean.of(moved).to_dict()
    fidelity = _fidelity(name, reference, flipped, moved, floor, limits, figures) if floor is not None else []
    class_limit = max(limits.max_class_drop, round(figures["noise_floor"]["value"], 1) if fidelity else 0)
    classes = _class_drops(float_right, right, labels, class_names, class_limit)
    figures.update(drop_pt=drop.value, drop=drop.to_dict(), agreement=agree.value / 100)
    figures.update(agreement_check=agree.to_dict(), per_class_drop_pt={c: e.value for c, e in classes.items()})
    figures["per_class_drop"] = {c: e.to_dict() for c, e in classes.items()}
    worst = max(classes, key=lambda c: (classes[c].verdict == stats.Verdict.FAIL, classes[c].value))
    class_verdict = stats.combine([e.verdict for e in classes.values()])
    needed = max((e.images_needed or 0 for e in classes.values() if e.verdict == stats.Verdict.INCONCLUSIVE), default=0)
    class_estimate = dataclasses.replace(classes[worst], verdict=class_verdict, images_needed=needed or None)
    shown = {"top1": float(right.mean()), "top1_ci": list(stats.wilson(int(right.sum()), n))}
    return [
        Check(name, "top-1 drop", drop.verdict, texts.drop_text(shown, drop, n), drop),
        *fidelity,
        Check(name, "agreement", agree.verdict, texts.agreement_text(reference, agree, n), agree),
        Check(
            name,
            "per-class drop",
            class_verdict,
            texts.class_text(worst, class_estimate, len(classes), n // max(1, len(classes))),
            class_estimate,
        ),
    ], figures


def _fidelity(
    name: str,
    reference: str,
    flipped: np.ndarray,
    moved: np.ndarray,
    floor: dict[str, np.ndarray],
    limits: Thresholds,
    figures: dict,
) -> list[Check]:
    """The fidelity check against the gating perturbation (±1 grey level); adds its figures.

    Judged on the per-image probability shift when the floor carries it (``<kind>_shift``,
    :func:`edgetl.gate.noise_floor.shift`: every image counts), else on top-1 flips.
    """
    kind = noise_floor.chosen(floor)
    floor_shift = floor.get(f"{kind}_shift")
    if floor_shift is not None:
        excess = stats.shift_check(moved, floor_shift, limits.max_flip_ratio)
    else:
        excess = stats.fidelity_check(flipped, floor[kind], limits.max_flip_ratio)
    figures["noise_floor"] = {
        **stats.Rate.of(floor[kind]).to_dict(),
        "perturbation": kind,
        "description": noise_floor.DESCRIPTIONS[kind],
        "by_perturbation": {k: stats.Rate.of(floor[k]).to_dict() for k in noise_floor.PERTURBATIONS if k in floor},
    }
    if floor_shift is not None:
        figures["noise_floor"]["shift"] = stats.Mean.of(floor_shift).to_dict()
    figures["fidelity"] = {
        **excess.to_dict(),
        "max_flip_ratio": limits.max_flip_ratio,
        "measure": "shift" if floor_shift is not None else "flips",
    }
    text = texts.fidelity_text(
        name, reference, figures["flip_rate"], figures["noise_floor"], excess, limits, len(flipped), figures["shift"]
    )
    return [Check(name, "fidelity", excess.verdict, text, excess)]


def _class_drops(
    float_right: np.ndarray, right: np.ndarray, labels: np.ndarray, class_names: Sequence[str], max_class_drop: float
) -> dict[str, stats.Estimate]:
    present = [i for i in range(len(class_names)) if (labels == i).any()]
    level = stats.class_confidence(len(present))
    return {
        class_names[i]: stats.drop_check(float_right[labels == i], right[labels == i], max_class_drop, level)
        for i in present
    }
