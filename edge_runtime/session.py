"""One ``edge-classify`` run, after its options are parsed: open the source, classify every frame,
write what was asked for (window, JSON lines, browser preview, kept frames, CSV) and finish with the
summary and the exit code (the codes are listed in :mod:`edgetl.runtime.__main__`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Any, Optional

from edgetl.runtime import cameras, guard, keep, overlay, sources
from edgetl.runtime.classifier import Classifier, ClassifierOptions
from edgetl.runtime.decode import IMAGE_EXTENSIONS
from edgetl.runtime.errors import ArgumentError
from edgetl.runtime.folder import FolderError
from edgetl.runtime.guard import OutputPathError
from edgetl.runtime.interpreter import ModelLoadError, RuntimeMissingError, backend
from edgetl.runtime.model_card import CardError, write_json_atomic
from edgetl.runtime.runstats import RunStats
from edgetl.runtime.serve import PreviewHub, PreviewServer, ServeError
from edgetl.runtime.sources import SourceError

EXIT_OK, EXIT_USAGE, EXIT_MODEL, EXIT_SOURCE, EXIT_IO, EXIT_INTERRUPTED = 0, 2, 3, 4, 5, 130


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One ``edge-classify`` run, as the options gave it (``images``: every path after ``--image``)."""

    model: str
    card: Optional[str] = None
    camera: Optional[str] = None
    video: Optional[str] = None
    images: tuple[str, ...] = ()
    rtsp: Optional[str] = None
    headless: bool = False
    threads: Optional[int] = None
    top_k: int = 3
    threshold: float = 0.0
    max_frames: int = 0
    fps_cap: float = 0.0
    realtime: bool = False
    loop: bool = False
    retries: int = 5
    summary_json: Optional[str] = None
    quiet: bool = False
    serve: Optional[tuple[str, int]] = None
    csv: Optional[str] = None
    confusion: Optional[str] = None
    keep: keep.KeepConfig = (
        keep.KeepConfig()
    )  # --save, --save-uncertain, --collect, --summary-every (edgetl.runtime.keep)

    @property
    def folder_mode(self) -> bool:
        """``--csv``/``--confusion``: rows to a CSV, no window and no JSON lines."""
        return self.csv is not None or self.confusion is not None


