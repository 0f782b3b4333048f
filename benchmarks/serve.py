"""Benchmark section 6: does ``edge-classify --serve`` with one viewer slow classification?

Runs ``edge-classify --video clip.avi --loop --max-frames N --headless`` with and without
``--serve 127.0.0.1:PORT`` (one viewer reading the MJPEG stream as a browser does), on the
same model and video, interleaved A/B/A/B so a busy shared machine hurts both alike, and
compares the median FPS and the median CPU time per frame (user + system, all threads of
the edge-classify process, from ``wait4``; on a shared machine it moves far less than FPS,
and on a CPU-bound Pi it is what FPS follows). FPS comes from the per-frame JSON lines, over the frames after the
first second of each run (the viewer is connected by then), so start-up is left out of both.
Writes its section into ``benchmarks.json`` (key ``serve``) and re-renders ``BENCHMARKS.md``
(only that section changes; the full ``benchmarks/__main__.py`` run is not repeated)::

    .venv/bin/python -m benchmarks.serve [--model RUN/model_int8.tflite ...] [--runs 5]

On a machine shared with other jobs, run it at a higher priority (``sudo nice -n -10 …``;
the children inherit it) so the other jobs do not decide the FPS; the section records the
niceness it ran at.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional, Sequence

from benchmarks.runtime import ENV, edge_classify, make_frames, write_video
from benchmarks.util import load_average, median, ratio

ROOT = Path(__file__).resolve().parent.parent


SKIP_S = 1.0  # the first second of every run is left out (model load, the viewer connecting)


def viewer(url: str, stop: threading.Event, stats: dict[str, Any]) -> None:
    """Read the MJPEG stream until ``stop``: count JPEG parts and when the first arrived."""
    deadline = time.monotonic() + 30
    while not stop.is_set():
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                while not stop.is_set():
                    line = response.readline()
                    if not line:
                        return
                    if line.lower().startswith(b"content-length:"):
                        response.readline()
                        response.read(int(line.split(b":")[1]))
                        stats["parts"] += 1
                        stats.setdefault("first", time.time())
        except OSError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)  # not listening yet


def one_run(model: str, video: Path, frames: int, threads: int, serve: bool, work: Path) -> dict[str, Any]:
    """One edge-classify run; FPS over the frames after ``SKIP_S`` (from its JSON lines) and the viewer's count."""
    command = edge_classify() + [
        "--model",
        model,
        "--video",
        str(video),
        "--loop",
        "--max-frames",
        str(frames),
        "--threads",
        str(threads),
        "--headless",
        "-q",
    ]
    stop, seen, port = threading.Event(), {"parts": 0}, 0
    if serve:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        command += ["--serve", f"127.0.0.1:{port}"]
    lines_path = work / f"lines-{time.monotonic_ns()}.jsonl"
    thread = threading.Thread(target=viewer, args=(f"http://127.0.0.1:{port}/stream.mjpg", stop, seen), daemon=True)
    with open(lines_path, "w") as out:
        process = subprocess.Popen(command, stdout=out, env=ENV)
        if serve:
            thread.start()
        _, status, usage = os.wait4(process.pid, 0)  # the child's own CPU time: a busy shared machine barely moves it
    stop.set()
    times = [json.loads(line)["time"] for line in lines_path.read_text().splitlines()]
    window = [t for t in times if t >= times[0] + SKIP_S]
    fps = (len(window) - 1) / (window[-1] - window[0]) if len(window) > 1 and window[-1] > window[0] else float("nan")
    cpu_ms = (usage.ru_utime + usage.ru_stime) * 1e3 / max(len(times), 1)
    out = {
        "serve": serve,
        "fps": round(fps, 2),
        "cpu_ms_per_frame": round(cpu_ms, 3),
        "frames_timed": len(window),
        "exit_code": os.waitstatus_to_exitcode(status),
    }
    if serve:
        thread.join(timeout=15)
        viewer_s = max(times[-1] - seen.get("first", times[-1]), 1e-9)
        out.update(
            viewer_jpegs=seen["parts"],
            viewer_fps=round(seen["parts"] / viewer_s, 2),
            viewer_connected_after_s=round(seen.get("first", float("nan")) - times[0], 3),
        )
    lines_path.unlink()
    return out


def measure(model: str, runs: int, frames: int, threads: int, video: dict[str, Any], work: Path) -> dict[str, Any]:
    """``runs`` interleaved pairs (without, with a viewer) on one model; medians and their ratios."""
    samples: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for i in range(runs):
        for serve in (False, True) if i % 2 == 0 else (True, False):
            samples[serve].append(one_run(model, Path(video["path"]), frames, threads, serve, work))
            print(f"[bench_serve] run {i + 1}/{runs} serve={serve}: {samples[serve][-1]}", file=sys.stderr, flush=True)
    without, with_viewer = median(r["fps"] for r in samples[False]), median(r["fps"] for r in samples[True])
    cpu_without, cpu_with = (median(r["cpu_ms_per_frame"] for r in samples[mode]) for mode in (False, True))
    return {
        "model": str(Path(model).resolve().relative_to(ROOT)) if Path(model).resolve().is_relative_to(ROOT) else model,
        "video": {k: video[k] for k in ("frames", "size", "codec")},
        "frames_per_run": frames,
        "threads": threads,
        "runs": runs,
        "skip_s": SKIP_S,
        "fps_without": without,
        "fps_with_viewer": with_viewer,
        "ratio": ratio(with_viewer, without),
        "cpu_ms_per_frame_without": cpu_without,
        "cpu_ms_per_frame_with_viewer": cpu_with,
        "cpu_ratio": ratio(cpu_with, cpu_without),
        "viewer_fps": median(r["viewer_fps"] for r in samples[True]),
        "samples": samples[False] + samples[True],
        "loadavg_end": load_average(),
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/serve.py", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model", action="append", help="a .tflite with its card (repeat for several; default: the golden int8 model)"
    )
    p.add_argument("--runs", type=int, default=5, help="pairs of runs (default 5)")
    p.add_argument("--frames", type=int, default=1500, help="frames per run (default 1500)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="interpreter threads (default 1: XNNPACK's worker threads spin "
        "while waiting, which would put the machine's contention into the CPU figure)",
    )
    p.add_argument("--output", type=Path, default=ROOT, help="folder holding benchmarks.json and BENCHMARKS.md")
    args = p.parse_args(argv)
    from edgetl.data.fashion_mnist import write_fashion_mnist_folder
    from edgetl.runtime.model_card import write_bytes_atomic

    from benchmarks import report as bench_report

    models = args.model or [str(ROOT / "tests" / "golden" / "golden_int8.tflite")]
    with tempfile.TemporaryDirectory(prefix="edgetl-bench-serve-") as tmp:
        work = Path(tmp)
        write_fashion_mnist_folder(work / "photos", per_class=6, seed=0, part="test")
        video = write_video(work / "clip.avi", make_frames(work / "photos", 300))
        section = {"models": [measure(model, args.runs, args.frames, args.threads, video, work) for model in models]}
    path = args.output / "benchmarks.json"
    results = json.loads(path.read_text())
    results["serve"] = section
    write_bytes_atomic(path, (json.dumps(results, indent=1) + "\n").encode())
    write_bytes_atomic(args.output / "BENCHMARKS.md", bench_report.render(results).encode())
    print(bench_report.serve(section))
    return 0


if __name__ == "__main__":
    sys.exit(main())
