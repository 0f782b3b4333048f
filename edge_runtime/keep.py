"""Keep what the device saw: annotated frames or a video, uncertain frames to label, a training set.

- ``--save DIR``: annotated frames (label, score, FPS drawn), at most one per ``--every`` seconds;
  ``--save-video FILE`` (.avi MJPG or .mp4 mp4v): every annotated frame as a video.
- ``--save-uncertain DIR --below P``: raw frames whose top-1 score is under P, named by their
  top labels and scores (``shirt-0.41_T-shirt_top-0.33_<run>-000123.jpg``), ready to be labelled.
- ``--collect DIR --label NAME``: raw frames into ``DIR/NAME/`` every ``--every`` seconds, so the
  next training set comes from this camera (``edgetl train DIR`` reads class folders).
- ``--summary-every S``: one JSON summary line every S seconds (frames, FPS, top labels)
  instead of a line per frame: what a service's journal wants.

Near-duplicates are skipped for ``--collect`` and ``--save-uncertain``: a frame is kept only
when the mean absolute difference of its 32x32 grey thumbnail from the last kept one is at
least ``--min-change`` grey levels (0-255; default 3: sensor noise averages out in the
thumbnail, a hand moving in the scene does not). Time is the video's own clock for a video
file (frame number / FPS), so a recorded clip stands in for the camera it came from.

Every file is written to a hidden temporary name and renamed (``atomic_path``), so no
reader ever sees half a file, and SIGTERM ends the run like Ctrl-C (the video is closed and
renamed, the summary printed). Disk use is bounded per folder by ``--max-files`` and
``--max-mb`` (files already there count) and by a floor of free space; when one is reached
the run says so once and goes on classifying without keeping more.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TextIO

import click
import numpy as np
from edgetl.runtime import overlay
from edgetl.runtime.model_card import atomic_path

THUMB = 32  # thumbnail side for the near-duplicate test
MIN_FREE_MB = 200  # never fill the card past this much free space
JPEG_QUALITY = 95
VIDEO_CODECS = {".avi": "MJPG", ".mp4": "mp4v"}
LABEL_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.+-]*$")


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: end the run as Ctrl-C does (outputs closed, summary printed)."""