def open_source(config: RunConfig, folder: Any = None) -> Any:
    if folder is not None:
        if not folder.paths:
            raise sources.SourceError(
                f"no image files under {config.images[0]} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        return sources.ImageFiles([str(p) for p in folder.paths])
    if config.images:
        return sources.ImageFiles(config.images)
    if config.video:
        return sources.VideoFile(config.video, realtime=config.realtime, loop=config.loop)
    if config.rtsp:
        return cameras.Camera(config.rtsp, retries=config.retries)
    if config.camera == "picam":
        return cameras.PiCamera(retries=config.retries)
    try:
        index = int(config.camera or "")
    except ValueError:
        raise sources.SourceError(f"--camera {config.camera!r}: give a camera index (0, 1, ...) or 'picam'") from None
    return cameras.Camera(index, retries=config.retries)


@dataclasses.dataclass
class Outputs:
    """Where each classified frame goes: JSON lines, a window, the preview, a folder's CSV rows."""

    lines: Any = None
    display: Any = None
    hub: Any = None
    results: Any = None
    keep: Any = None

    def close(self) -> None:
        if self.keep is not None:
            self.keep.close()
        if self.display is not None:
            self.display.close()


def classify_stream(classifier: Any, source: Any, config: RunConfig, stats: RunStats, outputs: Outputs) -> str:
    """The loop: frame -> scores -> top-k -> JSON line, window, preview and/or CSV row. Returns why it ended."""
    from edgetl.runtime.classifier import top_k

    meter = overlay.FpsMeter()
    min_interval = 1.0 / config.fps_cap if config.fps_cap > 0 else 0.0
    next_due = time.perf_counter()
    source.prepare = classifier.prepare  # video/camera reader threads build tensors ahead of the loop
    if outputs.keep is not None:
        outputs.keep.final = stats.kept  # filled when it closes: what --save, --collect, ... kept
    for frame in source.frames():
        if min_interval and time.perf_counter() < next_due:
            continue  # over the cap: skip this frame rather than fall behind a live source
        next_due = max(next_due + min_interval, time.perf_counter()) if min_interval else 0.0
        scores = classifier.scores(frame.image, frame.color_order, frame.tensor)
        categories = top_k(scores, classifier.labels, config.top_k, config.threshold)
        t = classifier.last_timings
        if frame.tensor is not None:  # prepared on the reader thread: its cost still belongs to the frame
            t = dataclasses.replace(t, preprocess_ms=frame.prepare_ms)
        stats.add(t.total_ms, t.invoke_ms)
        fps = meter.tick()
        record = {
            "time": round(time.time(), 3),
            "frame": frame.index,
            "source": frame.source,
            "top_k": [c.to_dict() for c in categories],
            "preprocess_ms": round(t.preprocess_ms, 3),
            "invoke_ms": round(t.invoke_ms, 3),
            "total_ms": round(t.total_ms, 3),
            "prepared_ahead": frame.tensor is not None,
        }
        if outputs.results is not None:
            outputs.results.add(frame.source, scores, categories)
        if outputs.lines is not None:
            outputs.lines.write(json.dumps(record) + "\n")
            outputs.lines.flush()
        if outputs.hub is not None:
            outputs.hub.offer(frame.image, frame.color_order, categories, fps, record)
        if outputs.keep is not None:
            outputs.keep.add(frame, categories, fps)
        if outputs.display is not None:
            bgr = frame.image[:, :, ::-1] if frame.color_order == "RGB" and frame.image.ndim == 3 else frame.image
            if not outputs.display.show(overlay.draw(bgr, categories, fps)):
                return "quit"
        if config.max_frames and stats.frames >= config.max_frames:
            return "max-frames"
    return "end of input"


def run(config: RunConfig) -> int:
    """Load the model, open the source and the outputs, classify until the end; the exit code."""

    def log(message: str) -> None:
        if not config.quiet:
            print(f"[edge-classify] {message}", file=sys.stderr, flush=True)

    stats, source, outputs, server, code, reason = RunStats(), None, Outputs(), None, EXIT_OK, ""
    try:
        classifier = Classifier(
            ClassifierOptions(
                model_path=config.model,
                card_path=config.card,
                num_threads=config.threads,
                max_results=config.top_k,
                score_threshold=config.threshold,
            )
        )
        card = classifier.card
        log(
            f"{config.model}: {card.quantization}, {card.width}x{card.height} {card.input.dtype} input, {card.num_classes} labels, {backend()[0]}"
        )
        source, server = _open_io(classifier, config, outputs, log)
        stats = RunStats()
        reason = classify_stream(classifier, source, config, stats, outputs)
        if not stats.frames and source.stats.skipped:
            reason, code = "no readable image", EXIT_SOURCE
            print(
                f"edge-classify: error: none of the {len(source.stats.skipped)} image(s) could be read (listed below)",
                file=sys.stderr,
            )
    except (CardError, ModelLoadError, RuntimeMissingError) as exc:
        print(f"edge-classify: error: {exc}", file=sys.stderr)
        return EXIT_MODEL
    except SourceError as exc:
        reason, code = "source failed", EXIT_SOURCE
        print(f"edge-classify: error: {exc}", file=sys.stderr)
    except BrokenPipeError:  # stdout reader went away (| head): a normal end, not a crash
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        reason = "stdout closed"
    except (ServeError, FolderError, OutputPathError, ArgumentError) as exc:
        print(f"edge-classify: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        reason, code = "terminated" if isinstance(exc, keep.Terminated) else "interrupted", EXIT_INTERRUPTED
    finally:
        outputs.close()
        if server is not None:
            server.close()
        if source is not None:
            source.close()
    return _finish(stats, source, reason, code, config, outputs.results, log)


def _open_io(classifier: Any, config: RunConfig, outputs: Outputs, log: Any) -> tuple[Any, Any]:
    """The source, then the outputs ``config`` asks for (filled into ``outputs``); (source, preview server or None)."""
    from edgetl.runtime import folder, overlay

    guard.check_run_outputs(config)  # before the source is opened or anything written
    plan = folder.plan(config.images, classifier.labels) if config.folder_mode else None
    if plan is not None and config.confusion and not plan.labelled:
        raise folder.FolderError(
            f"--confusion needs class sub-folders named like the model's labels in {config.images[0]}"
        )
    source = open_source(config, plan)
    log(f"source: {source.name}" + (" in class sub-folders" if plan is not None and plan.labelled else ""))
    if plan is not None:
        outputs.results = folder.FolderResults(plan, classifier.labels, config.top_k)
    elif config.headless:
        outputs.lines = sys.stdout
    elif config.serve is None:  # the browser preview replaces the window
        try:
            outputs.display = overlay.Display()
        except overlay.DisplayError as exc:
            log(
                f"no window: {exc}; printing JSON lines on stdout instead (--headless does so without this note, "
                "--serve PORT shows the frames in a browser; a window needs OpenCV with a GUI, see docs/raspberry-pi.md)"
            )
            outputs.lines = sys.stdout
    if config.keep.active:
        outputs.keep = keep.Keep(config.keep, source, sys.stdout, log)
        if outputs.keep.journal is not None:
            outputs.lines = None  # a summary line per --summary-every seconds instead of one per frame
    server = None
    if config.serve is not None:
        server = PreviewServer(*config.serve, PreviewHub(), title=f"edge-classify: {os.path.basename(config.model)}")
        outputs.hub = server.hub
        log(
            f"preview: {server.url}"
            + (
                ""
                if server.host in ("127.0.0.1", "::1", "localhost")
                else " (no authentication: anyone who can reach this address sees the camera)"
            )
        )
    return source, server


def _finish(stats: RunStats, source: Any, reason: str, code: int, config: RunConfig, results: Any, log: Any) -> int:
    summary = stats.summary(source, reason)
    if stats.kept:
        summary["kept"] = stats.kept
    if source is not None:
        for skipped in source.stats.skipped:
            log(f"skipped: {skipped}")
    parts = [f"{summary['frames']} frames", f"{summary['fps']} FPS"]
    if summary["frames"]:
        parts += [f"mean {summary['mean_ms']} ms", f"p95 {summary['p95_ms']} ms"]
    if source is not None:
        parts += [
            f"{summary['dropped']} dropped",
            f"{summary['skipped']} skipped",
            f"{summary['reconnects']} reconnects",
        ]
    log(f"summary ({reason}): " + ", ".join(parts))
    if results is not None:
        code = _finish_folder(results, summary, code, config, log)
    if config.summary_json:
        write_json_atomic(config.summary_json, {**summary, "exit_code": code})
    return code


def _finish_folder(results: Any, summary: dict[str, Any], code: int, config: RunConfig, log: Any) -> int:
    """Folder mode: the CSV and the confusion PNG (only when the run was not cut short), accuracy in the summary."""
    from edgetl.runtime import folder

    accuracy = results.accuracy()
    if accuracy is not None:
        summary["accuracy"] = accuracy
        if accuracy["n"]:
            log(
                f"top-1 accuracy {100 * accuracy['top1']:.2f}% ({accuracy['correct']}/{accuracy['n']} images, 95% Wilson interval "
                f"{100 * accuracy['ci95'][0]:.2f}-{100 * accuracy['ci95'][1]:.2f}%)"
                + (
                    f"; {accuracy['unlabelled']} image(s) outside the class folders not counted"
                    if accuracy["unlabelled"]
                    else ""
                )
            )
            for line in folder.confusion_text(accuracy["labels"], accuracy["confusion"]):
                log(line)
    if code != EXIT_OK or not results.rows:
        log("CSV not written: " + ("no image classified" if not results.rows else summary["reason"]))
        return code
    if config.csv is not None:
        results.write_csv(config.csv)
        summary["csv"] = config.csv
        log(f"{len(results.rows)} rows written to {'stdout' if config.csv == '-' else config.csv}")
    if config.confusion is not None and accuracy is not None:
        title = f"top-1 {100 * (accuracy['top1'] or 0):.2f}% (n={accuracy['n']})"
        folder.draw_confusion(accuracy["labels"], accuracy["confusion"], title, config.confusion)
        summary["confusion_png"] = config.confusion
    return code
