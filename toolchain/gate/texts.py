"""Each check's sentence: what was shown, with its interval, and what the user can decide when the
held-out images are too few to settle it (never a number of images nobody will collect)."""

from __future__ import annotations

from typing import Any, Optional

from edgetl import stats

SETTLE_FACTOR = 10  # a check needing more than this many times the test set "sits at the threshold"


def _needs(
    e: stats.Estimate, unit: str = "held-out images", available: Optional[int] = None, at_least: bool = False
) -> str:
    """What would settle an inconclusive check; ``at_least``: the check is a floor (agreement), not a ceiling."""
    if e.verdict != stats.Verdict.INCONCLUSIVE:
        return ""
    far = e.images_needed is None or (available is not None and e.images_needed > SETTLE_FACTOR * available)
    if far:
        return (
            "; it sits at the threshold: these images cannot settle it, nor would ten times as many. Decide: accept "
            f"the interval's far end as your margin ({_far_end(e, at_least)}), or deploy a variant that passes"
        )
    return f"; about {e.images_needed:,} {unit} would resolve it"


def _far_end(e: stats.Estimate, at_least: bool = False) -> str:
    """The end of the interval on the wrong side: the high end of a ceiling (drops), the low end of a floor."""
    return f"{e.low:.2f}" if at_least else f"{e.high:.2f}"


def drop_text(m: dict[str, Any], e: stats.Estimate, available: Optional[int] = None) -> str:
    """``top-1 85.2% [84.5, 85.9] vs float 85.3%, drop 0.12 pt [−0.13, 0.37] (must be ≤ 0.3 pt)``."""
    low, high = m["top1_ci"]
    float_top1 = m["top1"] * 100 + e.value
    return (
        f"top-1 {100 * m['top1']:.2f}% [{100 * low:.2f}, {100 * high:.2f}] vs float {float_top1:.2f}%, "
        f"drop {e.value:.2f} pt [{e.low:.2f}, {e.high:.2f}] "
        f"({'>' if e.verdict == stats.Verdict.FAIL else 'must be ≤'} {e.threshold:g} pt)"
        f"{_needs(e, available=available)}"
    )


def agreement_text(reference: str, e: stats.Estimate, available: Optional[int] = None) -> str:
    """``top-1 agreement with model.keras 98.38% [98.12, 98.61] (hard floor 80%)``."""
    return (
        f"top-1 agreement with {reference} {e.value:.2f}% [{e.low:.2f}, {e.high:.2f}] "
        f"({'<' if e.verdict == stats.Verdict.FAIL else 'hard floor'} {e.threshold:g}%)"
        f"{_needs(e, available=available, at_least=True)}"
    )


def fidelity_text(
    name: str,
    reference: str,
    flip: dict[str, Any],
    floor: dict[str, Any],
    e: stats.Estimate,
    limits: Any,
    available: Optional[int] = None,
    shift: Optional[dict[str, Any]] = None,
) -> str:
    """``int8 changes 4.80% [3.9, 5.9] of model.keras's answers; ±1 grey level changes 4.30% [...]; ...``.

    With the per-image probability shifts (``shift`` and ``floor["shift"]``) the check is
    judged on them and the text says so; else on the flips.
    """
    mark = {stats.Verdict.PASS: "≤", stats.Verdict.FAIL: ">", stats.Verdict.INCONCLUSIVE: "vs"}[e.verdict]
    text = (
        f"{name} changes {flip['value']:.2f}% [{flip['low']:.2f}, {flip['high']:.2f}] of {reference}'s answers; "
        f"{floor['description']} changes {floor['value']:.2f}% [{floor['low']:.2f}, {floor['high']:.2f}]"
    )
    fs = floor.get("shift")
    if shift is not None and fs is not None:
        ratio = shift["value"] / fs["value"] if fs["value"] else float("inf") if shift["value"] else 1.0
        return (
            f"{text}; its probabilities move {shift['value']:.2f} pt [{shift['low']:.2f}, {shift['high']:.2f}] on "
            f"average, the noise's {fs['value']:.2f} pt [{fs['low']:.2f}, {fs['high']:.2f}]: {ratio:.2f}x the noise "
            f"floor ({mark} {limits.max_flip_ratio:g}x allowed; shift − {limits.max_flip_ratio:g} × floor = "
            f"{e.value:.2f} pt [{e.low:.2f}, {e.high:.2f}], paired){_needs(e, available=available)}"
        )
    ratio = flip["value"] / floor["value"] if floor["value"] else float("inf") if flip["value"] else 1.0
    return (
        f"{text}: {ratio:.2f}x the noise floor ({mark} {limits.max_flip_ratio:g}x allowed; flips − "
        f"{limits.max_flip_ratio:g} × floor = {e.value:.2f} pt [{e.low:.2f}, {e.high:.2f}], paired)"
        f"{_needs(e, available=available)}"
    )


def class_text(worst: str, e: stats.Estimate, classes: int, available: Optional[int] = None) -> str:
    """``worst class dress drops 1.4 pt [−0.6, 3.4] (must be ≤ 3 pt; intervals at 99.5% over 10 classes)``."""
    level = 100 * stats.class_confidence(classes)
    return (
        f"worst class {worst} drops {e.value:.1f} pt [{e.low:.1f}, {e.high:.1f}] "
        f"({'>' if e.verdict == stats.Verdict.FAIL else 'must be ≤'} {e.threshold:g} pt; intervals at {level:.2f}% "
        f"jointly over {classes} classes){_needs(e, 'images per class', available)}"
    )
