"""What a person watching sees: label, score and smoothed FPS drawn on the frame, in a window."""

from __future__ import annotations

import time
from typing import Optional, Sequence

import numpy as np
from edgetl.runtime.classifier import Category

WINDOW = "edge-classify"
QUIT_KEYS = {ord("q"), 27}  # q, Esc


class DisplayError(RuntimeError):
    """No window can be opened here (a headless OpenCV wheel, or no X/Wayland display)."""


class FpsMeter:
    """Frames per second, exponentially smoothed so the number on screen is readable."""

    def __init__(self, smoothing: float = 0.9):
        self.smoothing = smoothing
        self.fps = 0.0
        self._last: Optional[float] = None

    def tick(self, now: Optional[float] = None) -> float:
        now = time.perf_counter() if now is None else now
        if self._last is not None and now > self._last:
            instant = 1.0 / (now - self._last)
            self.fps = instant if self.fps == 0 else self.smoothing * self.fps + (1 - self.smoothing) * instant
        self._last = now
        return self.fps


def draw(frame: np.ndarray, categories: Sequence[Category], fps: float) -> np.ndarray:
    """A copy of ``frame`` (BGR) with one ``label score`` line per category and the FPS."""
    import cv2  # noqa: PLC0415

    out = np.ascontiguousarray(
        frame if frame.ndim == 3 and frame.shape[2] == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    ).copy()
    scale = max(0.4, out.shape[0] / 720)
    lines = [f"{c.label} {c.score:.2f}" for c in categories] or ["(below threshold)"]
    lines.append(f"{fps:.1f} FPS")
    for i, text in enumerate(lines):
        y = int((24 + 28 * i) * scale * 1.4)
        cv2.putText(out, text, (10, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 4, cv2.LINE_AA)
        cv2.putText(out, text, (10, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


class Display:
    """An OpenCV window; ``show`` returns False when the user pressed q or Esc.

    Raises (from the constructor):
        DisplayError: OpenCV has no GUI here (a headless wheel, or no X/Wayland display).
    """

    def __init__(self) -> None:
        import cv2  # noqa: PLC0415

        self._cv2 = cv2
        try:
            cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
        except cv2.error:
            raise DisplayError(
                "no display available (headless OpenCV or no $DISPLAY); add --headless for JSON lines on stdout"
            ) from None

    def show(self, image: np.ndarray) -> bool:
        self._cv2.imshow(WINDOW, image)
        return (self._cv2.waitKey(1) & 0xFF) not in QUIT_KEYS

    def close(self) -> None:
        self._cv2.destroyAllWindows()
