"""The Wilson score interval of a proportion: the one implementation, used by ``edge-classify --csv``'s
accuracy on the device and by the toolchain's parity statistics (:mod:`edgetl.stats`)."""

from __future__ import annotations

import math
from statistics import NormalDist

CONFIDENCE = 0.95  # two-sided level of every interval edgetl reports


def z_value(confidence: float = CONFIDENCE) -> float:
    """Two-sided normal quantile for ``confidence`` (1.96 at 95%)."""
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; (0, 1) when ``n`` is 0."""
    if n <= 0:
        return 0.0, 1.0
    z = z_value(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
