#!/usr/bin/env python3
"""``edgetl convert --max-drop 0.3`` on hard cases: one per dataset, where plain int8 fails the gate on evidence.

For each of edgetl's three datasets (Fashion-MNIST, Animal-MNIST, the colour emoji set) the script
writes a train folder and a separate, large test folder, trains MobileNetV2 1.0/96 (ImageNet weights,
head on cached features), and then:

1. converts fp16 and plain int8 **calibrated on too few images** (``--calib-size``, default 10: one
   image per class, a mistake users make: "calibrate on a handful of samples"), and keeps a copy of
   that int8 model as ``model_int8plain.tflite`` (same card, so parity judges it like int8);
2. converts int8 again with ``--max-drop 0.3`` (same calibration request): the search measures on
   the val split only and picks the cheapest fix;
3. runs the parity gate on the test folder: fp16, plain int8 and the searched int8, paired on the
   same images, each with its verdict;
4. times bare ``invoke()`` of the three models interleaved in one process (1 thread, median).

Writes the ``max-drop`` section of BENCHMARKS.md and benchmarks.json.

Usage:
    nice -n 5 .venv/bin/python -m benchmarks.maxdrop --work /tmp/maxdrop   # ~15 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from benchmarks import util as bench_util

ROOT = Path(__file__).resolve().parents[1]

PY = sys.executable
EDGETL = [PY, "-m", "edgetl"]
DATASETS: dict[str, dict[str, list[str]]] = {
    "fashion-mnist": {
        "train": [*EDGETL, "data", "fashion-mnist", "{out}", "--per-class", "300", "--part", "train"],
        "test": [*EDGETL, "data", "fashion-mnist", "{out}", "--per-class", "200", "--part", "test"],
    },
    "animal-mnist": {
        "train": [PY, "scripts/animal_mnist.py", "{out}", "--part", "train", "--per-class", "300"],
        "test": [PY, "scripts/animal_mnist.py", "{out}", "--part", "test", "--per-class", "0"],
    },
    "colour-emoji": {
        "train": [PY, "scripts/colour_emoji.py", "{out}", "--part", "train"],
        "test": [PY, "scripts/colour_emoji.py", "{out}", "--part", "test"],
    },
}


def sh(command: Sequence[str], log: Path, ok: Sequence[int] = (0,)) -> subprocess.CompletedProcess[str]:
    """Run one step (stdout kept, stderr appended to the log); refuse an unexpected exit code."""
    print("$", " ".join(command), file=sys.stderr, flush=True)
    with open(log, "a") as err:
        done = subprocess.run(list(command), cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True)
    if done.returncode not in ok:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}; see {log}")
    return done


def prepare(name: str, work: Path, log: Path) -> tuple[Path, Path]:
    folders = {part: work / name / part for part in ("train", "test")}
    for part, folder in folders.items():
        if not folder.exists():
            sh([a.replace("{out}", str(folder)) for a in DATASETS[name][part]], log)
    return folders["train"], folders["test"]


def train(train_dir: Path, run: Path, log: Path, epochs: int) -> None:
    if not (run / "model.keras").exists():
        sh(
            [
                *EDGETL,
                "train",
                str(train_dir),
                "--output",
                str(run),
                "--image-size",
                "96",
                "--epochs",
                str(epochs),
                "--fine-tune-epochs",
                "0",
                "--seed",
                "0",
                "-q",
            ],
            log,
        )


def case(name: str, args: argparse.Namespace, log: Path) -> dict[str, Any]:
    """One dataset: plain int8 vs --max-drop int8 vs fp16, judged on the test folder."""
    train_dir, test_dir = prepare(name, args.work, log)
    run = args.work / name / "run"
    train(train_dir, run, log, args.epochs)
    for stale in run.glob("model_*.tflite"):
        stale.unlink()
        stale.with_suffix(".json").unlink(missing_ok=True)
    size = args.calib_for.get(name, args.calib_size)
    rounding = args.rounding_for.get(name)
    calib = ["--calib-size", str(size), *(["--rounding", rounding] if rounding else [])]
    sh([*EDGETL, "convert", str(run), "--quant", "fp16,int8", *calib, "--no-parity", "-q"], log)
    for suffix in (".tflite", ".json"):
        shutil.copy(run / f"model_int8{suffix}", run / f"model_int8plain{suffix}")
    started = time.monotonic()
    done = sh(
        [
            *EDGETL,
            "convert",
            str(run),
            "--quant",
            "int8",
            *calib,
            "--max-drop",
            str(args.max_drop),
            "--no-parity",
            "--json",
            "-q",
        ],
        log,
        ok=(0, 1),
    )
    seconds = time.monotonic() - started
    search = json.loads(done.stdout)["max_drop"] if done.returncode == 0 else {"error": done.returncode}
    parity = json.loads(
        sh([*EDGETL, "parity", str(run), "--data", str(test_dir), "--json", "-q"], log, ok=(0, 1, 4)).stdout
    )
    paths = {v: run / f"model_{v}.tflite" for v in ("int8plain", "int8", "fp16")}
    return {
        "dataset": name,
        "hard_case": f"int8 calibrated on {size} train images"
        + (f", the converter's {rounding} rounding" if rounding else ""),
        "rounding": rounding or "gptq",
        "calib_size": size,
        "train_images": sum(1 for _ in train_dir.rglob("*.png")),
        "test_images": parity["float"]["count"],
        "float_top1": parity["float"]["top1"],
        "search": search,
        "search_seconds": round(seconds, 1),
        "models": {v: _figures(parity, v, paths[v]) for v in paths},
        "latency_ms": _latency(paths, args.latency_repeats),
    }


def _figures(parity: dict[str, Any], variant: str, path: Path) -> dict[str, Any]:
    m = parity["models"][variant]
    checks = {c["name"]: c["verdict"] for c in parity["checks"] if c["model"] == variant}
    verdict = "fail" if "fail" in checks.values() else "inconclusive" if "inconclusive" in checks.values() else "pass"
    return {
        "top1": m["top1"],
        "drop": m["drop"],
        "agreement": m["agreement_check"],
        "checks": checks,
        "verdict": verdict,
        "size_bytes": path.stat().st_size,
    }


def _latency(paths: dict[str, Path], repeats: int) -> dict[str, Any]:
    """Median bare invoke() ms of each model, 1 thread, interleaved in blocks (ratios are fair under load)."""
    from ai_edge_litert.interpreter import Interpreter

    calls = {}
    for name, path in paths.items():
        interpreter = Interpreter(model_path=str(path), num_threads=1)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"], np.full(detail["shape"], 100, dtype=detail["dtype"]))
        calls[name] = interpreter.invoke
    samples = bench_util.interleaved(calls, repeats, rounds=10)
    return {name: {"median_ms": bench_util.median(s), "n": len(s)} for name, s in samples.items()}


def _cell(m: dict[str, Any], variant: str) -> str:
    d = m[variant]["drop"]
    return f"{d['value']:.2f} [{d['low']:.2f}, {d['high']:.2f}] **{m[variant]['verdict']}**"


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "## int8 within a budget: `edgetl convert --max-drop` on hard cases (`benchmarks/maxdrop.py`)",
        "",
        f"MobileNetV2 1.0/96, ImageNet weights, head on cached features ({args.epochs} epochs at most), one run per "
        "dataset. Hard case per row: int8 calibrated on too few train images (`--calib-size`), or the stock "
        "converter's nearest weight rounding (`--rounding nearest`) where too few images did not fail. "
        f"`--max-drop {args.max_drop:g}` searches on the val split only (holds: no gate check fails on evidence on "
        "val, and the candidate's flips are at most the float model's own noise floor on val); "
        "the gate then judges fp16, plain int8 "
        "(`int8plain`) and the searched int8 on the same test images through edge_runtime (drop vs model.keras, "
        "95% paired interval; verdict of all the gate's checks). Latency: bare `invoke()`, 1 thread, median of "
        f"{args.latency_repeats} interleaved calls, under load from other jobs (compare ratios within a row).",
        "",
        "| dataset | hard case | test images | float top-1 | plain int8 drop (pt), verdict | searched: steps, calibration, float "
        "layers, val drop | searched int8 drop (pt), verdict | fp16 drop (pt), verdict | size KiB int8 / searched "
        "/ fp16 | latency ms int8 / searched / fp16 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m, s, lat = r["models"], r["search"], r["latency_ms"]
        if "chosen" in s and s["chosen"]:
            c = s["chosen"]
            searched = (
                f"{s['evaluations']} eval(s) in {r['search_seconds']:.0f} s: {c['step']}; {c['calibration_size']} "
                f"images; {len(c['float_layers'])} float; val {c['drop']['value']:.2f}, {c.get('flips')} flips vs "
                f"floor {c.get('noise_floor_flips')} (n={s['val_images']}, held by: {c.get('why')})"
            )
        else:
            searched = f"not reached ({s})"
        lines.append(
            f"| {r['dataset']} | `--calib-size {r.get('calib_size', args.calib_size)}`"
            f"{' `--rounding ' + r['rounding'] + '`' if r.get('rounding', 'gptq') != 'gptq' else ''} | "
            f"{r['test_images']:,} | {100 * r['float_top1']:.2f}% | {_cell(m, 'int8plain')} | "
            f"{searched} | {_cell(m, 'int8')} | {_cell(m, 'fp16')} | {m['int8plain']['size_bytes'] / 1024:.0f} / "
            f"{m['int8']['size_bytes'] / 1024:.0f} / {m['fp16']['size_bytes'] / 1024:.0f} | "
            f"{lat['int8plain']['median_ms']:.3f} / {lat['int8']['median_ms']:.3f} / {lat['fp16']['median_ms']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="scratch folder (data, runs); reused when re-run")
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated subset of " + ",".join(DATASETS))
    p.add_argument("--calib-size", type=int, default=10)
    p.add_argument(
        "--calib-for",
        default="",
        help="per-dataset --calib-size, e.g. animal-mnist=1,colour-emoji=2 (else --calib-size)",
    )
    p.add_argument("--rounding-for", default="", help="per-dataset --rounding, e.g. animal-mnist=nearest")
    p.add_argument("--max-drop", type=float, default=0.3)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--latency-repeats", type=int, default=2000)
    p.add_argument("--no-write", action="store_true", help="print the table; leave BENCHMARKS.md alone")
    args = p.parse_args(argv)
    args.calib_for = {k: int(v) for k, v in (pair.split("=") for pair in args.calib_for.split(",") if pair)}
    args.rounding_for = dict(pair.split("=") for pair in args.rounding_for.split(",") if pair)
    args.work.mkdir(parents=True, exist_ok=True)
    log = args.work / "bench_maxdrop.log"
    rows = []
    for name in args.datasets.split(","):
        cached = args.work / name / "row.json"  # a finished dataset is not redone when a later one fails
        if not cached.is_file():
            row = case(name, args, log)
            cached.write_text(json.dumps(row, indent=1))
        rows.append(json.loads(cached.read_text()))
    text = markdown(rows, args)
    print(text)
    if not args.no_write:
        data = {"rows": rows, "machine": bench_util.machine_info(), "load_average": bench_util.load_average()}
        bench_util.write_section(ROOT, "max-drop", text, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
