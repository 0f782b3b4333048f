"""The dataset types every reader builds and every stage reads: ``Item``, ``Dataset``, ``SPLITS``."""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
from edgetl import log
from edgetl.data import paths
from edgetl.errors import RunFolderError
from edgetl.runtime import decode, preprocess

SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class Item:
    """One labelled image: ``ref`` is a file path or ``#N`` (row N of an image array)."""

    ref: str
    label: int


@dataclasses.dataclass
class Dataset:
    """Where the images are and how they are labelled."""

    kind: str  # "folder", "csv" or "array"
    root: str
    class_names: list[str]
    items: list[Item]
    presplit: Optional[dict[str, list[Item]]] = None
    array: Optional[np.ndarray] = dataclasses.field(default=None, repr=False)
    legacy: bool = False  # a run folder from before the relative layout (datapaths)

    def relative(self, ref: str) -> str:
        """``ref`` as a run folder records it: relative to ``root`` (``#N`` as is)."""
        return paths.relative_ref(self.root, ref)

    def load_ref(self, ref: str, size: int, interpolation: str) -> np.ndarray:
        """RGB uint8 pixels of a recorded ``ref`` (a manifest's), resolved under ``root``.

        Raises:
            RunFolderError: the ref escapes the root, or its image is gone or unreadable.
        """
        path = paths.resolve_ref(self.root, ref, "calibration.json", self.legacy)
        try:
            return self.load_item(Item(path, 0), size, interpolation)
        except (decode.ImageDecodeError, ValueError, IndexError) as exc:
            raise RunFolderError(
                f"calibration image {path} is unreadable or gone ({str(exc)[:120]}); restore it, "
                "or run `edgetl calibrate` to choose a new set"
            ) from None

    def pixels(
        self, items: Sequence[Item], size: int, interpolation: str = "area", warn: bool = True
    ) -> tuple[np.ndarray, list[Item], list[dict[str, str]]]:
        """Decode and resize ``items`` to RGB uint8 (N, size, size, 3); ``warn`` logs the skips.

        Returns:
            (pixels, items that decoded, skipped ``{"ref", "reason"}`` records): an
            unreadable file is counted and listed, never fatal.
        """
        out = np.empty((len(items), size, size, 3), dtype=np.uint8)
        kept: list[Item] = []
        skipped: list[dict[str, str]] = []
        for item in log.progress(items, len(items), f"decoding {size}px images"):
            try:
                out[len(kept)] = self.load_item(item, size, interpolation)
                kept.append(item)
            except (decode.ImageDecodeError, ValueError) as exc:
                skipped.append({"ref": item.ref, "reason": str(exc)})
        if skipped and warn:
            log.warn(f"skipped {len(skipped)} unreadable image(s), e.g. {skipped[0]['reason']}")
        return out[: len(kept)], kept, skipped

    def load_item(self, item: Item, size: int, interpolation: str) -> np.ndarray:
        if item.ref.startswith("#"):
            if self.array is None or not item.ref[1:].isdigit() or int(item.ref[1:]) >= len(self.array):
                raise ValueError(f"{item.ref} is not a row of the image array {self.root}")
            rgb = preprocess.to_rgb(self.array[int(item.ref[1:])], "RGB")
            return preprocess.resize(rgb, size, size, interpolation)
        return decode.load_image(item.ref, size, size, interpolation)
