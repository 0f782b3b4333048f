"""Choosing the representative set: class-balanced, seeded, bounded.

Post-training int8 quantization sets every activation range from the images it is
shown, so those images should look like what the camera will see in every class,
not whatever comes first in a folder. The choice is a pure function of the item
list, the size and the seed: the same inputs always give the same list, in the
same order, whatever order the items arrive in.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np


class CalibrationError(ValueError):
    """The representative set cannot be built or its manifest does not check out."""


def select_balanced(items: Sequence[tuple[str, int]], size: int, seed: int) -> list[tuple[str, int]]:
    """Pick up to ``size`` ``(ref, label)`` items, round-robin over classes.

    Each class is shuffled with the seed, and classes take turns (in a seeded order)
    until ``size`` items are chosen, so class counts differ by at most one unless a
    class runs out, when the others fill its share. The result is interleaved, so
    any prefix of it is balanced too.

    Args:
        items: candidate ``(ref, label)`` pairs (the train split; never val/test).
        size: most items to return (>= 1).
        seed: seeds the per-class shuffles and the class order.

    Returns:
        The chosen pairs; all of them when ``size`` >= ``len(items)`` (still reordered).

    Raises:
        CalibrationError: ``size`` < 1 or no items.
    """
    if size < 1:
        raise CalibrationError(f"calibration size must be >= 1 (got {size}); a few hundred images is typical")
    if not items:
        raise CalibrationError("no images to calibrate with; the run's train split is empty")
    by_class: dict[int, list[str]] = defaultdict(list)
    for ref, label in items:
        by_class[int(label)].append(str(ref))
    rng = np.random.default_rng(seed)
    queues = {}
    for label in sorted(by_class):
        refs = sorted(set(by_class[label]))
        queues[label] = [refs[i] for i in rng.permutation(len(refs))]
    order = [int(label) for label in rng.permutation(sorted(queues))]
    chosen: list[tuple[str, int]] = []
    depth = 0
    while len(chosen) < size and any(depth < len(q) for q in queues.values()):
        for label in order:
            if depth < len(queues[label]) and len(chosen) < size:
                chosen.append((queues[label][depth], label))
        depth += 1
    return chosen
