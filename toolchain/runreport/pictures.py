"""The page's own pictures: sample thumbnails per class and the int8 per-layer error chart.

Thumbnails are decoded by the device's code (:mod:`edgetl.data`, resolved under the
run's recorded data root) and encoded with OpenCV; the chart is drawn by matplotlib
(:mod:`edgetl.metrics`). Both are imported only when a picture is made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from edgetl import data, metrics
from edgetl.errors import EdgeTLError

SAMPLES_PER_CLASS = 6
THUMB = 64  # pixels: small enough for a page, large enough to see what a class looks like
JPEG_QUALITY = 88  # photos: a sixth of the PNG's bytes, no visible loss at this size
HEALTHY_RMSE_SCALE = 1 / 12**0.5  # rounding alone: a uniform error over one quantization step


def sample_rows(run: Path, num_classes: int, interpolation: str = "area") -> tuple[list[Optional[bytes]], str]:
    """One JPEG strip of training images per class (None for a class without readable images), and a note.

    The note says why there are no pictures when the images cannot be read (moved data,
    a damaged split list); the page shows it instead of failing.
    """
    import cv2

    try:
        dataset, items = data.load_split(run, "train")
    except (EdgeTLError, OSError, ValueError) as exc:
        return [None] * num_classes, f"no sample images: {exc}"
    chosen = [it for label in range(num_classes) for it in [i for i in items if i.label == label][:SAMPLES_PER_CLASS]]
    pixels, kept, _ = dataset.pixels(chosen, THUMB, interpolation, warn=False)
    strips: list[Optional[bytes]] = []
    gap = np.full((THUMB, 4, 3), 255, np.uint8)
    for label in range(num_classes):
        images = [image for image, it in zip(pixels, kept) if it.label == label]
        if not images:
            strips.append(None)
            continue
        strip = np.hstack([part for image in images for part in (image, gap)][:-1])
        ok, jpeg = cv2.imencode(".jpg", strip[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        strips.append(jpeg.tobytes() if ok else None)
    return strips, ""


def debug_chart(rows: Sequence[dict[str, Any]], worst: int = 20) -> Optional[bytes]:
    """Horizontal bars of the layers with the largest int8 error per quantization step (``rmse/scale``)."""
    scored = []
    for row in rows:
        try:
            value = float(row.get("rmse/scale") or "nan")
        except ValueError:
            continue
        if np.isfinite(value):
            scored.append((value, str(row.get("layer") or row.get("tensor_name") or "?")[:48]))
    if not scored:
        return None
    scored = sorted(scored, reverse=True)[:worst]
    plt = metrics.pyplot()
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(scored) + 1.3))
    ax.barh(range(len(scored)), [v for v, _ in scored], color="#54aeff")
    ax.set_yticks(range(len(scored)), [name for _, name in scored], fontsize=metrics.SMALL)
    ax.invert_yaxis()
    ax.axvline(HEALTHY_RMSE_SCALE, color="#1a7f37", ls="--", lw=1.2, label="0.289: rounding alone (1/√12)")
    ax.set_xlabel("rmse / scale (error in quantization steps)")
    ax.set_title(f"int8 error per layer, the {len(scored)} worst of {len(rows)}", fontsize=10)
    ax.legend(fontsize=metrics.SMALL, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return metrics.figure_png(fig)
