#!/usr/bin/env python3
"""``edge-classify benchmark`` on this machine: int8 vs fp32 MobileNetV2 1.0/224, 1-2 threads (issue #30).

    .venv/bin/python -m benchmarks.device                    # builds the models once (~5 min), then ~1 min
    .venv/bin/python -m benchmarks.device --models A.tflite B.tflite

Without ``--models`` it makes a MobileNetV2 1.0/224 classifier the quick way (300 Fashion-MNIST
photos at 224 px, 3 head epochs on the offline ImageNet weights, one cached view, no fine-tuning;
latency does not depend on accuracy) and converts it to fp32 and int8 (``WORK/run224``, reused by later runs). It then runs
``edge-classify benchmark`` ``--repeats`` times as separate processes, each measuring both models
interleaved, and writes the ``device`` section of BENCHMARKS.md and benchmarks.json: the first
run's table as the command prints it, and the int8/fp32 ratios of every run. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.util import load_average, write_section

REPO = Path(__file__).resolve().parents[1]

BIN = Path(sys.executable).parent
MADE = (
    " — MobileNetV2 1.0/224 (10 classes, uint8 input for int8), made by this script: `edgetl train` 3 head epochs on 300 "
    "Fashion-MNIST photos at 224 px with the offline ImageNet weights, then `edgetl convert --quant fp32,int8` "
    "(latency does not depend on what it learned)"
)


def build_models(work: Path) -> list[Path]:
    """fp32 and int8 MobileNetV2 1.0/224 in ``work/run224`` (made once)."""
    run = work / "run224"
    models = [run / "model_int8.tflite", run / "model_fp32.tflite"]
    if all(m.exists() for m in models):
        return models
    data = work / "fm30"
    steps = [
        [] if data.exists() else ["data", "fashion-mnist", str(data), "--per-class", "30"],
        [
            "train",
            str(data),
            "--output",
            str(run),
            "--image-size",
            "224",
            "--epochs",
            "3",
            "--fine-tune-epochs",
            "0",
            "--cache-views",
            "1",
        ],
        ["convert", str(run), "--quant", "fp32,int8", "--no-parity", "--calib-size", "100"],
    ]
    for step in filter(None, steps):
        print("$ edgetl " + " ".join(step), file=sys.stderr, flush=True)
        subprocess.run([str(BIN / "edgetl"), *step], check=True)
    return models


def benchmark(models: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    command = [str(BIN / "edge-classify"), "benchmark", *map(str, models), "--threads", args.threads]
    command += ["--runs", str(args.runs), "--seconds", str(args.seconds), "--json", "-q"]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def ratios(report: dict[str, Any]) -> list[dict[str, Any]]:
    """int8 / fp32 per thread count, from one report (both models measured in the same run)."""
    out = []
    for threads in sorted({r["threads"] for r in report["rows"]}):
        cell = {r["quantization"]: r for r in report["rows"] if r["threads"] == threads}
        if {"int8", "float32"} <= set(cell) or {"int8", "fp32"} <= set(cell):
            fp32 = cell.get("float32") or cell["fp32"]
            out.append(
                {
                    "threads": threads,
                    "invoke_p50": round(cell["int8"]["invoke_p50_ms"] / fp32["invoke_p50_ms"], 3),
                    "e2e_p50": round(cell["int8"]["e2e_p50_ms"] / fp32["e2e_p50_ms"], 3),
                    "fps": round(cell["int8"]["fps"] / fp32["fps"], 3),
                }
            )
    return out


def render(reports: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    first = reports[0]
    header, table = benchmark_markdown(first).rstrip().split("\n\n", 1)
    lines = [
        "## Device benchmark: `edge-classify benchmark` on this machine (`benchmarks/device.py`)",
        "",
        f"{meta['models']}. Measured {first['time']}, {len(reports)} runs of "
        f"`{meta['command']}` (separate processes; in each, both models interleaved in "
        f"{first['settings']['rounds']} rounds per thread count). Load average (1/5/15 min) "
        f"{meta['load_before']} before, {meta['load_after']} after"
        + (
            f": **under load** (other jobs shared the {meta.get('cores', '?')} cores), so absolute figures are inflated"
            if meta.get("under_load", True)
            else " (no other load to speak of)"
        )
        + "; the ratios compare models measured in the same run. "
        f"End to end = {first['settings']['end_to_end']} on a {first['settings']['frame']}; FPS = {first['settings']['fps']}; "
        "peak RSS = the process's high-water mark with only that model loaded (reset before it loads).",
        "",
        "The first run, as the command prints it (the lines above its table are what a user pastes with it):",
        "",
        "```text",
        header,
        "```",
        "",
        table,
        "",
        "Within a run the 1-thread cells are measured before the 2-thread cells, so a change of load between them "
        "distorts 1- vs 2-thread comparisons; int8 vs fp32 at the same thread count is like for like.",
        "",
        *([meta["note"], ""] if meta.get("note") else []),
        "int8 / fp32 in each run (latency ratios below 1 and FPS ratios above 1: int8 is faster):",
        "",
        "| run | threads | invoke p50 | end-to-end p50 | FPS |",
        "|---:|---:|---:|---:|---:|",
    ]
    for i, report in enumerate(reports, 1):
        for r in ratios(report):
            lines.append(f"| {i} | {r['threads']} | {r['invoke_p50']:.2f}× | {r['e2e_p50']:.2f}× | {r['fps']:.2f}× |")
    return "\n".join(lines) + "\n"


def benchmark_markdown(report: dict[str, Any]) -> str:
    from edgetl.runtime.benchmark import markdown

    return markdown(report)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgetl-bench-device"))
    parser.add_argument(
        "--models", nargs="+", type=Path, help="benchmark these instead of building int8 + fp32 1.0/224"
    )
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=REPO, help="folder of BENCHMARKS.md and benchmarks.json")
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite the section from benchmarks.json, no measuring"
    )
    parser.add_argument("--note", help="a paragraph to add to the section (kept in benchmarks.json)")
    args = parser.parse_args()
    if args.render_only:
        data = json.loads((args.output / "benchmarks.json").read_text())["sections"]["device"]
        if args.note:
            data["meta"]["note"] = args.note
        write_section(args.output, "device", render(data["runs"], data["meta"]), data)
        return
    models = args.models or build_models(args.work)
    load_before = load_average()
    reports = [benchmark(models, args) for _ in range(args.repeats)]
    meta = {
        "models": "Models: "
        + ", ".join(f"`{m.name}` ({m.stat().st_size / 1024:.0f} KiB)" for m in models)
        + ("" if args.models else MADE),
        "command": f"edge-classify benchmark {' '.join(m.name for m in models)} --threads {args.threads} "
        f"--runs {args.runs} --seconds {args.seconds:g} --json",
        "load_before": "/".join(f"{v:.2f}" for v in load_before or []),
        "load_after": "/".join(f"{v:.2f}" for v in load_average() or []),
        "cores": os.cpu_count(),
        "note": args.note,
        "under_load": max((load_before or [0])[0], (load_average() or [0])[0]) > 0.5 * (os.cpu_count() or 1),
    }
    data = {"meta": meta, "runs": reports, "ratios": [ratios(r) for r in reports]}
    write_section(args.output, "device", render(reports, meta), data)
    print(render(reports, meta))


if __name__ == "__main__":
    main()
