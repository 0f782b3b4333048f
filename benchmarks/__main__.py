"""Benchmark edgetl on this machine in one run; write ``BENCHMARKS.md`` and ``benchmarks.json``.

    python -m benchmarks            # full: what the committed BENCHMARKS.md shows (~20 min, 2 cores)
    python -m benchmarks --quick    # ~4 min, no QAT (tests/test_qat.py covers it); CI runs it to prove the script works

Sections: (1) training speed, cached vs uncached head phase and a full fine-tune;
(2) accuracy and size of float/fp32/fp16/dynamic/int8/QAT-int8 on real held-out
Fashion-MNIST photos; (3) per-image latency through ``edge_runtime`` vs Keras, with
MACs and GMAC/s; (4) ``edge-classify`` pipeline FPS vs bare invoke, cold start and a
soak run's memory growth; (5) conversion and calibration time. Medians over
repeats, ratios within the run, nothing asserted. Helpers live in ``bench_*.py``
beside this file.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from benchmarks.util import library_versions, load_average, machine_info, preserved_sections

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Params:
    """How much work each section does; ``full()`` and ``quick()`` are the two presets.

    Attributes:
        train_per_class / test_per_class: Fashion-MNIST images per class from its train
            part (split 80/10/10 by ``edgetl train``) and its test part (held out).
        latency_models: ``(alpha, image size, weights)`` of the latency models.
        repeats / rounds: timed calls per latency cell, in interleaved rounds.
        video_frames / pipeline_repeats: clip length and edge-classify runs per cell.
    """

    mode: str
    train_per_class: int
    test_per_class: int
    epochs: int
    fine_tune_epochs: int
    qat_epochs: int
    calib_size: int
    repeats: int
    rounds: int
    video_frames: int
    pipeline_repeats: int
    soak_frames: int
    cold_repeats: int
    image_size: int = 96
    latency_models: tuple[tuple[float, int, str], ...] = ((0.35, 96, "none"), (1.0, 224, "imagenet"))
    latency_per_class: int = 20
    latency_calib_size: int = 100
    threads: tuple[int, ...] = (1, 2)

    @classmethod
    def full(cls) -> "Params":
        return cls(
            "full",
            train_per_class=200,
            test_per_class=300,
            epochs=10,
            fine_tune_epochs=1,
            qat_epochs=2,
            calib_size=300,
            repeats=200,
            rounds=5,
            video_frames=600,
            pipeline_repeats=3,
            soak_frames=10_000,
            cold_repeats=5,
        )

    @classmethod
    def quick(cls) -> "Params":
        return cls(
            "quick",
            train_per_class=30,
            test_per_class=20,
            epochs=3,
            fine_tune_epochs=1,
            qat_epochs=0,
            calib_size=100,
            repeats=20,
            rounds=2,
            video_frames=60,
            pipeline_repeats=1,
            soak_frames=500,
            cold_repeats=2,
            latency_models=((0.35, 96, "none"),),
        )


_STARTED = time.monotonic()


def say(message: str) -> None:
    """A progress line on stderr, with the minutes since the benchmark started."""
    print(f"[bench {(time.monotonic() - _STARTED) / 60:4.1f} min] {message}", file=sys.stderr, flush=True)


def clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become None, paths and numpy scalars plain values."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run_sections(params: Params, work: Path, results: dict[str, Any]) -> None:
    """Run every section into ``results``, saving it to ``work/results.json`` after each."""
    from benchmarks import latency as bench_latency
    from benchmarks import runtime as bench_runtime
    from benchmarks import train as bench_train

    save = lambda: (work / "results.json").write_text(json.dumps(clean(results), indent=1))  # noqa: E731
    say(f"data: Fashion-MNIST {params.train_per_class}/class (train part), {params.test_per_class}/class (test part)")
    data = bench_train.write_data(work, params.train_per_class, params.test_per_class)
    results["data"] = {
        "train_per_class": data.train_per_class,
        "test_per_class": data.test_per_class,
        "source": "Debian dataset-fashion-mnist",
    }
    say("1/5 training speed")
    results["training"] = bench_train.training_speed(params, data, work)
    save()
    run = Path(results["training"]["model_run"])
    say("2/5 QAT, calibration, conversion, parity")
    results["variants"] = bench_train.prepare_variants(params, run)
    results["accuracy"] = bench_train.accuracy(run, data, threads=max(params.threads))
    save()
    say("3/5 latency models and latency")
    models = bench_latency.build_models(params, data.train, work)
    results["latency_models"] = [{k: m[k] for k in ("name", "alpha", "size", "weights", "macs")} for m in models]
    video = bench_runtime.write_video(work / "clip.avi", bench_runtime.make_frames(data.test, params.video_frames))
    results["latency"] = bench_latency.measure(params, models, Path(video["frame_png"]), work)
    save()
    say("4/5 runtime pipeline, cold start, soak")
    big = models[-1]
    pipeline_models = [
        (f"{big['name']} int8", big["tflite"]["int8"]),
        (f"1.0/{params.image_size} int8 (section 2 model)", str(run / "model_int8.tflite")),
    ]
    results["runtime"] = {
        "video": video,
        "pipeline": bench_runtime.pipeline(
            params, pipeline_models, Path(video["path"]), Path(video["frame_png"]), work
        ),
        "cold_start": bench_runtime.cold_start(big["tflite"]["int8"], params.cold_repeats),
        "soak": bench_runtime.soak(
            pipeline_models[1][1], Path(video["path"]), max(params.threads), params.soak_frames, work
        ),
    }
    save()
    say("5/5 conversion")
    rows = bench_train.conversion_rows(f"1.0/{params.image_size} (section 2, with QAT)", results["variants"]["convert"])
    for model in models:
        rows += bench_train.conversion_rows(model["name"], model["convert"])
    results["conversion"] = rows
    save()


def _portable(text: str, work: Path) -> str:
    """Paths in the report relative to the checkout, and ``$WORK`` for the scratch folder."""
    return text.replace(str(work.resolve()), "$WORK").replace(str(work), "$WORK").replace(str(ROOT) + "/", "")


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/__main__.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small subsets and few repeats (a few minutes; CI)")
    p.add_argument(
        "--output",
        "--out",
        type=Path,
        help="folder for BENCHMARKS.md and benchmarks.json "
        "(default: the repository root; runs/bench-quick with --quick)",
    )
    p.add_argument("--work", type=Path, help="scratch folder for data, runs and models (default: a temporary one)")
    p.add_argument("--keep-work", action="store_true", help="keep the scratch folder")
    p.add_argument(
        "-q", "--quiet", action="store_true", help="silence the toolchain's stage lines and Keras' epoch lines"
    )
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    params = Params.quick() if args.quick else Params.full()
    output = args.output or (ROOT / "runs" / "bench-quick" if args.quick else ROOT)
    work = args.work or Path(tempfile.mkdtemp(prefix="edgetl-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    from edgetl import log

    log.configure()  # the stages' log lines on stderr, as the edgetl command shows them
    log.QUIET = args.quiet
    started, date = time.monotonic(), datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results: dict[str, Any] = {"params": dataclasses.asdict(params)}
    meta = {
        "mode": params.mode,
        "date": date,
        "machine": machine_info(),
        "versions": library_versions(),
        "command": shlex.join(["python", "benchmarks/__main__.py", *(sys.argv[1:] if argv is None else argv)]),
    }
    say(f"{params.mode} mode; scratch folder {work}")
    try:
        run_sections(params, work, results)
    except BaseException:
        say(f"failed; results so far are in {work / 'results.json'} (scratch folder kept)")
        raise
    results["meta"] = {**meta, "wall_s": round(time.monotonic() - started, 1), "loadavg_end": load_average()}
    from benchmarks import report as bench_report

    output.mkdir(parents=True, exist_ok=True)
    results = json.loads(_portable(json.dumps(clean(results)), work))
    from edgetl.runtime.model_card import write_bytes_atomic  # never half a report

    old_json = json.loads((output / "benchmarks.json").read_text()) if (output / "benchmarks.json").exists() else {}
    if "scale" in old_json:  # benchmarks/scale.py's section is measured separately: keep it
        results["scale"] = old_json["scale"]
    old_md = (output / "BENCHMARKS.md").read_text() if (output / "BENCHMARKS.md").exists() else ""
    kept = preserved_sections(old_md, results, old_json)  # sections of benchmarks/gate.py and the like
    scale = ""
    if "<!-- scale:begin -->" in old_md:
        end = old_md.find("<!-- scale:end -->")
        scale = old_md[old_md.find("<!-- scale:begin -->") : end + len("<!-- scale:end -->") if end >= 0 else None]
    tail = "\n\n".join(part for part in (kept, scale) if part)
    write_bytes_atomic(output / "benchmarks.json", (json.dumps(results, indent=1) + "\n").encode())
    write_bytes_atomic(
        output / "BENCHMARKS.md",
        (bench_report.render(results).rstrip("\n") + ("\n\n" + tail + "\n" if tail else "\n")).encode(),
    )
    if not args.keep_work and args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    say(f"done in {results['meta']['wall_s'] / 60:.1f} min")
    print(output / "BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