def end_on_sigterm() -> None:
    """Make SIGTERM raise ``Terminated`` in the main thread (no-op elsewhere)."""

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
        raise Terminated()

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (a library user's worker)
        pass


@dataclasses.dataclass(frozen=True)
class KeepConfig:
    """What to keep of a run (every field off by default)."""

    save: Optional[str] = None
    save_video: Optional[str] = None
    save_uncertain: Optional[str] = None
    below: float = 0.5
    collect: Optional[str] = None
    label: Optional[str] = None
    every: float = 1.0
    min_change: float = 3.0
    max_files: int = 1000
    max_mb: float = 500.0
    summary_every: float = 0.0

    @property
    def active(self) -> bool:
        return any((self.save, self.save_video, self.save_uncertain, self.collect, self.summary_every > 0))


def options(command: Callable) -> Callable:
    """The Click options of ``KeepConfig``, for ``edge-classify``."""
    specs = [
        ("--save", dict(metavar="DIR", help="keep annotated frames in DIR (one per --every seconds)")),
        ("--save-video", dict(metavar="FILE", help="write every annotated frame to FILE (.avi MJPG or .mp4)")),
        ("--save-uncertain", dict(metavar="DIR", help="keep frames whose top-1 score is below --below, named by their top labels")),
        ("--below", dict(type=click.FloatRange(0, 1), default=0.5, show_default=True, help="--save-uncertain's score limit")),
        ("--collect", dict(metavar="DIR", help="collect raw frames for training into DIR/LABEL/ (needs --label)")),
        ("--label", dict(metavar="NAME", help="--collect's class name (its sub-folder)")),
        ("--every", dict(type=click.FloatRange(0), default=1.0, show_default=True, help="seconds between kept frames (0 = every frame)")),
        ("--min-change", dict(type=click.FloatRange(0), default=3.0, show_default=True, help="near-duplicate limit: mean grey-level change of a 32x32 thumbnail")),
        ("--max-files", dict(type=click.IntRange(1), default=1000, show_default=True, help="files per kept folder at most")),
        ("--max-mb", dict(type=click.FloatRange(0.001), default=500.0, show_default=True, help="MiB per kept folder or video at most")),
        ("--summary-every", dict(type=click.FloatRange(0), default=0.0, help="one JSON summary line per this many seconds instead of a line per frame")),
    ]  # fmt: skip
    for name, spec in reversed(specs):
        command = click.option(name, **spec)(command)
    return command


def from_options(values: dict[str, Any]) -> KeepConfig:
    """Take ``KeepConfig``'s fields out of the Click options (removed from ``values``); checks them.

    Raises:
        click.UsageError: --collect without --label (or the reverse), a label that is not a
            plain folder name, a video file type OpenCV cannot write here.
    """
    config = KeepConfig(**{f.name: values.pop(f.name) for f in dataclasses.fields(KeepConfig)})
    if (config.collect is None) != (config.label is None):
        raise click.UsageError("--collect DIR and --label NAME go together (frames go into DIR/NAME/)")
    if config.label is not None and (not LABEL_PATTERN.match(config.label) or ".." in config.label):
        raise click.UsageError(f"--label {config.label!r}: use letters, digits, space, _ . + - (a folder name)")
    if config.save_video is not None and Path(config.save_video).suffix.lower() not in VIDEO_CODECS:
        raise click.UsageError(f"--save-video {config.save_video}: end the name with .avi (MJPG) or .mp4 (mp4v)")
    return config


def file_label(text: str) -> str:
    """``text`` safe in a file name: anything but letters, digits, ``.`` and ``+`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9.+]+", "_", text).strip("_") or "_"


def thumbnail(image: np.ndarray) -> np.ndarray:
    """The 32x32 grey float thumbnail the near-duplicate test compares."""
    import cv2

    grey = image if image.ndim == 2 else cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)


def change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute grey-level difference of two thumbnails (0-255)."""
    return float(np.mean(np.abs(a - b)))


class DiskBudget:
    """Files and bytes kept in one place, against ``--max-files``, ``--max-mb`` and the free-space floor."""

    def __init__(self, folder: Path, max_files: int, max_mb: float, count_existing: bool = True) -> None:
        self.folder, self.max_files, self.max_mb = folder, max_files, max_mb
        existing = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")] if count_existing else []
        self.files, self.bytes = len(existing), sum(p.stat().st_size for p in existing)

    def refusal(self, size: int, new_file: bool = True) -> Optional[str]:
        """Why ``size`` more bytes cannot be written here, or None."""
        if new_file and self.files >= self.max_files:
            return f"{self.files} files in {self.folder} (--max-files {self.max_files})"
        if self.bytes + size > self.max_mb * 2**20:
            where = f"in {self.folder}" if new_file else "written"
            return f"{self.bytes / 2**20:.3g} MiB {where}, one more would pass --max-mb {self.max_mb:g}"
        return free_space_refusal(self.folder, size)


def free_space_refusal(folder: Path, size: int) -> Optional[str]:
    """Why writing ``size`` bytes into ``folder`` would leave too little free space, or None."""
    free = shutil.disk_usage(folder).free
    if free - size < MIN_FREE_MB * 2**20:
        return f"{free / 2**20:.0f} MiB free on the disk of {folder} (edge-classify leaves {MIN_FREE_MB} MiB)"
    return None


def sweep(folder: Path) -> int:
    """Remove temporary files a killed run (SIGKILL, power loss) left in ``folder``; how many."""
    stale = [p for p in folder.glob(".*.tmp") if p.is_file()] + [p for p in folder.glob(".*.partial.*") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


class FrameKeeper:
    """Writes chosen frames as JPEG files into one folder: rate-limited, de-duplicated, bounded, atomic."""

    def __init__(self, what: str, folder: str, config: KeepConfig, dedup: bool, log: Callable[[str], None]) -> None:
        self.what, self.folder, self.log = what, Path(folder), log
        self.folder.mkdir(parents=True, exist_ok=True)
        if stale := sweep(self.folder):
            log(f"{what}: removed {stale} temporary file(s) an interrupted run left in {self.folder}")
        self.budget = DiskBudget(self.folder, config.max_files, config.max_mb)
        self.every, self.min_change = config.every, (config.min_change if dedup else None)
        self.kept = self.similar = 0
        self.full: Optional[str] = None
        self._last_time: Optional[float] = None
        self._last_thumb: Optional[np.ndarray] = None

    def offer(self, when: float, bgr: np.ndarray, name: str) -> Optional[Path]:
        """Keep ``bgr`` as ``name`` unless too soon, too similar or out of room; the path written, or None."""
        import cv2

        if self.full or (self._last_time is not None and when - self._last_time < self.every):
            return None
        thumb = thumbnail(bgr) if self.min_change is not None else None
        if thumb is not None and self._last_thumb is not None and change(thumb, self._last_thumb) < self.min_change:
            self.similar += 1
            return None
        ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        refusal = self.budget.refusal(len(data)) if ok else "JPEG encoding failed"
        if refusal:
            self.full = refusal
            self.log(f"{self.what}: full, keeping no more frames: {refusal}; classification goes on")
            return None
        path = self.folder / name
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            handle.write(data.tobytes())
            handle.flush()
            os.fsync(handle.fileno())
        self.budget.files, self.budget.bytes = self.budget.files + 1, self.budget.bytes + len(data)
        self.kept, self._last_time, self._last_thumb = self.kept + 1, when, thumb
        return path

    def counts(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "kept": self.kept, "near_duplicates": self.similar, "full": self.full}


class VideoKeeper:
    """Every annotated frame into one video, written under a hidden name and renamed when closed."""

    def __init__(self, path: str, fps: float, config: KeepConfig, log: Callable[[str], None]) -> None:
        self.path, self.fps, self.log = Path(path), fps, log
        self.path.parent.mkdir(parents=True, exist_ok=True)
        sweep(self.path.parent)
        self.budget = DiskBudget(self.path.parent, max_files=2**31, max_mb=config.max_mb, count_existing=False)
        self.tmp = self.path.with_name(f".{self.path.name}.partial{self.path.suffix}")
        self.frames = 0
        self.full: Optional[str] = None
        self._writer: Any = None

    def write(self, bgr: np.ndarray) -> None:
        import cv2

        if self.full:
            return
        if self._writer is None:
            fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[self.path.suffix.lower()])
            self._writer = cv2.VideoWriter(str(self.tmp), fourcc, self.fps, (bgr.shape[1], bgr.shape[0]))
            if not self._writer.isOpened():
                self.full = f"OpenCV cannot write {self.path.suffix} video here"
                self.log(f"--save-video: {self.full}; classification goes on")
                return
        if self.tmp.exists():  # one stat a frame: the writer's buffer is all it can overshoot by
            self.budget.bytes = self.tmp.stat().st_size
            if refusal := self.budget.refusal(bgr.size // 10, new_file=False):
                self.full = refusal
                self.log(
                    f"--save-video: full, {self.path} ends at frame {self.frames}: {refusal}; classification goes on"
                )
                return
        self._writer.write(bgr)
        self.frames += 1

    def close(self) -> None:
        """Finish the video and give it its name (nothing when no frame was written)."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            if self.frames:
                os.replace(self.tmp, self.path)
        if self.tmp.exists():
            self.tmp.unlink()

    def counts(self) -> dict[str, Any]:
        return {"file": str(self.path), "frames": self.frames, "full": self.full}


class Journal:
    """One JSON line per window of ``every`` seconds: frames, FPS, the most frequent top-1 labels."""

    def __init__(self, every: float, out: TextIO, kept: Callable[[], dict[str, int]]) -> None:
        self.every, self.out, self.kept = every, out, kept
        self.total = 0
        self._start: Optional[float] = None
        self._last = 0.0
        self._wall = time.perf_counter()
        self._labels: collections.Counter = collections.Counter()
        self._scores: collections.defaultdict = collections.defaultdict(float)
        self._frames = 0

    def add(self, when: float, categories: Sequence[Any]) -> None:
        if self._start is None:
            self._start = when
        self._last = when
        self._frames += 1
        self.total += 1
        top = categories[0].label if categories else "(below threshold)"
        self._labels[top] += 1
        self._scores[top] += categories[0].score if categories else 0.0
        if when - self._start >= self.every:
            self.flush()

    def flush(self) -> None:
        """Write the window's line (nothing when it saw no frame)."""
        if not self._frames:
            return
        kept, when = self.kept(), self._last
        wall = time.perf_counter() - self._wall
        line = {
            "time": round(time.time(), 3),
            "summary_s": round(when - (self._start or when), 3),
            "frames": self._frames,
            "total_frames": self.total,
            "fps": round(self._frames / wall, 2) if wall > 0 else None,
            "top": [
                {"label": label, "frames": n, "mean_score": round(self._scores[label] / n, 4)}
                for label, n in self._labels.most_common(3)
            ],
            **({"kept": kept} if kept else {}),
        }
        self.out.write(json.dumps(line) + "\n")
        self.out.flush()
        self._start, self._wall, self._frames = None, time.perf_counter(), 0
        self._labels.clear()
        self._scores.clear()


class Keep:
    """Everything ``KeepConfig`` asks for, fed one classified frame at a time by the main loop."""

    def __init__(self, config: KeepConfig, source: Any, out: TextIO, log: Callable[[str], None]) -> None:
        self.config = config
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        fps = float(getattr(source, "fps", 0) or 0)
        # a video file (not paced) stands in for a camera: its own clock, frame number / FPS
        self._video_clock = fps if fps > 0 and not getattr(source, "realtime", True) else 0.0
        self.save = FrameKeeper("--save", config.save, config, False, log) if config.save else None
        self.uncertain = (
            FrameKeeper("--save-uncertain", config.save_uncertain, config, True, log) if config.save_uncertain else None
        )
        self.collect = (
            FrameKeeper("--collect", str(Path(config.collect) / config.label), config, True, log)
            if config.collect and config.label
            else None
        )
        self.video = VideoKeeper(config.save_video, fps or 10.0, config, log) if config.save_video else None
        self.journal = Journal(config.summary_every, out, self._kept) if config.summary_every > 0 else None
        self.final: dict[str, dict[str, Any]] = {}
        self.log = log

    def when(self, frame: Any) -> float:
        """The frame's time in seconds: the video's clock for a video file, capture time otherwise."""
        return frame.index / self._video_clock if self._video_clock else frame.captured

    def add(self, frame: Any, categories: Sequence[Any], fps: float) -> None:
        """Keep what the options ask for of one classified frame."""

        when = self.when(frame)
        bgr = frame.image[:, :, ::-1] if frame.color_order == "RGB" and frame.image.ndim == 3 else frame.image
        if self.save is not None or self.video is not None:
            annotated = overlay.draw(bgr, categories, fps)
            if self.save is not None:
                self.save.offer(when, annotated, f"{self.stamp}-{frame.index:06d}.jpg")
            if self.video is not None:
                self.video.write(annotated)
        if self.uncertain is not None and (not categories or categories[0].score < self.config.below):
            named = "_".join(f"{file_label(c.label)}-{c.score:.2f}" for c in categories[:2]) or "below_threshold"
            self.uncertain.offer(when, bgr, f"{named}_{self.stamp}-{frame.index:06d}.jpg")
        if self.collect is not None:
            self.collect.offer(when, bgr, f"{file_label(self.config.label or '')}-{self.stamp}-{frame.index:06d}.jpg")
        if self.journal is not None:
            self.journal.add(when, categories)

    def _kept(self) -> dict[str, int]:
        return {name: part.get("kept", part.get("frames", 0)) for name, part in self.counts().items()}

    def close(self) -> None:
        """Finish the video and the last summary line, log what was kept; safe to call twice."""
        if self.video is not None:
            self.video.close()
        if self.journal is not None:
            self.journal.flush()
        for name, part in self.counts().items():
            where = part.get("folder") or part.get("file")
            count = f"{part['kept']} frame(s) kept" if "kept" in part else f"{part['frames']} frame(s) written"
            similar = f", {part['near_duplicates']} near-duplicate(s) skipped" if part.get("near_duplicates") else ""
            self.log(
                f"--{name.replace('_', '-')}: {count} in {where}{similar}"
                + (f" (stopped: {part['full']})" if part["full"] else "")
            )
        self.final.update(self.counts())
        self.save = self.uncertain = self.collect = self.video = self.journal = None

    def counts(self) -> dict[str, dict[str, Any]]:
        """What was kept, per option, for the closing summary."""
        parts = {"save": self.save, "save_video": self.video, "save_uncertain": self.uncertain, "collect": self.collect}
        return {name: part.counts() for name, part in parts.items() if part is not None}
