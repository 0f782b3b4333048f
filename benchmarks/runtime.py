"""Benchmark section 4: the device pipeline, run as the Pi runs it (no TensorFlow anywhere here).

``edge-classify --video clip.avi --headless`` is timed end to end (its own summary
JSON and per-frame JSON lines) against bare ``Classifier.invoke`` in a fresh
process on the same model and thread count; cold start and a soak run's memory
growth come from subprocesses too. ``python -m benchmarks.runtime invoke MODEL
FRAME THREADS N`` is the bare-invoke worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from benchmarks.util import interleaved, median, ratio, run_seconds, summarize

ROOT = Path(__file__).resolve().parent.parent


FRAME_SIZE = (640, 480)
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def make_frames(image_dir: Path, count: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` 640x480 BGR frames, each a real Fashion-MNIST photo enlarged on a grey background."""
    import cv2

    paths = sorted(image_dir.glob("*/*.png"))
    order = np.random.default_rng(seed).permutation(len(paths))
    width, height = FRAME_SIZE
    frames = []
    for i in range(count):
        image = cv2.imread(str(paths[order[i % len(paths)]]), cv2.IMREAD_COLOR)
        side = height - 32
        canvas = np.full((height, width, 3), 114, dtype=np.uint8)
        top, left = (height - side) // 2, (width - side) // 2
        canvas[top : top + side, left : left + side] = cv2.resize(image, (side, side), interpolation=cv2.INTER_CUBIC)
        frames.append(canvas)
    return frames


def write_video(path: Path, frames: Sequence[np.ndarray], fps: float = 30.0) -> dict[str, Any]:
    """Write ``frames`` as an MJPG ``.avi`` with ``cv2.VideoWriter``; also save the first frame as PNG beside it."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, FRAME_SIZE)
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter cannot write MJPG to {path}")
    for frame in frames:
        writer.write(frame)
    writer.release()
    cv2.imwrite(str(path.with_suffix(".png")), frames[0])
    return {
        "path": str(path),
        "frames": len(frames),
        "size": f"{FRAME_SIZE[0]}x{FRAME_SIZE[1]}",
        "codec": "MJPG",
        "fps": fps,
        "bytes": path.stat().st_size,
        "frame_png": str(path.with_suffix(".png")),
    }


def edge_classify() -> list[str]:
    """The ``edge-classify`` console script of this Python's environment (``-m edgetl.runtime`` without it)."""
    script = Path(sys.executable).parent / "edge-classify"
    return [str(script)] if script.exists() else [sys.executable, "-m", "edgetl.runtime"]


def stage_shares(lines: Sequence[dict[str, Any]], wall_s: float) -> dict[str, float]:
    """Share of the loop's wall time spent per stage, from edge-classify's per-frame JSON lines.

    ``other`` is what no stage timer covers: waiting for the decoder thread, writing
    the JSON line, the loop itself. Frames whose tensor the reader thread prepared
    (``prepared_ahead``) cost the loop nothing for preprocessing; that time, spent in
    parallel with the loop, is ``preprocess_ahead`` and is not part of the 100%.
    """
    ahead = [bool(x.get("prepared_ahead")) for x in lines]
    pre = sum(float(x["preprocess_ms"]) for x, a in zip(lines, ahead) if not a)
    pre_ahead = sum(float(x["preprocess_ms"]) for x, a in zip(lines, ahead) if a)
    invoke = sum(float(x["invoke_ms"]) for x in lines)
    post = sum(float(x["total_ms"]) - float(x["preprocess_ms"]) - float(x["invoke_ms"]) for x in lines)
    wall_ms = max(wall_s * 1e3, 1e-9)
    shares = {"preprocess": pre / wall_ms, "invoke": invoke / wall_ms, "postprocess": post / wall_ms}
    shares["other"] = max(0.0, 1.0 - sum(shares.values()))
    shares["preprocess_ahead"] = pre_ahead / wall_ms
    return {k: round(v, 4) for k, v in shares.items()}


def pipeline_once(model: str, video: Path, threads: int, work: Path, extra: Sequence[str] = ()) -> dict[str, Any]:
    """One ``edge-classify --headless`` run; its summary JSON plus stage shares from its JSON lines."""
    tag = f"{Path(model).stem}-{threads}-{time.monotonic_ns()}"
    summary, lines_path = work / f"summary-{tag}.json", work / f"lines-{tag}.jsonl"
    command = edge_classify() + [
        "--model",
        model,
        "--video",
        str(video),
        "--headless",
        "--threads",
        str(threads),
        "--summary-json",
        str(summary),
        "-q",
        *extra,
    ]
    with open(lines_path, "w") as out:
        subprocess.run(command, check=True, stdout=out if not extra else subprocess.DEVNULL, env=ENV)
    result = json.loads(summary.read_text())
    if not extra:
        lines = [json.loads(line) for line in lines_path.read_text().splitlines() if line.strip()]
        result["shares"] = stage_shares(lines, result["wall_s"])
    result["command"] = " ".join(command)
    return result


