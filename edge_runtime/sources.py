"""Frame sources: image files and video files, and what every source shares (live cameras: ``cameras.py``).

Live sources are read by a thread that keeps only the newest frame. OpenCV's V4L2
backend otherwise queues frames, and a classifier slower than the camera reports
on frames seconds old (opencv#13145); with the thread a slow consumer always gets
the freshest frame and the skipped ones are counted as dropped. A camera that stops
delivering is reopened with backoff, then given up on with ``SourceError``.
Video files are decoded one frame ahead in a thread, in order, nothing dropped
(``realtime=True`` paces them at their own frame rate and drops like a camera).
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
from edgetl.runtime import decode
from edgetl.runtime.errors import EdgeTLError
from edgetl.runtime.native_log import hide_native_logs

END_OF_STREAM = object()


class SourceError(EdgeTLError, RuntimeError):
    """A source cannot be opened, or was lost and did not come back."""


@dataclasses.dataclass
class Frame:
    """One image from a source.

    Attributes:
        image: uint8 pixels in ``color_order``.
        index: position in the source (frames read, dropped ones included).
        source: what it came from (a path, ``camera 0``, a URL).
        color_order: ``BGR`` (OpenCV) or ``RGB`` (decoded files).
        captured: ``time.monotonic()`` when it was read.
        tensor: the model's input tensor, when the source's reader thread already
            prepared it (see ``FrameSource.prepare``); None otherwise.
        prepare_ms: what preparing ``tensor`` cost on the reader thread.
    """

    image: np.ndarray
    index: int
    source: str
    color_order: str
    captured: float
    tensor: Optional[np.ndarray] = None
    prepare_ms: float = 0.0


@dataclasses.dataclass
class SourceStats:
    """What a source skipped on the way: frames dropped, files unreadable, reconnects."""

    dropped: int = 0
    reconnects: int = 0
    skipped: list[str] = dataclasses.field(default_factory=list)


class LatestFrame:
    """A one-slot mailbox: ``put`` replaces the frame, ``get`` waits for one it has not returned."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Optional[Frame] = None
        self._fresh = False
        self._closed = False
        self.dropped = 0

    def put(self, frame: Frame) -> None:
        with self._cond:
            if self._fresh:
                self.dropped += 1
            self._frame, self._fresh = frame, True
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def get(self, timeout: float) -> Optional[Frame]:
        """The newest unseen frame; None on timeout or once closed and drained."""
        with self._cond:
            self._cond.wait_for(lambda: self._fresh or self._closed, timeout)
            if not self._fresh:
                return None
            self._fresh = False
            return self._frame


class FrameSource:
    """Base of all sources: iterate ``frames()``, then ``close()`` (also on errors)."""

    name = "source"

    def __init__(self) -> None:
        self.stats = SourceStats()
        # Set to ``Classifier.prepare`` to build each frame's input tensor on the source's
        # reader thread (video files, cameras), overlapping it with the previous frame's
        # invoke(): the loop then only invokes. cv2 and the interpreter release the GIL.
        self.prepare: Optional[Callable[[np.ndarray, str], np.ndarray]] = None

    def _prepared(self, frame: Frame) -> Frame:
        """``frame`` with its tensor built by ``prepare`` when set; on failure left for the consumer to report."""
        if self.prepare is not None:
            started = time.perf_counter()
            try:
                frame.tensor = self.prepare(frame.image, frame.color_order)
            except Exception:  # noqa: BLE001 - the consumer prepares it again and raises the real error there
                return frame
            frame.prepare_ms = (time.perf_counter() - started) * 1e3
        return frame

    def frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        """Stop background threads and release devices; safe to call twice."""

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class ImageFiles(FrameSource):
    """Files and folders of images, in the order given (folders sorted); unreadable ones skipped."""

    def __init__(self, paths: Sequence[str]):
        super().__init__()
        self.paths = expand_images(paths)
        self.name = f"{len(self.paths)} image(s)"

    def frames(self) -> Iterator[Frame]:
        for index, path in enumerate(self.paths):
            try:
                image = decode.decode_image(path)
            except decode.ImageDecodeError as exc:
                self.stats.skipped.append(str(exc))
                continue
            yield Frame(image, index, str(path), "RGB", time.monotonic())


