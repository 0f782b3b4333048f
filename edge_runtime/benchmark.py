"""``edge-classify benchmark``: how fast one or more .tflite models run on *this* board.

For every model and thread count it measures two latencies after warm-up runs:

- **invoke**: ``set_tensor`` + ``invoke()`` on a prepared input tensor (the model alone);
- **end to end**: decode a JPEG frame + preprocess (resize, colour order, quantize) +
  invoke + postprocess (dequantize, top-k): what one camera frame costs the loop.

The frame is a real image (``--image``) or a seeded synthetic 640x480 scene; either is
held as JPEG bytes and decoded on every run, so decoding is part of end to end. Runs are
interleaved across models in rounds, so drift on a busy machine hits every model alike
and ratios between models are fair. Each cell stops at ``runs`` runs or ``seconds``
seconds, whichever comes first: the total time is bounded. Peak resident memory (RSS) is
measured per model on its own (the kernel's high-water mark, reset before it loads),
then the board, runtime and versions are reported with the figures, as a table or JSON
to paste into an issue. Under emulation (qemu) the figures only prove that it runs.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import click
import numpy as np
from edgetl.runtime.board import board_info, peak_rss_mb, peak_rss_reset
from edgetl.runtime.classifier import Classifier, ClassifierOptions
from edgetl.runtime.interpreter import ModelLoadError, RuntimeMissingError
from edgetl.runtime.model_card import CardError
from edgetl.runtime.runstats import rss_mb

SYNTHETIC_SIZE = (480, 640)  # height, width: a VGA camera frame
ROUNDS = 5  # interleaved rounds per thread count
MAX_RUNS, MAX_SECONDS, MAX_WARMUP = 10_000, 600.0, 1_000


class ImageError(ValueError):
    """The ``--image`` file cannot be decoded."""


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
    """One benchmark: which models, at which thread counts, on which frame, for how long.

    Attributes:
        models: .tflite files (each with its card beside it, or TFLite metadata).
        threads: interpreter thread counts, one cell per model and count.
        image: a real image file for the end-to-end runs; None = a seeded synthetic frame.
        warmup: runs per cell before timing starts (not reported).
        runs: timed runs per cell at most.
        seconds: timed seconds per cell at most.
        seed: the synthetic frame's seed.
    """

    models: tuple[str, ...]
    threads: tuple[int, ...] = (1, 2, 4)
    image: Optional[str] = None
    warmup: int = 10
    runs: int = 200
    seconds: float = 10.0
    seed: int = 0


def synthetic_frame(seed: int = 0, size: tuple[int, int] = SYNTHETIC_SIZE) -> np.ndarray:
    """A seeded BGR scene (gradients, shapes, sensor-like noise): a camera frame that compresses like one."""
    import cv2

    rng = np.random.default_rng(seed)
    height, width = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frame = np.stack([x / width * 200, y / height * 200, (x + y) / (width + height) * 255], axis=2)
    for _ in range(6):
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.circle(frame, center, int(rng.integers(20, height // 3)), color, -1)
    frame += rng.normal(0, 4, frame.shape)
    return np.clip(frame, 0, 255).astype(np.uint8)


def frame_bytes(config: BenchmarkConfig) -> tuple[bytes, str]:
    """The encoded frame every end-to-end run decodes, and what it is (for the report).

    Raises:
        ImageError: ``config.image`` cannot be decoded.
    """
    import cv2

    if config.image is None:
        ok, data = cv2.imencode(".jpg", synthetic_frame(config.seed), [cv2.IMWRITE_JPEG_QUALITY, 90])
        return bytes(data), f"synthetic {SYNTHETIC_SIZE[1]}x{SYNTHETIC_SIZE[0]} JPEG, seed {config.seed}"
    data = Path(config.image).read_bytes()
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError(f"{config.image}: OpenCV cannot decode it as an image; pass a JPEG or PNG file")
    return data, f"{Path(config.image).name} ({image.shape[1]}x{image.shape[0]})"


class _Cell:
    """One model at one thread count: its classifier and the latencies measured so far."""

    def __init__(self, model: str, threads: int) -> None:

        self.model, self.threads = model, threads
        self.classifier = Classifier(ClassifierOptions(model_path=model, num_threads=threads, max_results=3))
        self.invoke_ms: list[float] = []
        self.total_ms: list[float] = []
        self.spent = 0.0

    def run(self, data: bytes, record: bool = True) -> None:
        """One end-to-end run: decode the JPEG, classify (preprocess, invoke, top-k)."""
        import cv2

        started = time.perf_counter()
        frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        self.classifier.classify(frame)
        elapsed = time.perf_counter() - started
        if record:
            self.total_ms.append(elapsed * 1e3)
            self.invoke_ms.append(self.classifier.last_timings.invoke_ms)
            self.spent += elapsed

    def done(self, config: BenchmarkConfig) -> bool:
        return len(self.total_ms) >= config.runs or self.spent >= config.seconds


def _memory(models: Sequence[str], threads: int, data: bytes, warmup: int) -> dict[str, dict[str, Any]]:
    """Each model alone: peak RSS (high-water mark reset before it loads) over loading and warm-up runs."""
    out = {}
    for model in models:
        gc.collect()
        before, scoped = rss_mb(), peak_rss_reset()
        cell = _Cell(model, threads)
        for _ in range(max(warmup, 1)):
            cell.run(data, record=False)
        peak = peak_rss_mb()
        out[model] = {
            "peak_rss_mb": peak,
            "peak_rss_scope": "this model" if scoped else "process",
            "added_rss_mb": round(peak - before, 1) if scoped and peak is not None and before is not None else None,
        }
        del cell
    return out


def _stats(values: list[float]) -> dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    return {"p50_ms": round(float(np.percentile(arr, 50)), 3), "p90_ms": round(float(np.percentile(arr, 90)), 3)}


def _time_cells(cells: list[_Cell], data: bytes, config: BenchmarkConfig) -> None:
    """Warm every cell up, then time them in interleaved rounds until each has its runs or its seconds."""
    for cell in cells:
        for _ in range(config.warmup):
            cell.run(data, record=False)
    per_round = max(1, -(-config.runs // ROUNDS))
    while not all(cell.done(config) for cell in cells):
        for cell in cells:
            target = min(config.runs, len(cell.total_ms) + per_round)
            while len(cell.total_ms) < target and cell.spent < config.seconds:
                cell.run(data)


def run_benchmark(config: BenchmarkConfig, log: Any = None) -> dict[str, Any]:
    """Measure every model at every thread count; the report (board, settings, one row per cell).

    Raises:
        CardError, ModelLoadError, RuntimeMissingError: a model cannot be loaded.
        ImageError: the image cannot be decoded.
    """
    log = log or (lambda message: None)
    data, frame = frame_bytes(config)
    board = board_info()  # imports the runtime, so the first model's memory is its own
    memory = _memory(config.models, max(config.threads), data, config.warmup)
    rows = []
    for threads in config.threads:
        log(
            f"{threads} thread(s): {len(config.models)} model(s), up to {config.runs} runs or {config.seconds:g} s each"
        )
        cells = [_Cell(model, threads) for model in config.models]
        started = time.perf_counter()
        _time_cells(cells, data, config)
        for cell in cells:
            card = cell.classifier.card
            invoke, total = _stats(cell.invoke_ms), _stats(cell.total_ms)
            rows.append(
                {
                    "model": Path(cell.model).name,
                    "quantization": card.quantization,
                    "input": f"{card.width}x{card.height} {card.input.dtype}",
                    "size_kib": round(Path(cell.model).stat().st_size / 1024, 1),
                    "threads": threads,
                    "runs": len(cell.total_ms),
                    "invoke_p50_ms": invoke["p50_ms"],
                    "invoke_p90_ms": invoke["p90_ms"],
                    "e2e_p50_ms": total["p50_ms"],
                    "e2e_p90_ms": total["p90_ms"],
                    "fps": round(1e3 * len(cell.total_ms) / sum(cell.total_ms), 1),
                    **memory[cell.model],
                }
            )
        log(f"{threads} thread(s) done in {time.perf_counter() - started:.1f} s")
        del cells
    return {
        "board": board,
        "settings": {
            "frame": frame,
            "warmup_runs": config.warmup,
            "max_runs": config.runs,
            "max_seconds_per_cell": config.seconds,
            "rounds": ROUNDS,
            "fps": "1000 / mean end-to-end ms (one frame at a time)",
            "end_to_end": "JPEG decode + preprocess + invoke + dequantize + top-k",
            "peak_rss": f"per model, alone, at {max(config.threads)} thread(s) (loading + warm-up)",
        },
        "rows": rows,
        "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }


COLUMNS = (
    ("model", "model"),
    ("quantization", "quant"),
    ("threads", "threads"),
    ("runs", "runs"),
    ("invoke_p50_ms", "invoke p50 ms"),
    ("invoke_p90_ms", "invoke p90 ms"),
    ("e2e_p50_ms", "e2e p50 ms"),
    ("e2e_p90_ms", "e2e p90 ms"),
    ("fps", "FPS"),
    ("peak_rss_mb", "peak RSS MiB"),
)


def markdown(report: dict[str, Any]) -> str:
    """The report as text a person reads and pastes: board lines, then a Markdown table."""
    board = report["board"]
    lines = [
        f"board: {board['board']} ({board['machine']}, {board['cores']} cores, {board['cpu']})",
        f"os: {board['os']}, kernel {board['kernel']}; {board['python']}; {board['runtime']}, "
        f"numpy {board['numpy']}, opencv {board['opencv']}, edgetl {board['edgetl']}",
        f"frame: {report['settings']['frame']}; {report['settings']['warmup_runs']} warm-up runs excluded; "
        f"FPS = {report['settings']['fps']}; {report['time']}",
    ]
    if "emulated" in board:
        lines.insert(0, f"EMULATED: {board['emulated']}")
    header = [title for _, title in COLUMNS]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in report["rows"]:
        lines.append("| " + " | ".join(str(row[key]) for key, _ in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def _parse_threads(ctx: Any, param: Any, value: str) -> tuple[int, ...]:

    try:
        counts = tuple(dict.fromkeys(int(part) for part in value.split(",") if part.strip()))
    except ValueError:
        raise click.BadParameter(f"{value!r}: give thread counts separated by commas, e.g. 1,2,4") from None
    if not counts or not all(1 <= n <= 64 for n in counts):
        raise click.BadParameter(f"{value!r}: each thread count must be 1-64")
    return counts


def command() -> Any:
    """The ``edge-classify benchmark`` Click command (built on demand, so ``edge-classify`` stays one command)."""

    @click.command(
        name="edge-classify benchmark",
        epilog="Exit codes: 0 done, 2 usage, 3 model/card unusable, 4 image unreadable, 130 interrupted.",
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    @click.argument("models", nargs=-1, required=True, metavar="MODEL.tflite...")
    @click.option("--threads", default="1,2,4", show_default=True, callback=_parse_threads, help="thread counts")
    @click.option(
        "--image", type=click.Path(exists=True, dir_okay=False), help="a real image to decode and classify on every run"
    )
    @click.option(
        "--warmup", type=click.IntRange(0, MAX_WARMUP), default=10, show_default=True, help="untimed runs first"
    )
    @click.option(
        "--runs", type=click.IntRange(1, MAX_RUNS), default=200, show_default=True, help="timed runs per cell"
    )
    @click.option(
        "--seconds",
        type=click.FloatRange(0.1, MAX_SECONDS),
        default=10.0,
        show_default=True,
        help="timed seconds per cell at most (whichever of --runs and --seconds comes first)",
    )
    @click.option("--json", "as_json", is_flag=True, help="the report as JSON on stdout (to paste into an issue)")
    @click.option("-q", "--quiet", is_flag=True, help="no progress lines on stderr")
    def benchmark(models: tuple[str, ...], as_json: bool, quiet: bool, **options: Any) -> None:
        """Measure invoke and end-to-end latency (p50/p90), FPS and peak memory of one or more
        .tflite models on this board, per thread count; prints a table (or --json) with the board,
        OS, Python and runtime versions. Example: edge-classify benchmark model_int8.tflite model_fp32.tflite --threads 1,2"""

        def log(message: str) -> None:
            if not quiet:
                print(f"[edge-classify] benchmark: {message}", file=sys.stderr, flush=True)

        report = run_benchmark(BenchmarkConfig(models=models, **options), log)
        print(json.dumps(report, indent=1) if as_json else markdown(report), end="\n" if as_json else "")

    return benchmark


def main(argv: Sequence[str]) -> int:
    """``edge-classify benchmark ARGS``: the exit code (errors as one ``edge-classify: error:`` line)."""

    try:
        return command().main(args=list(argv), prog_name="edge-classify benchmark", standalone_mode=False) or 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except (click.Abort, KeyboardInterrupt):
        return 130
    except (CardError, ModelLoadError, RuntimeMissingError) as exc:
        print(f"edge-classify: error: {exc}", file=sys.stderr)
        return 3
    except ImageError as exc:
        print(f"edge-classify: error: {exc}", file=sys.stderr)
        return 4
