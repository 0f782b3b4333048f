"""Scale benchmarks (#22): peak memory vs dataset size, input pipeline vs model step, feature pass.

    python -m benchmarks.scale --base /tmp/scale-base     # base = a checkout of the code before the cache

Writes its own section of ``BENCHMARKS.md`` (between ``<!-- scale:begin -->`` and
``<!-- scale:end -->``) and the ``scale`` key of ``benchmarks.json``. Every ratio
compares numbers measured in this one run; nothing is asserted. Time to accuracy
and the recipe's accuracy before/after are ``benchmarks/tta.py``'s. ``edgetl train``
runs as a subprocess (once with the base checkout on ``PYTHONPATH``, once with
this one), its peak resident memory read from ``/usr/bin/time -v``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from benchmarks.util import machine_info, markdown_table, ratio

ROOT = Path(__file__).resolve().parent.parent


BEGIN, END = "<!-- scale:begin -->", "<!-- scale:end -->"


def say(message: str) -> None:
    print(f"[bench_scale] {message}", file=sys.stderr, flush=True)


def peak_train(code: Path, data: Path, out: Path, args: Sequence[str], cache: Path) -> dict[str, Any]:
    """Wall time, peak RSS (MiB) and the summary of one ``edgetl train`` subprocess running ``code``."""
    env = {**os.environ, "EDGETL_PIXEL_CACHE": str(cache), "TF_CPP_MIN_LOG_LEVEL": "2"}
    module = "edgetl"  # this checkout, installed with pip install -e
    if code != ROOT:  # the base checkout predates the edgetl namespace: its packages run from PYTHONPATH
        env["PYTHONPATH"], module = str(code), "toolchain"
    command = ["/usr/bin/time", "-v", sys.executable, "-m", module, "train", str(data), "-o", str(out), "--json", *args]
    start = time.monotonic()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, cwd=str(code))
    seconds = time.monotonic() - start
    if proc.returncode:
        raise RuntimeError(f"train failed ({code}): {proc.stderr[-3000:]}")
    peak_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return {"seconds": round(seconds, 1), "peak_mib": round(peak_kib / 1024, 1), "summary": json.loads(proc.stdout)}


def memory(
    base: Path, work: Path, counts: Sequence[int], px: int, codes: Sequence[str] = ("before", "after")
) -> list[dict[str, Any]]:
    """Peak RSS of 1 cached head epoch at each dataset size, before (base) and after (this checkout)."""
    from edgetl.data.fashion_mnist import write_fashion_mnist_folder

    args = [
        "--weights",
        "none",
        "--alpha",
        "0.35",
        "--image-size",
        str(px),
        "--epochs",
        "1",
        "--fine-tune-epochs",
        "0",
        "--cache-views",
        "1",
        "--batch-size",
        "32",
        "--seed",
        "1",
    ]
    rows = []
    for count in counts:
        data = work / f"fm{count}"
        if not data.exists():
            write_fashion_mnist_folder(data, per_class=count // 10, seed=0, part="train")
        row: dict[str, Any] = {"images": count, "pixels_mib": round(count * px * px * 3 / 2**20, 1)}
        for name, code in (("before", base), ("after", ROOT)):
            if name in codes:
                say(f"memory: {count} images, {name}")
                row[name] = peak_train(
                    code, data, work / f"run-{name}-{count}-{os.getpid()}", args, work / f"cache-{count}-{os.getpid()}"
                )
        rows.append(row)
        say(f"memory: {row}")
    return rows


def throughput(data_dir: Path, work: Path, px: int, alpha: float, count: int = 1024) -> dict[str, Any]:
    """Images/s of decode, augment+normalise (one thread = one core) and tf.data (all cores) vs the model's step."""
    import tensorflow as tf
    from edgetl import data
    from edgetl.config import TrainConfig
    from edgetl.data import pipeline
    from edgetl.data import pixels as cache
    from edgetl.model import classifier as model

    dataset = data.discover(str(data_dir))
    items = list(np.random.default_rng(0).permutation(np.asarray(dataset.items, dtype=object))[:count])
    count = len(items)
    start = time.monotonic()
    for item in items[:256]:
        dataset.load_item(item, px, "area")
    decode = min(256, count) / (time.monotonic() - start)
    split = cache.load_split(dataset, items, px, folder=work / "cache-throughput")
    src = pipeline.Source(split.rows, split.labels, np.arange(len(items)))
    prepare = pipeline.pixel_preparer(model.MOBILENET_NORMALIZATION, 0, True)
    start = time.monotonic()
    for b in range(0, count, 32):
        prepare(split.rows.read(b, b + 32), 1, b)
    one_thread = count / (time.monotonic() - start)
    ds = pipeline.training_batches(src, 32, 0, 0, 3, prepare, (px, px, 3))
    start = time.monotonic()
    seen = sum(int(x.shape[0]) for x, _ in ds)
    tfdata = seen / (time.monotonic() - start)
    built = model.build(TrainConfig(data="-", output="-", weights="none", alpha=alpha, image_size=px), 10)
    model.unfreeze_top(built, 10_000)
    built.full.compile(model.keras().optimizers.Adam(1e-5), loss="sparse_categorical_crossentropy")
    x = tf.random.uniform((32, px, px, 3), -1, 1)
    y = tf.zeros((32,), tf.int32)
    built.full.train_on_batch(x, y)
    start, steps = time.monotonic(), 10
    for _ in range(steps):
        built.full.train_on_batch(x, y)
    step = steps * 32 / (time.monotonic() - start)
    return {
        "px": px,
        "alpha": alpha,
        "decode_per_core": round(decode, 1),
        "augment_normalise_per_core": round(one_thread, 1),
        "input_per_core": round(1 / (1 / decode + 1 / one_thread), 1),
        "tfdata_all_cores": round(tfdata, 1),
        "model_step_fine_tune": round(step, 1),
        "cores": os.cpu_count(),
    }


