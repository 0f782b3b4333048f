"""Helpers for scripts/arm64_check.sh: make its inputs and compare x86 with emulated arm64.

Subcommands (each prints results to stdout, problems to stderr, exits 1 on a mismatch):

    video OUT.avi IMAGE...               a short MJPG .avi built from the images (x86 side, cv2)
    tensors MODEL.tflite OUT.npy IMAGE...  the model's exact input tensors for the images, through
                                         edgetl.runtime.preprocess (the one contract), plus seeded
                                         random tensors (x86 side)
    invoke MODEL.tflite IN.npy OUT.npy   raw output tensors for those inputs (run on both sides;
                                         numpy + ai_edge_litert only, so it runs in the Pi venv)
    frames NAME X86.jsonl ARM.jsonl      per-frame comparison of two edge-classify outputs
    outputs X86.npy ARM.npy              strict comparison of two `invoke` outputs

Two comparisons with two strictness levels, on purpose:
- `frames` runs the whole pipeline (decode, resize, quantize, invoke) on each architecture. The
  x86 and aarch64 opencv wheels are built with different SIMD paths and their resize can land
  one grey level apart on some pixels, so scores may move a little: same top-1 label and
  scores within a tolerance is the right bar there.
- `outputs` feeds the identical input tensor on both sides, so nothing but the interpreter's
  int8 kernels differs; the outputs must be equal (quantized outputs exactly, float outputs to
  float rounding). This is what catches a broken arm64 kernel (e.g. QEMU_CPU=max, FACTS.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np

RANDOM_TENSORS = 4  # besides the images: random inputs are fine for a same-input kernel check
FLOAT_OUTPUT_TOL = 1e-5  # float models: XNNPACK may order FMAs differently on NEON and AVX


def make_video(out: Path, images: list[Path], size: tuple[int, int] = (160, 120), repeat: int = 3) -> int:
    """Write each image ``repeat`` times (slightly brightened each time) as an MJPG .avi.

    Returns:
        The number of frames written.
    """
    import cv2  # only this subcommand needs it

    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    if not writer.isOpened():
        raise SystemExit(f"cv2.VideoWriter cannot write MJPG to {out}")
    frames = 0
    for path in images:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f"{path}: cv2 cannot read it")
        bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        for i in range(repeat):
            writer.write(cv2.add(bgr, np.full_like(bgr, 4 * i)))
            frames += 1
    writer.release()
    return frames


def make_tensors(model: Path, out: Path, images: list[Path]) -> np.ndarray:
    """Stack the model's input tensors for ``images`` plus seeded random ones into ``out``."""
    from edgetl.runtime.decode import decode_image
    from edgetl.runtime.model_card import card_path_for, load_card
    from edgetl.runtime.preprocess import prepare

    card = load_card(card_path_for(model))
    batch = [prepare(decode_image(p), card, "RGB")[0] for p in images]
    dtype = batch[0].dtype
    rng = np.random.default_rng(8)
    for _ in range(RANDOM_TENSORS):
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            batch.append(rng.integers(info.min, info.max, batch[0].shape, dtype=dtype, endpoint=True))
        else:
            batch.append(rng.uniform(-1.0, 1.0, batch[0].shape).astype(dtype))
    tensors = np.stack(batch)
    np.save(out, tensors)
    return tensors


