"""The calibration manifest: exactly which images calibrated an int8 model.

``RUN/calibration.json`` lists the representative images (file paths or ``#N``
rows of an image array) with their labels, how they were chosen, and a sha256 of
the canonical list. Every int8 card records that hash, so a model can always be
traced to the images that set its ranges, and the same manifest gives a
byte-identical model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

from edgetl.calibration.select import CalibrationError, select_balanced
from edgetl.runtime.model_card import write_json_atomic

MANIFEST_NAME = "calibration.json"
MANIFEST_VERSION = 1


def list_sha256(refs: Sequence[str], labels: Sequence[int]) -> str:
    """sha256 of the canonical list: compact JSON ``[[ref, label], ...]`` in order, UTF-8."""
    canonical = json.dumps(
        [[str(r), int(label)] for r, label in zip(refs, labels)], separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True)
class Manifest:
    """The chosen representative images and how they were chosen.

    Attributes:
        refs: image file paths or ``#N`` array rows, in calibration order.
        labels: class index of each ref.
        class_names: names of the class indices.
        seed: the selection seed.
        requested: the size asked for; ``size`` is smaller when the split is.
        split: where the images came from (always ``train``).
        sha256: checksum of the (refs, labels) list, see ``list_sha256``.
    """

    refs: tuple[str, ...]
    labels: tuple[int, ...]
    class_names: tuple[str, ...]
    seed: int
    requested: int
    split: str = "train"
    sha256: str = ""

    @property
    def size(self) -> int:
        return len(self.refs)

    @property
    def per_class(self) -> dict[str, int]:
        counts = dict.fromkeys(self.class_names, 0)
        for label in self.labels:
            counts[self.class_names[label]] += 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": MANIFEST_VERSION,
            "split": self.split,
            "seed": self.seed,
            "requested": self.requested,
            "size": self.size,
            "sha256": self.sha256,
            "class_names": list(self.class_names),
            "per_class": self.per_class,
            "refs": list(self.refs),
            "labels": list(self.labels),
        }

    def save(self, path: Path) -> None:
        """Write the manifest atomically (same manifest, same bytes)."""
        write_json_atomic(Path(path), self.to_dict())


def build_manifest(
    items: Sequence[tuple[str, int]], class_names: Sequence[str], size: int, seed: int, split: str = "train"
) -> Manifest:
    """Choose a balanced representative set from ``items`` and describe it.

    Raises:
        CalibrationError: ``size`` < 1, or no items.
    """
    if split != "train":
        raise CalibrationError(f"calibrate on the train split only, not {split!r}: val/test must stay unseen")
    chosen = select_balanced(items, size, seed)
    refs = tuple(r for r, _ in chosen)
    labels = tuple(label for _, label in chosen)
    return Manifest(refs, labels, tuple(class_names), int(seed), int(size), split, list_sha256(refs, labels))


def load_manifest(path: Path) -> Manifest:
    """Read and verify a manifest.

    Raises:
        CalibrationError: missing, unreadable, or its list does not match its sha256.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        manifest = Manifest(
            refs=tuple(str(r) for r in data["refs"]),
            labels=tuple(int(label) for label in data["labels"]),
            class_names=tuple(str(n) for n in data["class_names"]),
            seed=int(data["seed"]),
            requested=int(data["requested"]),
            split=str(data.get("split", "train")),
            sha256=str(data["sha256"]),
        )
    except FileNotFoundError:
        raise CalibrationError(f"no calibration manifest at {path}; run `edgetl calibrate` to make one") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CalibrationError(
            f"calibration manifest {path} is malformed ({exc!r}); delete it and run `edgetl calibrate`"
        ) from None
    if len(manifest.refs) != len(manifest.labels) or list_sha256(manifest.refs, manifest.labels) != manifest.sha256:
        raise CalibrationError(
            f"calibration manifest {path} does not match its sha256 (edited?); delete it and run `edgetl calibrate`"
        )
    if any(not 0 <= label < len(manifest.class_names) for label in manifest.labels):
        raise CalibrationError(
            f"calibration manifest {path} has labels outside its class names; run `edgetl calibrate`"
        )
    return manifest