def feature_pass(px: int = 96, count: int = 1024, rounds: int = 3) -> dict[str, Any]:
    """Backbone features of ``count`` images: ``predict_on_batch`` at 32 (before) vs one ``tf.function`` at 256 (after)."""
    from edgetl.config import TrainConfig
    from edgetl.data import pipeline
    from edgetl.model import classifier as model

    built = model.build(TrainConfig(data="-", output="-", weights="imagenet", alpha=1.0, image_size=px), 10)
    images = np.random.default_rng(0).uniform(-1, 1, (count, px, px, 3)).astype(np.float32)
    fn = pipeline.batch_function(built.features, (px, px, 3))
    built.features.predict_on_batch(images[:32])
    fn(images[:256])
    out: dict[str, Any] = {"px": px, "alpha": 1.0, "images": count, "rounds": rounds}
    rates: dict[str, list[float]] = {"predict_on_batch_32": [], "tf_function_256": []}
    for _ in range(rounds):  # interleaved, so the shared machine's drift hits both alike
        for name, call, batch in (
            ("predict_on_batch_32", built.features.predict_on_batch, 32),
            ("tf_function_256", fn, 256),
        ):
            start = time.monotonic()
            for b in range(0, count, batch):
                np.asarray(call(images[b : b + batch]))
            rates[name].append(count / (time.monotonic() - start))
    out.update({name: round(float(np.median(v)), 1) for name, v in rates.items()})
    out["speedup"] = round(out["tf_function_256"] / out["predict_on_batch_32"], 2)
    return out


