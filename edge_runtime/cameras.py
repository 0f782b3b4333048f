"""Live cameras: USB/CSI devices and RTSP streams through OpenCV, and the Pi camera through Picamera2.

A reader thread keeps only the newest frame (see :mod:`edgetl.runtime.sources`); a camera that stops
delivering is reopened with backoff, then given up on with ``SourceError``.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator, Optional

import numpy as np
from edgetl.runtime.guard import redact
from edgetl.runtime.sources import (
    END_OF_STREAM,
    Frame,
    FrameReader,
    FrameSource,
    LatestFrame,
    SourceError,
    check_frame_size,
    open_capture,
)


class Camera(FrameSource):
    """A live OpenCV source (``/dev/videoN`` or an RTSP/HTTP URL) read by a latest-frame thread.

    Args:
        target: camera index or stream URL.
        retries: reconnect attempts, in a row without a frame, before the source counts as lost.
        backoff: first wait before a reconnect, doubled each time (capped at 8 s).
        stall_s: seconds without a frame that count as a lost source.
        opener: makes a capture object (``cv2.VideoCapture`` by default); tests pass their own.
    """

    def __init__(
        self,
        target: Any,
        retries: int = 5,
        backoff: float = 0.5,
        stall_s: float = 5.0,
        opener: Optional[Callable[[], Any]] = None,
    ):
        super().__init__()
        self.target, self.retries, self.backoff, self.stall_s = target, retries, backoff, stall_s
        self.name = f"camera {target}" if isinstance(target, int) else redact(str(target))  # no password in any output
        self._opener = opener or self._default_opener
        self._slot = LatestFrame()
        self._capture = self._try_open()
        if self._capture is None:  # never opened: no point retrying a device that does not exist
            raise SourceError(f"{self.name} cannot be opened; check the cable/URL and that no other program holds it")
        try:
            check_frame_size(self._capture, self.name)  # a stream of 100-megapixel frames: refused before one decodes
        except SourceError:
            self._capture.release()
            raise
        self._index = 0
        self._attempts = 0  # reconnect attempts since the last good frame
        self._reader = FrameReader(self._read, self._deliver, "camera-reader")

    def _default_opener(self) -> Any:
        import cv2

        timeouts = (
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(self.stall_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(self.stall_s * 1000),
        )
        capture = open_capture(self.target, *timeouts) if isinstance(self.target, str) else open_capture(self.target)
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # where the backend supports it; the thread does the rest
        return capture

    def _try_open(self) -> Optional[Any]:
        """One attempt: an opened capture, or None."""
        capture = self._opener()
        if capture is not None and capture.isOpened():
            return capture
        if capture is not None:
            capture.release()
        return None

    def _reconnect(self) -> Optional[Any]:
        """Reopen a source that stopped delivering, with backoff; None when closed meanwhile.

        Attempts since the last good frame share one budget of ``retries``, so a source
        that opens again but still delivers nothing is given up on too, not reopened forever.

        Raises:
            SourceError: ``retries`` attempts and still no frame.
        """
        while self._attempts < self.retries:
            if self._reader.stop.wait(min(self.backoff * 2**self._attempts, 8.0)):
                return None
            self._attempts += 1
            self.stats.reconnects += 1
            capture = self._try_open()
            if capture is not None:
                return capture
        raise SourceError(
            f"{self.name} was lost and did not come back after {self.retries} reconnects; check the cable/URL and that no other program holds it"
        )

    def _read(self) -> Any:
        failures_since = None
        while not self._reader.stop.is_set():
            ok, image = self._capture.read()
            if ok and image is not None and image.size:
                self._index += 1
                self._attempts = 0
                return self._prepared(Frame(image, self._index - 1, self.name, "BGR", time.monotonic()))
            failures_since = failures_since or time.monotonic()
            if time.monotonic() - failures_since < min(self.stall_s, 1.0):
                time.sleep(0.01)  # a corrupt or late frame: try the next one
                continue
            self._capture.release()
            capture = self._reconnect()
            if capture is None:
                break
            self._capture = capture
            failures_since = None
        return END_OF_STREAM

    def _deliver(self, frame: Any) -> None:
        if frame is END_OF_STREAM:
            self._slot.close()
        else:
            self._slot.put(frame)

    def frames(self) -> Iterator[Frame]:
        self._reader.start()
        while True:
            frame = self._slot.get(timeout=self.stall_s * (self.retries + 2) + 16)
            self.stats.dropped = self._slot.dropped
            if frame is None:
                break
            yield frame
        if self._reader.error is not None:
            raise SourceError(str(self._reader.error)) from None
        if not self._reader.stop.is_set():
            raise SourceError(f"{self.name} stalled: no frame for {self.stall_s * (self.retries + 2) + 16:.0f} s")

    def close(self) -> None:
        self._reader.stop.set()
        if self._reader.is_alive():
            self._reader.join(timeout=self.stall_s + 1)
        self._capture.release()


class PiCamera(Camera):
    """The Raspberry Pi camera through Picamera2 (libcamera), which OpenCV cannot open (opencv#22820)."""

    def __init__(self, size: tuple[int, int] = (640, 480), **kwargs: Any):
        self._size = size
        super().__init__("picam", opener=self._picamera_opener, **kwargs)
        self.name = "picamera2"

    def _picamera_opener(self) -> Any:
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise SourceError(
                "--camera picam needs picamera2: sudo apt install python3-picamera2, and create the venv with --system-site-packages"
            ) from None
        return _Picamera2Capture(Picamera2, self._size)


class _Picamera2Capture:
    """Picamera2 behind the small part of the VideoCapture interface that Camera uses."""

    def __init__(self, factory: Any, size: tuple[int, int]):
        self._camera = factory()
        # "RGB888" is B, G, R in memory: the order OpenCV frames have.
        self._camera.configure(self._camera.create_preview_configuration(main={"format": "RGB888", "size": size}))
        self._camera.start()

    def isOpened(self) -> bool:  # noqa: N802 - the cv2 name
        return True

    def read(self) -> tuple[bool, Optional[np.ndarray]]:
        try:
            return True, self._camera.capture_array()
        except Exception:  # noqa: BLE001 - any camera error is a failed read, handled by reconnecting
            return False, None

    def release(self) -> None:
        self._camera.close()
