"""What ``edge-classify`` counts while it runs, summarised at exit: frames, latencies, resident memory.

Bounded however long the run: running sums and a window of recent latencies.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from typing import Any, Optional

import numpy as np

LATENCY_WINDOW = 10_000  # frames behind the summary's p95
WARMUP_FRAMES = 100  # frames before the RSS reference: decoder queues and buffers are full by then


@dataclasses.dataclass
class RunStats:
    """Frame count, latencies and resident memory, summarised at exit.

    Its own memory stays flat however long the run (soak tests, issue #7): means are
    running sums and p95 covers the last ``LATENCY_WINDOW`` frames (a list of every
    latency would grow by ~160 MB a day at 30 FPS and show up as a leak). RSS is read
    at the first frame and again after ``WARMUP_FRAMES`` (``rss_warm_mb``, the reference
    for leak checks: a video's decode-ahead queue alone fills in the first frames, four
    frames of 1080p are 25 MB); the last RSS is read before numpy's first
    ``percentile`` call, which loads ~2 MB of code.
    """

    frames: int = 0
    total_ms_sum: float = 0.0
    invoke_ms_sum: float = 0.0
    recent_totals: collections.deque = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=LATENCY_WINDOW)
    )
    started: float = dataclasses.field(default_factory=time.perf_counter)
    rss_first_mb: Optional[float] = None
    rss_warm_mb: Optional[float] = None
    kept: dict[str, Any] = dataclasses.field(default_factory=dict)  # --save, --collect, ... (edgetl.runtime.keep)

    def add(self, total_ms: float, invoke_ms: float) -> None:
        self.frames += 1
        self.total_ms_sum += total_ms
        self.invoke_ms_sum += invoke_ms
        self.recent_totals.append(total_ms)
        if self.frames == 1:
            self.rss_first_mb = rss_mb()
        elif self.frames == WARMUP_FRAMES:
            self.rss_warm_mb = rss_mb()

    def summary(self, source: Any, reason: str) -> dict[str, Any]:
        rss_last_mb = rss_mb()
        wall = time.perf_counter() - self.started
        frames = self.frames
        out: dict[str, Any] = {
            "frames": frames,
            "reason": reason,
            "wall_s": round(wall, 3),
            "fps": round(frames / wall, 2) if wall > 0 else 0.0,
        }
        if frames:
            out.update(
                mean_ms=round(self.total_ms_sum / frames, 3),
                p95_ms=round(float(np.percentile(self.recent_totals, 95)), 3),
                invoke_mean_ms=round(self.invoke_ms_sum / frames, 3),
            )
        if source is not None:
            out.update(
                dropped=source.stats.dropped,
                reconnects=source.stats.reconnects,
                skipped=len(source.stats.skipped),
                skipped_files=source.stats.skipped,
            )
        out.update(rss_first_mb=self.rss_first_mb, rss_warm_mb=self.rss_warm_mb, rss_last_mb=rss_last_mb)
        return out


def rss_mb() -> Optional[float]:
    """Resident memory of this process in MiB (Linux), None elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 2)
    except OSError:
        pass
    return None