def render(results: dict[str, Any]) -> str:
    """The BENCHMARKS.md section."""
    lines = [
        BEGIN,
        "## Scale: memory, input pipeline, feature pass (`benchmarks/scale.py`)",
        "",
        f"Measured {results['meta']['date']} ({results['meta']['minutes']} min of runs), {results['meta']['cpu']}, load average "
        f"{', '.join(f'{v:.1f}' for v in results['meta'].get('load', []))} at the end: absolute times are noisy and wall times vary with the load; memory is not affected. "
        f"{results['meta'].get('note', '')}",
        "",
    ]
    mem = results.get("memory")
    if mem:
        px = results["params"]["px"]
        lines += [
            f"**Peak resident memory** of `edgetl train` (MobileNetV2 0.35/{px}, weights none, 1 cached head epoch, "
            "1 view), `/usr/bin/time -v`, cold pixel cache. *Before*: every split decoded into RAM. *After*: on-disk cache + tf.data.",
            "",
        ]
        rows = [
            [
                f"{r['images']:,}",
                f"{r['pixels_mib']:,.0f} MiB",
                f"{r['before']['peak_mib']:,.0f} MiB",
                f"{r['after']['peak_mib']:,.0f} MiB",
                f"{ratio(r['after']['peak_mib'], r['before']['peak_mib']):.2f}×",
                f"{r['before']['seconds']:.0f} s / {r['after']['seconds']:.0f} s",
            ]
            for r in mem
        ]
        lines += [
            markdown_table(
                ["images", "decoded pixels", "peak before", "peak after", "after/before", "wall before / after"], rows
            ),
            "",
        ]
        growth_b = ratio(mem[-1]["before"]["peak_mib"], mem[0]["before"]["peak_mib"])
        growth_a = ratio(mem[-1]["after"]["peak_mib"], mem[0]["after"]["peak_mib"])
        lines += [
            f"From {mem[0]['images']:,} to {mem[-1]['images']:,} images the peak grows {growth_b:.2f}× before and {growth_a:.2f}× after.",
            "",
        ]
    tp = results.get("throughput")
    if tp:
        cores = ratio(tp["model_step_fine_tune"], tp["input_per_core"])
        lines += [
            f"**Input pipeline vs model step** at {tp['px']} px (images/s; one Python thread ≈ one core):",
            "",
            markdown_table(
                ["stage", "images/s"],
                [
                    ["decode + resize (edgetl.runtime.preprocess), per core", tp["decode_per_core"]],
                    ["augment + normalise (cv2 + numpy), per core", tp["augment_normalise_per_core"]],
                    ["decode + augment + normalise, per core", tp["input_per_core"]],
                    [
                        f"tf.data from the cache (augment + normalise, {tp['cores']} cores, parallel map + prefetch)",
                        tp["tfdata_all_cores"],
                    ],
                    [
                        f"model: full fine-tune step, MobileNetV2 {tp['alpha']}/{tp['px']}, batch 32, this CPU",
                        tp["model_step_fine_tune"],
                    ],
                ],
            ),
            "",
            f"This CPU's own training step needs {cores:.2f} core(s) of decode + augment + normalise to stay fed. A GPU "
            f"training K images/s needs about K ÷ {tp['augment_normalise_per_core']:.0f} cores reading from the pixel cache "
            f"(decode done once), K ÷ {tp['input_per_core']:.0f} decoding every epoch — {1000 / tp['augment_normalise_per_core']:.1f} "
            f"and {1000 / tp['input_per_core']:.1f} cores per 1,000 images/s. These sources are 28×28 PNGs, cheap to decode; "
            "camera JPEGs decode far slower, which is what the cache saves.",
            "",
        ]
    fp = results.get("feature_pass")
    if fp:
        lines += [
            f"**Cached head phase, feature pass** (MobileNetV2 1.0/{fp['px']}, {fp['images']} images): `predict_on_batch` at 32 "
            f"{fp['predict_on_batch_32']} images/s, one `tf.function` at 256 {fp['tf_function_256']} images/s (**{fp['speedup']}×**; "
            f"medians of {fp.get('rounds', 1)} interleaved rounds).",
            "",
        ]
    lines += [
        "**Time to accuracy and the recipe's accuracy** before and after the streamed pipeline: see the section "
        "*Time to accuracy* (`benchmarks/tta.py`), measured on two datasets with paired intervals.",
        "",
    ]
    lines += _closing(results)
    return "\n".join(lines + [END]) + "\n"


