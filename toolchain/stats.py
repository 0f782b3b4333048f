"""Statistics behind parity verdicts: intervals from paired per-image results, three-valued checks.

A parity check compares a converted model with the model it came from on the same
images. Every figure is a count of images, so it carries sampling noise: on 300
images one flipped answer is 0.33 pt, and on 30 images of a class it is 3.3 pt. A
gate that compares point estimates with thresholds turns red on noise at small test
sets and cannot tell a real loss from one at large ones. So each check here is
judged on a 95% interval:

- **pass**: the whole interval lies on the allowed side of the threshold;
- **fail**: the whole interval lies beyond it (the data shows the threshold crossed);
- **inconclusive**: the interval straddles it; the check also says how many
  images would resolve it, assuming the observed rates hold.

Intervals: Wilson score for a proportion (top-1, agreement); Newcombe's hybrid
score interval (1998, method 10) for the difference of two *paired* proportions
(top-1 drop: the same images through both models, so only discordant pairs carry
information). Per-class checks use a Bonferroni-adjusted level (95% over all
classes jointly), so a ten-class model does not get ten chances to fail on noise.

Pure numpy and the standard library: no TensorFlow, testable in milliseconds.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Callable, Optional

import numpy as np
from edgetl.runtime.proportion import CONFIDENCE, wilson, z_value


class Verdict(str, enum.Enum):
    """What a check's interval says about its threshold."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


