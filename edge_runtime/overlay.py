"""What a person watching sees: label, score and smoothed FPS drawn on the frame, in a window."""

from __future__ import annotations

import collections
import os
import re
import sys
import time
from typing import Optional, Sequence

import numpy as np
from edgetl.runtime.classifier import Category

WINDOW = "edge-classify"
QUIT_KEYS = {ord("q"), 27}  # q, Esc


class DisplayError(RuntimeError):
    """No window can be opened here (a headless OpenCV wheel, or no X/Wayland display); the message says why."""


class FpsMeter:
    """Frames per second over a sliding time window: frames counted, divided by the time they took.

    Not a mean of ``1/dt``: one frame 1 ms after another would add ~1000 to such a mean, and
    uneven gaps (a camera delivering in bursts, a reader thread ahead of the loop) would read as
    speed. Over ``window`` seconds, ``(ticks - 1) / (newest - oldest)`` is the rate a viewer sees.
    Until the frames span a quarter of the window the time divided by is that quarter, so the first
    readings climb towards the rate from below instead of spiking (two frames 1 ms apart read 2, not 1000).
    """

    def __init__(self, window: float = 2.0):
        self.window = window
        self.fps = 0.0
        self._ticks: collections.deque[float] = collections.deque()

    def tick(self, now: Optional[float] = None) -> float:
        """Count a frame shown at ``now`` (default: the clock); the frames per second so far in the window."""
        now = time.perf_counter() if now is None else now
        ticks = self._ticks
        ticks.append(now)
        while len(ticks) > 2 and now - ticks[1] >= self.window:  # keep the oldest tick that spans the window
            ticks.popleft()
        if len(ticks) >= 2:
            self.fps = (len(ticks) - 1) / max(now - ticks[0], self.window / 4)
        return self.fps


def draw(frame: np.ndarray, categories: Sequence[Category], fps: float) -> np.ndarray:
    """A copy of ``frame`` (BGR) with one ``label score`` line per category and the FPS."""
    import cv2

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


def window_unavailable() -> Optional[str]:
    """Why no OpenCV window can open here, or None when one can (as far as can be told before trying).

    A headless OpenCV wheel (``opencv-python-headless``, what ``edgetl[edge]`` installs) is built
    without highgui (its build information says ``GUI: NONE``); on Linux a window also needs a
    desktop session (``$DISPLAY`` or ``$WAYLAND_DISPLAY``; not set over ssh or under systemd).
    """
    import cv2

    gui = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.M)
    if gui is not None and gui.group(1).upper() == "NONE":
        return "this OpenCV has no GUI (a headless wheel such as opencv-python-headless)"
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no desktop session ($DISPLAY and $WAYLAND_DISPLAY are unset)"
    return None


class Display:
    """An OpenCV window; ``show`` returns False when the user pressed q or Esc.

    Raises (from the constructor):
        DisplayError: no window can open here (:func:`window_unavailable`, or OpenCV refused it).
    """

    def __init__(self) -> None:
        import cv2

        self._cv2 = cv2
        reason = window_unavailable()
        if reason is None:
            try:
                cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
            except cv2.error as exc:
                reason = f"OpenCV could not open a window ({str(exc).strip().splitlines()[-1]})"
        if reason is not None:
            raise DisplayError(reason)

    def show(self, image: np.ndarray) -> bool:
        self._cv2.imshow(WINDOW, image)
        return (self._cv2.waitKey(1) & 0xFF) not in QUIT_KEYS

    def close(self) -> None:
        self._cv2.destroyAllWindows()
