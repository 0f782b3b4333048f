"""Frame sources: synthetic MJPG videos (in order, paced, looped, closed early) and fake cameras.

Each video frame's content encodes its number (grey level = 4 x number), so the tests
check which frame arrived, not only the counter beside it. The cameras are small
stand-ins for ``cv2.VideoCapture`` handed to ``Camera`` through its ``opener``: they
deliver, fail and recover on a script, so loss, backoff and reconnects are exercised
without a device.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import pytest
from edgetl.runtime import sources
from edgetl.runtime.cameras import Camera
from edgetl.runtime.sources import Frame, LatestFrame, SourceError, VideoFile

LEVEL = 4  # grey level per frame number; MJPG keeps a flat grey within +-2


def write_video(path: Path, frames: int, fps: float = 30.0, size: tuple[int, int] = (64, 48)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), LEVEL * i, np.uint8))
    writer.release()
    return path


def content(frame: Frame) -> int:
    """The frame number its pixels encode."""
    return int(round(float(frame.image.mean()) / LEVEL))


def reader_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in ("video-decoder", "video-reader", "camera-reader")]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "clip.avi", 40)


# --- video files --------------------------------------------------------------------------------


def test_video_delivers_every_frame_in_order(clip: Path) -> None:
    with VideoFile(str(clip)) as video:
        frames = list(video.frames())
    assert len(frames) == 40 == int(cv2.VideoCapture(str(clip)).get(cv2.CAP_PROP_FRAME_COUNT))
    assert [f.index for f in frames] == list(range(40))
    assert [content(f) for f in frames] == list(range(40))
    assert {f.color_order for f in frames} == {"BGR"} and {f.source for f in frames} == {str(clip)}
    assert video.stats.dropped == 0 and video.fps == pytest.approx(30.0)
    assert reader_threads() == []


def test_video_loop_starts_again_at_the_end(clip: Path) -> None:
    with VideoFile(str(clip), loop=True) as video:
        frames = []
        for frame in video.frames():
            frames.append(frame)
            if len(frames) == 100:
                break
    assert [f.index for f in frames] == list(range(100))
    assert [content(f) for f in frames] == [i % 40 for i in range(100)]
    assert reader_threads() == []


def test_realtime_slow_consumer_sees_fresh_frames_not_a_backlog(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "fast.avi", 50, fps=50.0)  # 1 s of video
    seen, ages = [], []
    with VideoFile(str(clip), realtime=True) as video:
        started = time.monotonic()
        for frame in video.frames():
            ages.append(time.monotonic() - frame.captured)
            seen.append(frame)
            time.sleep(0.1)  # a classifier at 10 FPS behind a 50 FPS source
        elapsed = time.monotonic() - started
    indices = [f.index for f in seen]
    assert indices == sorted(set(indices)) and [content(f) for f in seen] == indices
    assert len(seen) < 25 and max(np.diff(indices)) >= 3, indices  # skipped ahead
    assert indices[-1] >= 45 and elapsed < 2.0  # reached the end on the video's clock, not the consumer's
    assert max(ages) < 0.3, ages  # a backlog would be ~0.8 s old by the end
    assert video.stats.dropped > 0 and video.stats.dropped + len(seen) == 50


@pytest.mark.parametrize("realtime", [False, True], ids=["in-order", "realtime"])
def test_close_mid_iteration_stops_the_reader_thread(clip: Path, realtime: bool) -> None:
    video = VideoFile(str(clip), realtime=realtime, loop=True)
    for frame in video.frames():
        if frame.index == 3:
            break
    assert reader_threads() != []
    started = time.monotonic()
    video.close()
    video.close()  # twice is fine
    assert time.monotonic() - started < 1.0
    assert reader_threads() == []


def test_missing_or_undecodable_video_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"nope\.avi: no such video file$"):
        VideoFile(str(tmp_path / "nope.avi"))
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"not a video" * 100)
    with pytest.raises(
        SourceError, match=r"junk\.avi: OpenCV cannot open it as a video \(unknown container or codec\)$"
    ):
        VideoFile(str(junk))


# --- cameras (fake captures) --------------------------------------------------------------------


class FakeCapture:
    """``cv2.VideoCapture``'s reading interface on a script: ``good`` frames, ``bad`` failed reads, then more frames.

    ``bad=None`` fails forever after the good frames; ``opened=False`` never opens.
    """

    def __init__(self, good: int = 5, bad: Optional[int] = None, opened: bool = True, period: float = 0.005):
        self.good, self.bad, self.opened, self.period = good, bad, opened, period
        self.reads = 0
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802 - the cv2 name
        return self.opened and not self.released

    def read(self) -> tuple[bool, Optional[np.ndarray]]:
        time.sleep(self.period)
        self.reads += 1
        failing = self.good < self.reads and (self.bad is None or self.reads <= self.good + self.bad)
        if self.released or failing:
            return False, None
        return True, np.full((24, 32, 3), self.reads % 200, np.uint8)

    def release(self) -> None:
        self.released = True


class Opener:
    """Hands out the scripted captures in turn, then a fresh ``FakeCapture(**rest)`` for every later call."""

    def __init__(self, *captures: FakeCapture, **rest: object):
        self.captures, self.rest, self.calls = list(captures), rest, 0

    def __call__(self) -> FakeCapture:
        self.calls += 1
        if self.calls > len(self.captures):
            self.captures.append(FakeCapture(**self.rest))  # type: ignore[arg-type]
        return self.captures[self.calls - 1]


def _drain(source: Camera, limit: int = 1000) -> list[Frame]:
    got = []
    for frame in source.frames():
        got.append(frame)
        if len(got) >= limit:
            break
    return got


@pytest.mark.parametrize("reopen_opens", [False, True], ids=["reopen-fails", "reopens-but-no-frames"])
def test_lost_camera_is_a_source_error_after_the_retries(reopen_opens: bool) -> None:
    # Either the device is gone (open fails) or it opens and never delivers: both must end, promptly.
    opener = Opener(FakeCapture(good=5), good=0, opened=reopen_opens)
    cam = Camera(1, retries=3, backoff=0.01, stall_s=0.1, opener=opener)
    started = time.monotonic()
    got = []
    with pytest.raises(SourceError) as err:
        for frame in cam.frames():
            got.append(frame)
    cam.close()
    assert (
        str(err.value)
        == "camera 1 was lost and did not come back after 3 reconnects; check the cable/URL and that no other program holds it"
    )
    assert cam.stats.reconnects == 3 and opener.calls == 4
    assert 0 < len(got) and len(got) + cam.stats.dropped == 5
    assert [f.index for f in got] == sorted({f.index for f in got}) and got[-1].index <= 4
    assert time.monotonic() - started < 5.0
    assert reader_threads() == []


def test_camera_that_never_opens_fails_at_once_without_retries() -> None:
    opener = Opener(FakeCapture(opened=False))
    with pytest.raises(SourceError) as err:
        Camera("rtsp://camera.local/stream", retries=5, backoff=5.0, opener=opener)
    assert (
        str(err.value)
        == "rtsp://camera.local/stream cannot be opened; check the cable/URL and that no other program holds it"
    )
    assert opener.calls == 1 and opener.captures[0].released


def test_brief_read_failures_are_ridden_out_without_a_reconnect() -> None:
    opener = Opener(FakeCapture(good=5, bad=3))  # 3 bad reads take ~15 ms, well inside the 0.5 s grace
    with Camera(0, retries=1, backoff=0.01, stall_s=0.5, opener=opener) as cam:
        got = _drain(cam, limit=12)
    assert len(got) == 12 and cam.stats.reconnects == 0 and opener.calls == 1
    assert [f.index for f in got] == sorted({f.index for f in got})


def test_lost_camera_that_comes_back_is_reconnected_and_frames_continue() -> None:
    first, second = FakeCapture(good=5), FakeCapture(good=10_000)
    opener = Opener(first, second)
    with Camera(0, retries=2, backoff=0.01, stall_s=0.1, opener=opener) as cam:
        got = _drain(cam, limit=20)
    assert len(got) == 20 and cam.stats.reconnects == 1 and opener.calls == 2
    assert first.released and second.released
    indices = [f.index for f in got]
    assert indices == sorted(set(indices)) and indices[-1] >= 19
    assert {f.source for f in got} == {"camera 0"} and {f.color_order for f in got} == {"BGR"}
    assert reader_threads() == []


def test_close_during_reconnect_backoff_is_prompt() -> None:
    cam = Camera(0, retries=3, backoff=5.0, stall_s=0.05, opener=Opener(FakeCapture(good=1), opened=False))
    frames = cam.frames()
    next(frames)
    time.sleep(0.3)  # the reader is now waiting 5 s before its first reconnect
    started = time.monotonic()
    cam.close()
    assert time.monotonic() - started < 1.0
    assert reader_threads() == []


def test_slow_consumer_of_a_camera_gets_the_newest_frame() -> None:
    with Camera(0, opener=Opener(FakeCapture(good=10_000, period=0.002))) as cam:
        got = []
        for frame in cam.frames():
            got.append((frame, time.monotonic() - frame.captured))
            time.sleep(0.1)  # a classifier at 10 FPS behind a camera at up to 500 FPS
            if len(got) == 6:
                break
    ages = [age for _, age in got]
    assert cam.stats.dropped > 10 and min(np.diff([f.index for f, _ in got])) >= 2
    assert np.median(ages) < 0.05 and max(ages) < 0.2, ages  # a queue would hand over frames seconds old


# --- the one-slot mailbox -----------------------------------------------------------------------


def _frame(i: int) -> Frame:
    return Frame(np.zeros((2, 2, 3), np.uint8), i, "test", "BGR", time.monotonic())


def test_latest_frame_keeps_only_the_newest_and_counts_the_rest() -> None:
    slot = LatestFrame()
    assert slot.get(timeout=0.01) is None
    for i in range(3):
        slot.put(_frame(i))
    assert slot.get(timeout=0.01).index == 2 and slot.dropped == 2
    assert slot.get(timeout=0.01) is None  # nothing it has not returned already
    slot.put(_frame(3))
    assert slot.get(timeout=0.01).index == 3 and slot.dropped == 2


def test_latest_frame_wakes_a_waiting_reader_and_drains_before_closing() -> None:
    slot = LatestFrame()
    timer = threading.Timer(0.05, slot.put, args=(_frame(7),))
    timer.start()
    started = time.monotonic()
    assert slot.get(timeout=5).index == 7
    assert time.monotonic() - started < 2
    slot.put(_frame(8))
    slot.close()
    assert slot.get(timeout=5).index == 8  # closed, but the last frame is still handed over
    started = time.monotonic()
    assert slot.get(timeout=5) is None and time.monotonic() - started < 1


def test_image_folder_expansion_and_errors(tmp_path: Path) -> None:
    for name in ("b.png", "a.JPG", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    assert [p.name for p in sources.expand_images([str(tmp_path)])] == ["a.JPG", "b.png"]
    assert [p.name for p in sources.expand_images([str(tmp_path / "notes.txt"), str(tmp_path)])] == [
        "notes.txt",
        "a.JPG",
        "b.png",
    ]
    with pytest.raises(
        SourceError, match=r"missing\.png: no such file or folder; pass image files or a folder of them$"
    ):
        sources.expand_images([str(tmp_path / "missing.png")])
    with pytest.raises(SourceError, match=r"^no image files in .*sub \(looked for \.bmp, \.dib, \.jpe, \.jpeg"):
        sources.expand_images([str(tmp_path / "sub")])