def paired_difference(
    ref_correct: np.ndarray, new_correct: np.ndarray, confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """Reference accuracy minus new accuracy on the same images, with Newcombe's paired interval.

    Args:
        ref_correct: per image, whether the reference model was right.
        new_correct: per image, whether the new model was right (same images, same order).
        confidence: two-sided level of the interval.

    Returns:
        (difference, low, high) as fractions; a positive difference is a loss.
    """
    ref, new = np.asarray(ref_correct, bool), np.asarray(new_correct, bool)
    a, b = int((ref & new).sum()), int((ref & ~new).sum())
    c, d = int((~ref & new).sum()), int((~ref & ~new).sum())
    return paired_interval(a, b, c, d, confidence)


def paired_interval(a: int, b: int, c: int, d: int, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Newcombe (1998) method 10 from the 2x2 counts: both right, only the reference, only the new, neither."""
    n = a + b + c + d
    if n == 0:
        return 0.0, -1.0, 1.0
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson(a + b, n, confidence)
    l2, u2 = wilson(a + c, n, confidence)
    denom = math.sqrt(float(a + b) * (c + d) * (a + c) * (b + d))
    phi = (a * d - b * c) / denom if denom > 0 else 0.0
    delta = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    epsilon = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    theta = p1 - p2
    return theta, max(-1.0, theta - delta), min(1.0, theta + epsilon)


def at_most(low: float, high: float, threshold: float) -> Verdict:
    """Verdict for "the true value is at most ``threshold``" given its interval."""
    if high <= threshold:
        return Verdict.PASS
    if low > threshold:
        return Verdict.FAIL
    return Verdict.INCONCLUSIVE


def at_least(low: float, high: float, threshold: float) -> Verdict:
    """Verdict for "the true value is at least ``threshold``" given its interval."""
    if low >= threshold:
        return Verdict.PASS
    if high < threshold:
        return Verdict.FAIL
    return Verdict.INCONCLUSIVE


MAX_IMAGES = 10_000_000


def images_to_resolve(verdict_at: Callable[[int], Verdict], start: int) -> Optional[int]:
    """Smallest test-set size at which ``verdict_at(n)`` is no longer inconclusive.

    ``verdict_at`` recomputes the check at ``n`` images with the observed rates held
    fixed (the question a user asks: "how many images would settle this?"). None when
    no size up to ten million does (the observed value sits on the threshold).
    """
    low, high = start, max(start, 1) * 2
    while verdict_at(high) == Verdict.INCONCLUSIVE:
        if high > MAX_IMAGES:
            return None
        low, high = high, high * 2
    while high - low > max(1, low // 100):  # to 1%: a hint, not a promise
        mid = (low + high) // 2
        low, high = (mid, high) if verdict_at(mid) == Verdict.INCONCLUSIVE else (low, mid)
    return high


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A figure with its interval and the verdict against its threshold (units as reported)."""

    value: float
    low: float
    high: float
    threshold: float
    verdict: Verdict
    images_needed: Optional[int] = None

    def to_dict(self) -> dict[str, object]:
        return {
            "value": self.value,
            "low": self.low,
            "high": self.high,
            "threshold": self.threshold,
            "verdict": self.verdict.value,
            "images_needed": self.images_needed,
        }


def agreement_check(agree: np.ndarray, min_share: float, confidence: float = CONFIDENCE) -> Estimate:
    """Share of images whose top-1 equals the reference's, in percent, judged against ``min_share`` percent."""
    agree = np.asarray(agree, bool)
    n, k = len(agree), int(agree.sum())
    p = k / n if n else 0.0

    def at(size: int) -> Verdict:
        low, high = wilson(round(p * size), size, confidence)
        return at_least(low, high, min_share / 100)

    low, high = wilson(k, n, confidence)
    verdict = at_least(low, high, min_share / 100)
    needed = images_to_resolve(at, n) if verdict == Verdict.INCONCLUSIVE else None
    return Estimate(100 * p, 100 * low, 100 * high, min_share, verdict, needed)


def drop_check(
    ref_correct: np.ndarray, new_correct: np.ndarray, max_drop: float, confidence: float = CONFIDENCE
) -> Estimate:
    """Top-1 drop (reference minus new) in points with its paired interval, judged against ``max_drop`` points."""
    ref, new = np.asarray(ref_correct, bool), np.asarray(new_correct, bool)
    n = len(ref)
    cells = [float((ref & new).sum()), float((ref & ~new).sum()), float((~ref & new).sum()), float((~ref & ~new).sum())]

    def at(size: int) -> Verdict:
        counts = [round(cell * size / n) for cell in cells]
        _, low, high = paired_interval(*counts, confidence=confidence)
        return at_most(100 * low, 100 * high, max_drop)

    theta, low, high = paired_interval(*(int(c) for c in cells), confidence=confidence)
    verdict = at_most(100 * low, 100 * high, max_drop)
    needed = images_to_resolve(at, n) if verdict == Verdict.INCONCLUSIVE and n else None
    return Estimate(100 * theta, 100 * low, 100 * high, max_drop, verdict, needed)


def class_confidence(num_classes: int, confidence: float = CONFIDENCE) -> float:
    """Bonferroni level for per-class intervals: ``confidence`` jointly over ``num_classes`` classes."""
    return 1 - (1 - confidence) / max(1, num_classes)


def combine(verdicts: list[Verdict]) -> Verdict:
    """Fail if any check fails, else inconclusive if any is, else pass."""
    if Verdict.FAIL in verdicts:
        return Verdict.FAIL
    if Verdict.INCONCLUSIVE in verdicts:
        return Verdict.INCONCLUSIVE
    return Verdict.PASS


def excess_interval(
    n11: int, n10: int, n01: int, n00: int, ratio: float, confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """``p_x − ratio · p_y`` of two paired yes/no figures, with an Agresti–Min adjusted Wald interval.

    ``x`` is "the variant's answer differs from its source's", ``y`` "the source's answer
    changes under an imperceptible perturbation", on the same images: ``n11`` both,
    ``n10`` only x, ``n01`` only y, ``n00`` neither. Half an image is added to each cell
    (Agresti & Min 2005), which keeps the interval honest when flips are rare (a few in
    200 images); the variance keeps the pairing (the covariance of x and y), so images
    that flip under both count once.

    Returns:
        (observed difference, low, high) as fractions.
    """
    n = n11 + n10 + n01 + n00
    if n == 0:
        return 0.0, -1.0 - ratio, 1.0
    value = (n11 + n10) / n - ratio * (n11 + n01) / n
    size = n + 2
    px, py, pxy = (n11 + n10 + 1) / size, (n11 + n01 + 1) / size, (n11 + 0.5) / size
    variance = (px * (1 - px) + ratio * ratio * py * (1 - py) - 2 * ratio * (pxy - px * py)) / size
    centre, half = px - ratio * py, z_value(confidence) * math.sqrt(max(variance, 0.0))
    return value, centre - half, centre + half


@dataclasses.dataclass(frozen=True)
class Rate:
    """A share of images in percent with its Wilson interval (``n`` images)."""

    value: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, hits: np.ndarray, confidence: float = CONFIDENCE) -> "Rate":
        hits = np.asarray(hits, bool)
        n, k = len(hits), int(hits.sum())
        low, high = wilson(k, n, confidence)
        return cls(100 * k / n if n else 0.0, 100 * low, 100 * high, n)

    def to_dict(self) -> dict[str, object]:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n}


def fidelity_check(
    flips: np.ndarray, floor_flips: np.ndarray, max_ratio: float, confidence: float = CONFIDENCE
) -> Estimate:
    """Does a variant change more answers than ``max_ratio`` times the source's own noise floor?

    Args:
        flips: per image, the variant's top-1 differs from its source's (clean images).
        floor_flips: per image, the source's top-1 changes under an imperceptible
            perturbation of the same image (its noise floor).
        max_ratio: allowed flip rate as a multiple of the floor.

    Returns:
        An Estimate of ``flip rate − max_ratio × floor`` in points, judged against 0
        (pass: the variant flips at most ``max_ratio`` times as many answers as the floor).
    """
    x, y = np.asarray(flips, bool), np.asarray(floor_flips, bool)
    n = len(x)
    cells = [float((x & y).sum()), float((x & ~y).sum()), float((~x & y).sum()), float((~x & ~y).sum())]

    def at(size: int) -> Verdict:
        counts = [round(cell * size / n) for cell in cells]
        _, low, high = excess_interval(*counts, ratio=max_ratio, confidence=confidence)
        return at_most(low, high, 0.0)

    value, low, high = excess_interval(*(int(c) for c in cells), ratio=max_ratio, confidence=confidence)
    verdict = at_most(low, high, 0.0)
    needed = images_to_resolve(at, n) if verdict == Verdict.INCONCLUSIVE and n else None
    return Estimate(100 * value, 100 * low, 100 * high, 0.0, verdict, needed)


@dataclasses.dataclass(frozen=True)
class Mean:
    """A per-image mean in percent points with its normal 95% interval (``n`` images)."""

    value: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: np.ndarray, confidence: float = CONFIDENCE) -> "Mean":
        v = np.asarray(values, np.float64)
        n = len(v)
        if n == 0:
            return cls(0.0, 0.0, 100.0, 0)
        half = z_value(confidence) * float(v.std(ddof=1)) / math.sqrt(n) if n > 1 else float("inf")
        m = float(v.mean())
        return cls(100 * m, 100 * max(0.0, m - half), 100 * (m + half), n)

    def to_dict(self) -> dict[str, object]:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n}


