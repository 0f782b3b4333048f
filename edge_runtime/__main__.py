"""``edge-classify`` (also ``python -m edgetl.runtime``): classify a camera, video or images on the device.

A window shows the frames when one can open (OpenCV with a GUI and a desktop session); headless
mode prints one JSON line per frame on stdout instead, chosen by ``--headless`` or, with one note
on stderr, when no window can open. Logs and the closing summary go to stderr. ``--serve`` shows
the frames in a browser (``edgetl.runtime.serve``) in place of the window;
``--csv`` classifies a folder into a CSV, with accuracy when it has class sub-folders
(``edgetl.runtime.folder``). Exit codes:

    0    the input ended, --max-frames was reached, or q/Esc was pressed
    2    usage error (bad option, --serve address taken, class sub-folders not
         named like the labels)
    3    the model cannot be used (missing or corrupt .tflite, card missing or
         not matching the model, no interpreter package)
    4    the source failed: cannot be opened, lost and not back after the
         reconnects, stalled, or no readable image at all
    130  interrupted (Ctrl-C or SIGTERM); the summary is still printed
"""

from __future__ import annotations

import sys
from typing import Any, Optional, Sequence

import click
from edgetl.runtime import keep
from edgetl.runtime.benchmark import main as benchmark
from edgetl.runtime.serve import ServeError, parse_address
from edgetl.runtime.session import (
    EXIT_INTERRUPTED,
    EXIT_IO,
    RunConfig,
    run,
)

EXIT_CODES = (
    "Exit codes: 0 done, 2 usage, 3 model/card unusable, 4 source failed or lost, 5 output not writable, 130 interrupted."
    "\n\nMeasure models on this board: edge-classify benchmark MODEL.tflite... (see edge-classify benchmark --help)."
)
SERVE_HELP = (
    "browser preview at http://HOST:PORT/ (MJPEG stream with label/score/FPS, /latest.json) in place of the "
    "window (add --headless for JSON lines too); HOST defaults to "
    "127.0.0.1 (this machine only). 0.0.0.0 exposes it on the LAN with no authentication: anyone on the "
    "network can watch the camera"
)


def _parse_serve(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[tuple[str, int]]:

    try:
        return None if value is None else parse_address(value)
    except ServeError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command(name="edge-classify", epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--model", required=True, help="the .tflite file (its .json card beside it; without one, its own TFLite metadata)"
)
@click.option("--card", help="the model card, when it is not beside the model")
@click.option("--camera", help="camera index (0 = /dev/video0) or 'picam' for the Pi camera via Picamera2")
@click.option("--video", help="video file, processed frame by frame (see --realtime)")
@click.option(
    "--image", "image", metavar="PATH", help="image file or folder; more paths may follow (--image photos/ a.jpg)"
)
@click.option("--rtsp", metavar="URL", help="RTSP/HTTP stream URL")
@click.argument("more_images", nargs=-1, metavar="[PATH]...")
@click.option(
    "--headless",
    is_flag=True,
    help="no window: one JSON line per frame on stdout (also what happens, with a note, when no window can open: "
    "headless OpenCV or no desktop session); with --serve, JSON lines beside the browser preview",
)
@click.option("--threads", type=click.IntRange(1, 64), default=None, help="interpreter threads (default: all cores)")
@click.option("--top-k", type=int, default=3, show_default=True, help="categories per frame")
@click.option("--threshold", type=float, default=0.0, help="leave out categories scoring below this")
@click.option("--max-frames", type=int, default=0, help="stop after this many frames (0 = no limit)")
@click.option("--fps-cap", type=float, default=0.0, help="classify at most this many frames per second")
@click.option("--realtime", is_flag=True, help="video: pace at its frame rate and drop frames like a camera")
@click.option("--loop", is_flag=True, help="video: start again at the end (soak tests, a demo preview)")
@click.option(
    "--retries", type=int, default=5, show_default=True, help="camera/stream reconnect attempts before exit 4"
)
@click.option("--serve", metavar="[HOST:]PORT", callback=_parse_serve, help=SERVE_HELP)
@click.option(
    "--csv",
    "csv_path",
    metavar="FILE",
    help="--image DIR: one row per image (path,label,score,label_2,score_2,...) "
    "to FILE ('-' = stdout) instead of JSON lines; class sub-folders named like the labels add accuracy",
)
@click.option("--confusion", metavar="PNG", help="--image DIR with class sub-folders: draw the confusion matrix to PNG")
@click.option("--summary-json", metavar="FILE", help="also write the closing summary to FILE as JSON")
@click.option("-q", "--quiet", is_flag=True, help="nothing on stderr (no log lines, no summary) unless an error")
@keep.options
@click.version_option(package_name="edgetl", prog_name="edge-classify", message="%(prog)s %(version)s")
def cli(image: Optional[str], more_images: tuple[str, ...], csv_path: Optional[str], **options: Any) -> int:
    """Classify frames from a camera, video, stream or image files with an edgetl .tflite model
    (card read from beside it, else from the model's TFLite metadata). No TensorFlow needed."""
    sources = [
        name
        for name, given in (
            ("--camera", options["camera"]),
            ("--video", options["video"]),
            ("--image", image),
            ("--rtsp", options["rtsp"]),
        )
        if given is not None
    ]
    if len(sources) != 1:
        raise click.UsageError(
            "give exactly one source: --camera, --video, --image or --rtsp"
            + (f" (got {' and '.join(sources)})" if sources else "")
        )
    if more_images and image is None:
        raise click.UsageError(f"unexpected argument {more_images[0]!r}: only --image takes several paths")
    if (csv_path is not None or options["confusion"] is not None) and image is None:
        raise click.UsageError("--csv and --confusion classify a folder: add --image DIR")
    kept = keep.from_options(options)
    config = RunConfig(images=(image, *more_images) if image is not None else (), csv=csv_path, keep=kept, **options)
    keep.end_on_sigterm()  # SIGTERM ends the run like Ctrl-C: kept files closed, summary printed
    return run(config)


def main(argv: Optional[Sequence[str]] = None, prog_name: str = "edge-classify") -> int:
    """The console script: parse ``argv`` (default ``sys.argv[1:]``), run, return the exit code.

    ``prog_name`` is the name usage and errors show (``edgetl run`` when called from there).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["benchmark"]:  # edge-classify benchmark MODEL... (edgetl.runtime.benchmark)
        return benchmark(argv[1:])
    try:
        return cli.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as exc:  # --help, --version
        return exc.exit_code
    except click.ClickException as exc:  # usage errors: Click's message, exit 2
        exc.show()
        return exc.exit_code
    except click.Abort:
        return EXIT_INTERRUPTED
    except OSError as exc:  # an output (--summary-json, --csv, a full disk) that cannot be written: one line
        where = f"{exc.filename2 or exc.filename}: " if exc.filename else ""
        print(f"edge-classify: error: {where}{exc.strerror or exc}; pass a writable file path", file=sys.stderr)
        return EXIT_IO


if __name__ == "__main__":
    sys.exit(main())
