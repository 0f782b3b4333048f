"""``edge-classify`` (also ``python -m edgetl.runtime``): classify a camera, video or images on the device.

Headless mode prints one JSON line per frame on stdout; logs and the closing
summary go to stderr. Exit codes:

    0    the input ended, --max-frames was reached, or q/Esc was pressed
    2    usage error (bad option, no display without --headless)
    3    the model cannot be used (missing or corrupt .tflite, card missing or
         not matching the model, no interpreter package)
    4    the source failed: cannot be opened, lost and not back after the
         reconnects, stalled, or no readable image at all
    130  interrupted (Ctrl-C); the summary is still printed
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import sys
import time
from typing import Any, Optional, Sequence

import numpy as np

EXIT_OK, EXIT_USAGE, EXIT_MODEL, EXIT_SOURCE, EXIT_INTERRUPTED = 0, 2, 3, 4, 130
LATENCY_WINDOW = 10_000  # frames behind the summary's p95
WARMUP_FRAMES = 100  # frames before the RSS reference: decoder queues and buffers are full by then


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-classify",
        description="Classify frames from a camera, video, stream or image files with an edgetl .tflite model "
                    "(card read from beside it). No TensorFlow needed.",
        epilog="Exit codes: 0 done, 2 usage, 3 model/card unusable, 4 source failed or lost, 130 interrupted.",
    )  # fmt: skip
    p.add_argument("--model", required=True, help="the .tflite file (its .json card beside it)")
    p.add_argument("--card", help="the model card, when it is not beside the model")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--camera", help="camera index (0 = /dev/video0) or 'picam' for the Pi camera via Picamera2")
    src.add_argument("--video", help="video file, processed frame by frame (see --realtime)")
    src.add_argument("--image", nargs="+", metavar="PATH", help="image files or folders of them")
    src.add_argument("--rtsp", metavar="URL", help="RTSP/HTTP stream URL")
    p.add_argument("--headless", action="store_true", help="no window: one JSON line per frame on stdout")
    p.add_argument("--threads", type=int, default=None, help="interpreter threads (default: all cores)")
    p.add_argument("--top-k", type=int, default=3, help="categories per frame (default 3)")
    p.add_argument("--threshold", type=float, default=0.0, help="leave out categories scoring below this")
    p.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0 = no limit)")
    p.add_argument("--fps-cap", type=float, default=0.0, help="classify at most this many frames per second")
    p.add_argument("--realtime", action="store_true", help="video: pace at its frame rate and drop frames like a camera")
    p.add_argument("--loop", action="store_true", help="video: start again at the end (soak tests)")
    p.add_argument("--retries", type=int, default=5, help="camera/stream reconnect attempts before exit 4 (default 5)")
    p.add_argument("--summary-json", metavar="FILE", help="also write the closing summary to FILE as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="no log lines on stderr (the summary too)")
    return p


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
    recent_totals: collections.deque = dataclasses.field(default_factory=lambda: collections.deque(maxlen=LATENCY_WINDOW))
    started: float = dataclasses.field(default_factory=time.perf_counter)
    rss_first_mb: Optional[float] = None
    rss_warm_mb: Optional[float] = None

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
        out: dict[str, Any] = {"frames": frames, "reason": reason, "wall_s": round(wall, 3),
                               "fps": round(frames / wall, 2) if wall > 0 else 0.0}  # fmt: skip
        if frames:
            out.update(mean_ms=round(self.total_ms_sum / frames, 3), p95_ms=round(float(np.percentile(self.recent_totals, 95)), 3),
                       invoke_mean_ms=round(self.invoke_ms_sum / frames, 3))  # fmt: skip
        if source is not None:
            out.update(dropped=source.stats.dropped, reconnects=source.stats.reconnects, skipped=len(source.stats.skipped),
                       skipped_files=source.stats.skipped)  # fmt: skip
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


def open_source(args: argparse.Namespace) -> Any:
    from edgetl.runtime import sources  # noqa: PLC0415

    if args.image:
        return sources.ImageFiles(args.image)
    if args.video:
        return sources.VideoFile(args.video, realtime=args.realtime, loop=args.loop)
    if args.rtsp:
        return sources.Camera(args.rtsp, retries=args.retries)
    if args.camera == "picam":
        return sources.PiCamera(retries=args.retries)
    try:
        index = int(args.camera)
    except ValueError:
        raise sources.SourceError(f"--camera {args.camera!r}: give a camera index (0, 1, ...) or 'picam'") from None
    return sources.Camera(index, retries=args.retries)


def classify_stream(classifier: Any, source: Any, args: argparse.Namespace, stats: RunStats, log: Any) -> str:
    """The loop: frame -> categories -> JSON line or window. Returns why it ended."""
    from edgetl.runtime import overlay  # noqa: PLC0415

    display = None if args.headless else overlay.Display()
    meter, out = overlay.FpsMeter(), sys.stdout
    min_interval = 1.0 / args.fps_cap if args.fps_cap > 0 else 0.0
    next_due = time.perf_counter()
    source.prepare = classifier.prepare  # video/camera reader threads build tensors ahead of the loop
    try:
        for frame in source.frames():
            if min_interval and time.perf_counter() < next_due:
                continue  # over the cap: skip this frame rather than fall behind a live source
            next_due = max(next_due + min_interval, time.perf_counter()) if min_interval else 0.0
            categories = classifier.classify(frame.image, frame.color_order, frame.tensor)
            t = classifier.last_timings
            if frame.tensor is not None:  # prepared on the reader thread: its cost still belongs to the frame
                t = dataclasses.replace(t, preprocess_ms=frame.prepare_ms)
            stats.add(t.total_ms, t.invoke_ms)
            if display is None:
                out.write(json.dumps({"time": round(time.time(), 3), "frame": frame.index, "source": frame.source,
                                      "top_k": [c.to_dict() for c in categories], "preprocess_ms": round(t.preprocess_ms, 3),
                                      "invoke_ms": round(t.invoke_ms, 3), "total_ms": round(t.total_ms, 3),
                                      "prepared_ahead": frame.tensor is not None}) + "\n")  # fmt: skip
                out.flush()
            else:
                bgr = frame.image[:, :, ::-1] if frame.color_order == "RGB" and frame.image.ndim == 3 else frame.image
                if not display.show(overlay.draw(bgr, categories, meter.tick())):
                    return "quit"
            if args.max_frames and stats.frames >= args.max_frames:
                return "max-frames"
        return "end of input"
    finally:
        if display is not None:
            display.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)

    def log(message: str) -> None:
        if not args.quiet:
            print(f"[edge-classify] {message}", file=sys.stderr, flush=True)

    from edgetl.runtime.sources import SourceError  # noqa: PLC0415
    from edgetl.runtime.classifier import Classifier, ClassifierOptions  # noqa: PLC0415
    from edgetl.runtime.interpreter import ModelLoadError, RuntimeMissingError, backend  # noqa: PLC0415
    from edgetl.runtime.model_card import CardError  # noqa: PLC0415
    from edgetl.runtime.overlay import DisplayError  # noqa: PLC0415

    stats, source, code, reason = RunStats(), None, EXIT_OK, ""
    try:
        classifier = Classifier(ClassifierOptions(model_path=args.model, card_path=args.card, num_threads=args.threads,
                                                  max_results=args.top_k, score_threshold=args.threshold))  # fmt: skip
        card = classifier.card
        log(f"{args.model}: {card.quantization}, {card.width}x{card.height} {card.input.dtype} input, {card.num_classes} labels, {backend()[0]}")
        source = open_source(args)
        log(f"source: {source.name}")
        stats = RunStats()
        reason = classify_stream(classifier, source, args, stats, log)
        if not stats.frames and source.stats.skipped:
            reason, code = "no readable image", EXIT_SOURCE
            print(f"edge-classify: error: none of the {len(source.stats.skipped)} image(s) could be read (listed below)", file=sys.stderr)
    except (CardError, ModelLoadError, RuntimeMissingError) as exc:
        print(f"edge-classify: error: {exc}", file=sys.stderr)
        return EXIT_MODEL
    except SourceError as exc:
        reason, code = "source failed", EXIT_SOURCE
        print(f"edge-classify: error: {exc}", file=sys.stderr)
    except BrokenPipeError:  # stdout reader went away (| head): a normal end, not a crash
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        reason = "stdout closed"
    except DisplayError as exc:
        print(f"edge-classify: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        reason, code = "interrupted", EXIT_INTERRUPTED
    finally:
        if source is not None:
            source.close()
    return _finish(stats, source, reason, code, args, log)


def _finish(stats: RunStats, source: Any, reason: str, code: int, args: argparse.Namespace, log: Any) -> int:
    summary = stats.summary(source, reason)
    if source is not None:
        for skipped in source.stats.skipped:
            log(f"skipped: {skipped}")
    parts = [f"{summary['frames']} frames", f"{summary['fps']} FPS"]
    if summary["frames"]:
        parts += [f"mean {summary['mean_ms']} ms", f"p95 {summary['p95_ms']} ms"]
    if source is not None:
        parts += [f"{summary['dropped']} dropped", f"{summary['skipped']} skipped", f"{summary['reconnects']} reconnects"]
    log(f"summary ({reason}): " + ", ".join(parts))
    if args.summary_json:
        from edgetl.runtime.model_card import write_json_atomic  # noqa: PLC0415

        write_json_atomic(args.summary_json, {**summary, "exit_code": code})
    return code


if __name__ == "__main__":
    sys.exit(main())