def shift_check(
    shift: np.ndarray, floor_shift: np.ndarray, max_ratio: float, confidence: float = CONFIDENCE
) -> Estimate:
    """Do a variant's probabilities move more than ``max_ratio`` times the source's under noise?

    The continuous, paired form of :func:`fidelity_check`: per image ``d = shift −
    max_ratio × floor_shift`` (how far the variant's probabilities moved from its
    source's, :func:`edgetl.gate.noise_floor.shift`, minus the allowance from how far the
    source's moved under an imperceptible perturbation of the same image), and a normal
    interval for the mean of ``d``. Every image contributes, not only the few whose
    top-1 flips: on Fashion-MNIST the per-image shift varies about 1.6 times its mean
    where a 5% flip indicator varies 4.4 times, so the same question is settled on
    roughly a seventh of the images (docs/parity.md).

    Returns:
        An Estimate of ``mean shift − max_ratio × mean floor shift`` in points, judged
        against 0 (pass: the variant moves the probabilities at most ``max_ratio`` times as
        much as the perturbation does).
    """
    d = np.asarray(shift, np.float64) - max_ratio * np.asarray(floor_shift, np.float64)
    n = len(d)
    if n < 2:
        return Estimate(100 * float(d.sum()), -100.0, 100.0, 0.0, Verdict.INCONCLUSIVE, None)
    mean, sd, z = float(d.mean()), float(d.std(ddof=1)), z_value(confidence)

    def bounds(size: int) -> tuple[float, float]:
        half = z * sd / math.sqrt(size)
        return 100 * (mean - half), 100 * (mean + half)

    low, high = bounds(n)
    verdict = at_most(low, high, 0.0)
    needed = images_to_resolve(lambda size: at_most(*bounds(size), 0.0), n) if verdict == Verdict.INCONCLUSIVE else None
    return Estimate(100 * mean, low, high, 0.0, verdict, needed)
