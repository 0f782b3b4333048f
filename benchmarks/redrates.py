"""How often the gate turns red: one evaluation's per-image results (``per_image.npz``) judged again,
with the default gate's own statistics, on many test sets cut from the held-out images.

``PARTITIONS`` seeded partitions into disjoint sets of each size and ``RANDOM_SUBSETS`` random
sets; views of one picture (file stems differing only by ``_v<k>``) are kept apart while the
pictures suffice. Used by :mod:`benchmarks.gate`; no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

SIZES = (200, 300, 1000, 2000)
RANDOM_SUBSETS = 200
PARTITIONS = 10


@dataclasses.dataclass
class Saved:
    """One evaluation's per-image results (``per_image.npz``) and the run's ``parity.json``: judged again at will."""

    labels: np.ndarray
    probabilities: dict[str, np.ndarray]
    floors: dict[str, dict[str, np.ndarray]]
    references: dict[str, str]  # variant -> the model it was converted from
    class_names: list[str]
    contract: dict[str, bool]  # variant -> the exact preprocessing check passed
    float_metrics: dict[str, Any]
    timing: dict[str, float]

    @classmethod
    def load(cls, work: Path) -> "Saved":
        npz, report = np.load(work / "per_image.npz"), json.loads((work / "run" / "parity.json").read_text())
        floors: dict[str, dict[str, np.ndarray]] = {}
        for key in (k for k in npz.files if k.startswith("floor/")):
            _, ref, kind = key.split("/")
            floors.setdefault(ref, {})[kind] = npz[key]
        contract = dict.fromkeys(report["models"], True)
        for c in report["checks"]:
            if c["name"] in ("preprocessing contract", "input tensor"):
                contract[c["model"]] &= c["passed"]
        return cls(
            labels=npz["labels"],
            probabilities={k.removeprefix("probs/"): npz[k] for k in npz.files if k.startswith("probs/")},
            floors=floors,
            references={v: m["reference"] for v, m in report["models"].items()},
            class_names=list(report["float"]["per_class"]),
            contract=contract,
            float_metrics=report["float"],
            timing=report.get("timing_s", {}),
        )

    @property
    def variants(self) -> list[str]:
        return list(self.references)


def judge(saved: Saved, variant: str, subset: np.ndarray, measure: str = "shift") -> tuple[list[Any], dict[str, Any]]:
    """The default gate's statistical checks of ``variant`` on the images ``subset`` alone.

    ``measure`` ``"shift"`` judges fidelity on the per-image probability shift (the gate's
    default when the floor carries it); ``"flips"`` on top-1 flips (the gate before it).
    """
    from edgetl.config.parity import ParityConfig
    from edgetl.gate.checks import threshold_checks

    reference = saved.references[variant]
    drop = ("_dprob",) if measure == "shift" else ("_dprob", "_shift")
    floor = {k: v[subset] for k, v in saved.floors[reference].items() if not k.endswith(drop)}
    base = variant if variant in ("fp16", "fp32", "dynamic", "qat_int8") else "int8"
    return threshold_checks(
        variant,
        saved.probabilities[variant][subset],
        saved.probabilities[reference][subset],
        saved.probabilities["model.keras"][subset],
        saved.labels[subset],
        saved.class_names,
        ParityConfig(run=".").thresholds_for(base),
        reference,
        floor,
    )


def _red(saved: Saved, variant: str, subset: np.ndarray, measure: str = "shift") -> bool:
    """Would the default gate's statistics fail ``variant`` on these images alone?"""
    from edgetl.stats import Verdict, combine

    checks, _ = judge(saved, variant, subset, measure)
    return combine([c.verdict for c in checks]) == Verdict.FAIL


def picture_groups(data: Path, n: int) -> np.ndarray:
    """Per image, the picture it was made from: file stems that differ only by a ``_v<k>`` suffix share one.

    The colour test part holds three composites (views) of each emoji picture; they are
    not independent draws, so a test set takes at most one view of a picture where it can.
    Images without such a suffix are their own picture.
    """
    from edgetl import data as data_mod

    items = data_mod.discover(str(data), min_classes=1).items
    if len(items) != n:
        return np.arange(n)
    stems = [re.sub(r"_v\d+$", "", Path(it.ref).stem) + f"#{it.label}" for it in items]
    _, ids = np.unique(stems, return_inverse=True)
    return ids


def _one_set(members: list[np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` images from distinct pictures where there are enough, else as few views per picture as it takes."""
    per = -(-size // len(members))  # views per picture
    chosen = rng.choice(len(members), -(-size // per), replace=False)
    picks = [rng.permutation(members[g])[:per] for g in chosen]
    return rng.permutation(np.concatenate(picks))[:size]


def test_sets(groups: np.ndarray, size: int, rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    """Disjoint sets (``PARTITIONS`` seeded partitions; at most one view of a picture per set where pictures suffice).

    Each partition cuts the held-out images into sets that share no image: rounds shuffle
    the pictures and take one unused view of each, cut into sets of ``size``, while views
    remain. With fewer pictures than ``size``, sets take ``ceil(size / pictures)`` views of
    a picture. Several partitions (sets of different partitions overlap) make the rate at
    2,000 images a share of more than the one or two sets a partition holds. Random: sets
    drawn independently, ``RANDOM_SUBSETS`` of them.
    """
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    n = len(groups)
    disjoint: list[np.ndarray] = []
    for _ in range(PARTITIONS):
        if size <= len(members):
            pools = [list(rng.permutation(m)) for m in members]
            while True:
                row = [pool.pop() for pool in (pools[i] for i in rng.permutation(len(pools))) if pool]
                disjoint += [np.asarray(row[i : i + size]) for i in range(0, len(row) - size + 1, size)]
                if len(row) < size:
                    break
        else:
            order = np.concatenate([rng.permutation(members[i]) for i in rng.permutation(len(members))])
            disjoint += [order[i : i + size] for i in range(0, n - size + 1, size)]
    return {"disjoint": disjoint, "random": [_one_set(members, size, rng) for _ in range(RANDOM_SUBSETS)]}


def gate_rates(
    saved: Saved, sizes: Sequence[int], groups: Optional[np.ndarray] = None, measure: str = "shift", seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Per variant and size: the share of disjoint (and of random) test sets the default gate fails."""
    n = len(saved.labels)
    groups = np.arange(n) if groups is None else groups
    out: dict[str, dict[str, Any]] = {}
    for variant in saved.variants:
        out[variant] = {}
        for size in (s for s in sizes if s <= n):
            subsets = test_sets(groups, size, np.random.default_rng(seed))
            out[variant][str(size)] = {
                kind: {"sets": len(sets), "fail": float(np.mean([_red(saved, variant, s, measure) for s in sets]))}
                for kind, sets in subsets.items()
            }
    return out


def full_figures(saved: Saved) -> dict[str, dict[str, Any]]:
    """Per variant, the gate's figures on every held-out image (flips, floor, shifts, drop)."""
    everything = np.arange(len(saved.labels))
    return {v: judge(saved, v, everything)[1] for v in saved.variants}