def invoke(model: Path, inputs: Path, out: Path) -> np.ndarray:
    """Run every input tensor through a 1-thread LiteRT interpreter; save the raw outputs."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model), num_threads=1)
    interpreter.allocate_tensors()
    in_index = interpreter.get_input_details()[0]["index"]
    out_index = interpreter.get_output_details()[0]["index"]
    results = []
    for tensor in np.load(inputs):
        interpreter.set_tensor(in_index, tensor[None])
        interpreter.invoke()
        results.append(interpreter.get_tensor(out_index)[0].copy())
    outputs = np.stack(results)
    np.save(out, outputs)
    return outputs


def read_frames(path: Path) -> list[dict[str, Any]]:
    """The JSON lines edge-classify printed; anything else on stdout is an error."""
    frames = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            frames.append(json.loads(line))
        except json.JSONDecodeError:
            raise SystemExit(f"{path}:{n}: not a JSON line (stdout must carry results only): {line[:120]!r}") from None
    return frames


def compare_frames(name: str, x86: list[dict], arm: list[dict], tol: float) -> list[str]:
    """Per-frame comparison; prints a summary line and returns the problems found."""
    problems = []
    if len(x86) != len(arm) or not x86:
        problems.append(f"{name}: frame count x86 {len(x86)} vs arm64 {len(arm)}")
    labels_equal, max_diff = 0, 0.0
    for a, b in zip(x86, arm):
        where = f"{name} frame {a.get('frame')} ({Path(str(a.get('source', ''))).name})"
        if Path(str(a.get("source", ""))).name != Path(str(b.get("source", ""))).name:
            problems.append(f"{where}: source differs: {a.get('source')} vs {b.get('source')}")
        top_a, top_b = a["top_k"][0], b["top_k"][0]
        if top_a["label"] == top_b["label"]:
            labels_equal += 1
        else:
            problems.append(
                f"{where}: top-1 x86 {top_a['label']} {top_a['score']:.4f} vs arm64 {top_b['label']} {top_b['score']:.4f}"
            )
        scores_b = {c["label"]: c["score"] for c in b["top_k"]}
        for cat in a["top_k"]:
            if cat["label"] in scores_b:
                diff = abs(cat["score"] - scores_b[cat["label"]])
                max_diff = max(max_diff, diff)
                if diff > tol:
                    problems.append(
                        f"{where}: score of {cat['label']} x86 {cat['score']:.4f} vs arm64 {scores_b[cat['label']]:.4f} (diff {diff:.4f} > {tol})"
                    )
    print(
        f"{name}: {len(arm)} frames (x86 {len(x86)}), top-1 equal {labels_equal}/{min(len(x86), len(arm))}, "
        f"max score diff {max_diff:.4f} (tolerance {tol})"
    )
    print(f"  median ms per frame   x86: {_timings(x86)}")
    print(f"  median ms per frame arm64: {_timings(arm)}  (emulated, not a Pi figure)")
    return problems


def _timings(frames: list[dict]) -> str:
    parts = []
    for key in ("preprocess_ms", "invoke_ms", "total_ms"):
        values = [float(f[key]) for f in frames if f.get(key) is not None]
        parts.append(f"{key[:-3]} {statistics.median(values):.1f}" if values else f"{key[:-3]} n/a")
    return ", ".join(parts)


def compare_outputs(x86: np.ndarray, arm: np.ndarray) -> list[str]:
    """Same input tensors on both sides: integer outputs must be equal, float ones to rounding."""
    if x86.shape != arm.shape or x86.dtype != arm.dtype:
        return [
            f"same-tensor outputs differ in shape/dtype: x86 {x86.shape} {x86.dtype} vs arm64 {arm.shape} {arm.dtype}"
        ]
    diff = np.abs(x86.astype(np.float64) - arm.astype(np.float64))
    exact = np.issubdtype(x86.dtype, np.integer)
    tol = 0.0 if exact else FLOAT_OUTPUT_TOL
    unit = f"{x86.dtype} levels" if exact else "float"
    bad = int((diff > tol).any(axis=tuple(range(1, diff.ndim))).sum())
    argmax_equal = int((x86.reshape(len(x86), -1).argmax(1) == arm.reshape(len(arm), -1).argmax(1)).sum())
    print(
        f"same tensor: {len(x86)} inputs, outputs {x86.dtype}{list(x86.shape[1:])}, max |x86 - arm64| = "
        f"{diff.max():g} {unit} (allowed {tol:g}), argmax equal {argmax_equal}/{len(x86)}, differing inputs {bad}"
    )
    if bad:
        return [
            f"same tensor: {bad}/{len(x86)} inputs give different outputs on arm64 (max diff {diff.max():g} {unit})"
        ]
    return []


def _report(problems: list[str]) -> int:
    for problem in problems:
        print(f"MISMATCH {problem}", file=sys.stderr)
    return 1 if problems else 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("video")
    p.add_argument("out", type=Path)
    p.add_argument("images", type=Path, nargs="+")
    p = sub.add_parser("tensors")
    p.add_argument("model", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("images", type=Path, nargs="+")
    p = sub.add_parser("invoke")
    p.add_argument("model", type=Path)
    p.add_argument("inputs", type=Path)
    p.add_argument("out", type=Path)
    p = sub.add_parser("frames")
    p.add_argument("name")
    p.add_argument("x86", type=Path)
    p.add_argument("arm", type=Path)
    p.add_argument("--tol", type=float, default=0.02)
    p = sub.add_parser("outputs")
    p.add_argument("x86", type=Path)
    p.add_argument("arm", type=Path)
    args = parser.parse_args(argv)

    if args.cmd == "video":
        print(f"{args.out}: {make_video(args.out, args.images)} frames")
    elif args.cmd == "tensors":
        print(f"{args.out}: {make_tensors(args.model, args.out, args.images).shape}")
    elif args.cmd == "invoke":
        print(f"{args.out}: {invoke(args.model, args.inputs, args.out).shape}")
    elif args.cmd == "frames":
        return _report(compare_frames(args.name, read_frames(args.x86), read_frames(args.arm), args.tol))
    else:
        return _report(compare_outputs(np.load(args.x86), np.load(args.arm)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