def bare_invoke_once(model: str, frame: Path, threads: int, count: int) -> dict[str, Any]:
    """Bare ``Classifier.invoke`` FPS in a fresh process: the ceiling the pipeline is measured against."""
    command = [sys.executable, "-m", "benchmarks.runtime", "invoke", model, str(frame), str(threads), str(count)]
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=ENV, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def pipeline(params: Any, models: Sequence[tuple[str, str]], video: Path, frame: Path, work: Path) -> dict[str, Any]:
    """Pipeline FPS vs bare-invoke FPS per model and thread count, medians of interleaved repeats."""
    runs: dict[tuple[str, int], dict[str, list[Any]]] = {}
    for _ in range(params.pipeline_repeats):
        for name, path in models:
            for threads in params.threads:
                slot = runs.setdefault((name, threads), {"pipe": [], "bare": []})
                slot["pipe"].append(pipeline_once(path, video, threads, work))
                slot["bare"].append(bare_invoke_once(path, frame, threads, params.video_frames))
    rows = []
    for (name, threads), slot in runs.items():
        pipe_fps, bare_fps = median(r["fps"] for r in slot["pipe"]), median(r["fps"] for r in slot["bare"])
        shares = {k: median(r["shares"][k] for r in slot["pipe"]) for k in slot["pipe"][0]["shares"]}
        rows.append(
            {
                "model": name,
                "threads": threads,
                "pipeline_fps": pipe_fps,
                "bare_invoke_fps": bare_fps,
                "ratio": ratio(pipe_fps, bare_fps),
                "shares": shares,
                "frames": slot["pipe"][0]["frames"],
                "runs": len(slot["pipe"]),
            }
        )
    command = slot["pipe"][0]["command"] if runs else ""
    return {"rows": rows, "goal_ratio": 0.95, "example_command": command}


def cold_start(model: str, repeats: int) -> dict[str, Any]:
    """Median wall seconds of: an empty Python, ``import edgetl.runtime`` + a Classifier, ``import tensorflow``."""
    load = f"import edgetl.runtime as e; e.Classifier(e.ClassifierOptions(model_path={model!r}))"
    commands = {"empty Python": "pass", "edge_runtime + a Classifier": load, "TensorFlow import": "import tensorflow"}
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, code in commands.items():
            samples[name].append(run_seconds([sys.executable, "-c", code], env=ENV))
    rows = [
        {"what": name, "code": commands[name], "median_s": round(median(v), 3), "runs": len(v)}
        for name, v in samples.items()
    ]
    edge, tf = rows[1]["median_s"], rows[2]["median_s"]
    return {"rows": rows, "tf_over_edge": ratio(tf, edge), "model": model}


def soak(model: str, video: Path, threads: int, frames: int, work: Path) -> dict[str, Any]:
    """``edge-classify --loop --max-frames N``: resident memory at the first frame, after warm-up and at the last.

    Growth is judged from the warm-up reading (edge-classify's ``rss_warm_mb``, after
    its first 100 frames): by then the decode-ahead queue and its prepared tensors are
    full, which is buffering, not a leak (issue #7's goal: < 5% over 10,000 frames).
    """
    result = pipeline_once(model, video, threads, work, extra=("--loop", "--max-frames", str(frames)))
    first, warm, last = result.get("rss_first_mb"), result.get("rss_warm_mb"), result.get("rss_last_mb")
    growth = None if first is None or last is None else round(last - first, 2)
    warm_pct = None if warm is None or last is None else round(100 * (last - warm) / warm, 2)
    return {
        "frames": result["frames"],
        "fps": result["fps"],
        "rss_first_mb": first,
        "rss_warm_mb": warm,
        "rss_last_mb": last,
        "rss_growth_mb": growth,
        "rss_growth_after_warmup_pct": warm_pct,
        "threads": threads,
        "model": model,
        "command": result["command"],
    }


def invoke_worker(model: str, frame_path: str, threads: int, count: int) -> dict[str, Any]:
    """Bare invoke loop on one prepared tensor: FPS over ``count`` calls and per-call statistics."""
    import cv2
    from edgetl.runtime import Classifier, ClassifierOptions

    classifier = Classifier(ClassifierOptions(model_path=model, num_threads=threads))
    tensor = classifier.prepare(cv2.imread(frame_path, cv2.IMREAD_COLOR), "BGR")
    samples = interleaved({"invoke": lambda: classifier.invoke(tensor)}, count, 1, warmup=5)["invoke"]
    return {"fps": round(1e3 * len(samples) / sum(samples), 2), **summarize(samples)}


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "invoke":
    print(json.dumps(invoke_worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))))