def expand_images(paths: Sequence[str]) -> list[Path]:
    """Files as given plus the image files of each folder (sorted, not recursive).

    Raises:
        SourceError: a path does not exist, or nothing to classify was found.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(
                sorted(p for p in path.iterdir() if p.suffix.lower() in decode.IMAGE_EXTENSIONS and p.is_file())
            )
        elif path.is_file():
            found.append(path)
        else:
            raise SourceError(f"{path}: no such file or folder; pass image files or a folder of them")
    if not found:
        raise SourceError(
            f"no image files in {', '.join(map(str, paths))} (looked for {', '.join(sorted(decode.IMAGE_EXTENSIONS))})"
        )
    return found


class FrameReader(threading.Thread):
    """Calls ``read()`` until it returns None or the stop event is set; hands frames to ``sink``."""

    def __init__(self, read: Callable[[], Any], sink: Callable[[Any], None], name: str):
        super().__init__(name=name, daemon=True)
        self._read, self._sink = read, sink
        self.stop = threading.Event()
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                item = self._read()
                self._sink(item)
                if item is END_OF_STREAM:
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            self.error = exc
            self._sink(END_OF_STREAM)


MAX_BAD_FRAMES = 25  # failed reads in a row that end a video whose frame count is unknown


def check_frame_size(capture: Any, name: str) -> None:
    """Refuse, before decoding a frame, a source whose reported frame size is over the image pixel budget.

    Raises:
        SourceError: width x height over ``decode.MAX_DECODE_PIXELS`` (a 100-megapixel
            video would allocate 300 MB a frame, several frames ahead).
    """
    if not hasattr(capture, "get"):  # Picamera2 (its size is ours) and test doubles
        return
    width, height = int(capture.get(3) or 0), int(capture.get(4) or 0)  # cv2.CAP_PROP_FRAME_WIDTH / HEIGHT
    if width * height > decode.MAX_DECODE_PIXELS:
        raise SourceError(
            f"{name}: frames of {width}x{height} ({width * height / 1e6:.0f} megapixels) are over the "
            f"{decode.MAX_DECODE_PIXELS / 1e6:.0f}-megapixel budget for one image; downscale the video first"
        )


def open_capture(target: Any, *params: int) -> Any:
    """``cv2.VideoCapture(target)``; FFmpeg's own lines (``[tcp @ 0x…] Failed to resolve hostname …``) hidden unless -v:
    a capture that does not open gets edge-classify's one error line instead."""
    import cv2

    with hide_native_logs():
        return cv2.VideoCapture(target, cv2.CAP_ANY, list(params)) if params else cv2.VideoCapture(target)


class VideoFile(FrameSource):
    """A video file, every frame in order (decoded one step ahead), or paced at its frame rate."""

    def __init__(self, path: str, realtime: bool = False, loop: bool = False):
        super().__init__()
        self.path, self.realtime, self.loop = Path(path), realtime, loop
        self.name = str(path)
        if not self.path.is_file():
            raise SourceError(f"{path}: no such video file")
        self._capture = open_capture(str(self.path))
        if not self._capture.isOpened():
            raise SourceError(f"{path}: OpenCV cannot open it as a video (unknown container or codec)")
        check_frame_size(self._capture, self.name)
        self._frames = int(self._capture.get(7) or 0)  # cv2.CAP_PROP_FRAME_COUNT (an estimate; 0 when unknown)
        fps = float(self._capture.get(5) or 0)  # cv2.CAP_PROP_FPS
        self.fps = fps if 0 < fps < 1000 else 30.0
        self._index = 0
        self._reader: Optional[FrameReader] = None
        self._ahead: queue.Queue = queue.Queue(maxsize=4)

    def _read(self) -> Any:
        if self.realtime and self._reader is not None:  # wait for this frame's presentation time, as a camera would
            self._reader.stop.wait(max(0.0, self._start + self._index / self.fps - time.monotonic()))
        ok, image = self._read_frame()
        if not ok and self.loop and self._index > 0:
            self._capture.set(1, 0)  # cv2.CAP_PROP_POS_FRAMES: rewind
            ok, image = self._read_frame()
        if not ok:
            return END_OF_STREAM
        frame = Frame(image, self._index, self.name, "BGR", time.monotonic())
        self._index += 1
        return self._prepared(frame)

    def _read_frame(self) -> tuple[bool, Any]:
        """The next decodable frame; a corrupt one is skipped and counted, not taken for the end.

        The video ends at its reported frame count, or after ``MAX_BAD_FRAMES`` failed
        reads in a row (a count can be missing or an estimate).
        """
        failed = 0
        while failed < MAX_BAD_FRAMES:
            ok, image = self._capture.read()
            if ok and image is not None and image.size:
                self._skip(failed)
                return True, image
            if 0 < self._frames <= self._index + failed:  # a failed read at the reported end: the end
                break
            failed += 1
        if self._frames > 0:  # frames before the reported end that did not decode
            self._skip(failed)
            if failed == MAX_BAD_FRAMES:
                self.stats.skipped.append(f"{self.name}: {failed} frames in a row could not be decoded; stopped there")
        return False, None  # the end (with no count, MAX_BAD_FRAMES failures in a row end it too)

    def _skip(self, count: int) -> None:
        for i in range(count):
            self.stats.skipped.append(f"{self.name}: frame {self._index + i} could not be decoded, skipped")
        self._index += count

    def frames(self) -> Iterator[Frame]:
        self._start = time.monotonic()
        if self.realtime:
            slot = LatestFrame()
            self._reader = FrameReader(
                self._read, lambda f: slot.close() if f is END_OF_STREAM else slot.put(f), "video-reader"
            )
            self._reader.start()
            while (frame := slot.get(timeout=60)) is not None:
                self.stats.dropped = slot.dropped
                yield frame
            self.stats.dropped = slot.dropped
        else:
            self._reader = FrameReader(self._read, self._ahead.put, "video-decoder")
            self._reader.start()
            while (frame := self._ahead.get()) is not END_OF_STREAM:
                yield frame
        if self._reader.error is not None:
            raise SourceError(f"{self.name}: decoding failed ({self._reader.error})")

    def close(self) -> None:
        if self._reader is not None:
            self._reader.stop.set()
            while self._reader.is_alive():  # a decoder blocked on a full queue needs room to see the flag
                try:
                    self._ahead.get_nowait()
                except queue.Empty:
                    pass
                self._reader.join(timeout=0.02)
        self._capture.release()