def _closing(results: dict[str, Any]) -> list[str]:
    """One sentence per measured ratio, quoted from the tables above."""
    said = []
    mem = results.get("memory")
    if mem:
        big = mem[-1]
        said.append(
            f"at {big['images']:,} images the peak is {big['after']['peak_mib']:,.0f} MiB after vs {big['before']['peak_mib']:,.0f} MiB "
            f"before ({ratio(big['after']['peak_mib'], big['before']['peak_mib']):.2f}×; decoded pixels {big['pixels_mib']:,.0f} MiB), and it grows "
            f"{ratio(big['after']['peak_mib'], mem[0]['after']['peak_mib']):.2f}× from {mem[0]['images']:,} images "
            f"(before: {ratio(big['before']['peak_mib'], mem[0]['before']['peak_mib']):.2f}×)"
        )
    tp = results.get("throughput")
    if tp:
        said.append(
            f"one core prepares {tp['augment_normalise_per_core']:.0f} images/s from the cache, so {1000 / tp['augment_normalise_per_core']:.1f} "
            "cores keep a 1,000 images/s GPU step fed"
        )
    fp = results.get("feature_pass")
    if fp:
        said.append(f"the feature pass is {fp['speedup']:.2f}× faster as one tf.function at batch 256")
    return [f"**In short:** {'; '.join(said)}.", ""] if said else []


def write(results: dict[str, Any], out: Path) -> None:
    from edgetl.runtime.model_card import write_bytes_atomic

    md = out / "BENCHMARKS.md"
    text = md.read_text() if md.exists() else "# Benchmarks\n"
    section = render(results)
    text = (
        re.sub(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", lambda _: section, text, flags=re.S)
        if BEGIN in text
        else text.rstrip() + "\n\n" + section
    )
    write_bytes_atomic(md, text.encode())
    js = out / "benchmarks.json"
    data = json.loads(js.read_text()) if js.exists() else {}
    data["scale"] = results
    write_bytes_atomic(js, (json.dumps(data, indent=1) + "\n").encode())


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--base",
        type=Path,
        required=True,
        help="checkout of the code before the cache (git worktree add --detach DIR COMMIT)",
    )
    p.add_argument("--counts", default="10000,30000,60000")
    p.add_argument("--px", type=int, default=160)
    p.add_argument("--codes", default="before,after", help="memory section: which code to run (before, after or both)")
    p.add_argument("--sections", default="memory,throughput,feature_pass")
    p.add_argument("--work", type=Path, help="scratch folder (kept; default a new temporary one)")
    p.add_argument("--note", default="", help="a sentence for the section's header (e.g. what differed in this run)")
    p.add_argument("--output", type=Path, default=ROOT)
    args = p.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    info = machine_info()
    sections = args.sections.split(",")
    # Sections not re-measured keep their figures from the last run (benchmarks.json's "scale" key).
    previous = args.output / "benchmarks.json"
    results: dict[str, Any] = json.loads(previous.read_text()).get("scale", {}) if previous.exists() else {}
    same_px = results.get("params", {}).get("px") == args.px
    results.setdefault("params", {}).update({"base": str(args.base)})
    if "memory" in sections:
        results["params"].update({"px": args.px, "counts": args.counts})

    def save() -> None:  # after every section: a late failure keeps what was measured
        results["meta"] = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "minutes": round((time.monotonic() - started) / 60, 1),
            "cpu": f"{info.get('cpu_model', '?')}, {os.cpu_count()} logical CPUs",
            "load": os.getloadavg(),
            "note": args.note,
        }
        write(results, args.output)

    if "memory" in sections:
        old = {r["images"]: r for r in results.get("memory", [])} if same_px else {}
        rows = memory(args.base, work, [int(c) for c in args.counts.split(",")], args.px, args.codes.split(","))
        for row in rows:  # --codes after: the before column stays from the last run at this size
            for code in ("before", "after"):
                if code not in row and code in old.get(row["images"], {}):
                    row[code] = old[row["images"]][code]
        results["memory"] = rows
        save()
    if "throughput" in sections:
        first = int(args.counts.split(",")[0])
        if not (work / f"fm{first}").exists():
            from edgetl.data.fashion_mnist import write_fashion_mnist_folder

            write_fashion_mnist_folder(work / f"fm{first}", per_class=first // 10, seed=0, part="train")
        results["throughput"] = throughput(work / f"fm{first}", work, args.px, 0.35)
        save()
    if "feature_pass" in sections:
        results["feature_pass"] = feature_pass()
        save()
    for gone in ("accuracy", "time_to_accuracy"):  # measured by benchmarks/tta.py now
        results.pop(gone, None)
    save()
    print(args.output / "BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
