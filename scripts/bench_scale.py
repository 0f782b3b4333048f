"""Scale benchmarks (#22): peak memory vs dataset size, input pipeline vs model step, feature pass, accuracy.

    python scripts/bench_scale.py --base /tmp/scale-base     # base = a checkout of the code before the cache

Writes its own section of ``BENCHMARKS.md`` (between ``<!-- scale:begin -->`` and
``<!-- scale:end -->``) and the ``scale`` key of ``benchmarks.json``. Every ratio
compares numbers measured in this one run; nothing is asserted. ``edgetl train``
runs as a subprocess (once with the base checkout on ``PYTHONPATH``, once with
this one), its peak resident memory read from ``/usr/bin/time -v``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from bench_util import machine_info, markdown_table, ratio  # noqa: E402

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
    from edgetl.datasets import write_fashion_mnist_folder  # noqa: PLC0415

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
    import tensorflow as tf  # noqa: PLC0415
    from edgetl import cache, data, model, pipeline  # noqa: PLC0415
    from edgetl.config import TrainConfig  # noqa: PLC0415

    dataset = data.discover(str(data_dir))
    items = list(np.random.default_rng(0).permutation(np.asarray(dataset.items, dtype=object))[:count])
    count = len(items)
    start = time.monotonic()
    for item in items[:256]:
        dataset._load(item, px, "area")  # noqa: SLF001
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
    from edgetl import model, pipeline  # noqa: PLC0415
    from edgetl.config import TrainConfig  # noqa: PLC0415

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


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of a proportion."""
    if n == 0:
        return (math.nan, math.nan)
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (round(centre - half, 4), round(centre + half, 4))


def accuracy(base: Path, work: Path, per_class: int, px: int) -> dict[str, Any]:
    """Test top-1 of the same seeded run (ImageNet 1.0, 3 augmented cached views + fine-tune) before and after."""
    from edgetl.datasets import write_fashion_mnist_folder  # noqa: PLC0415

    data = work / f"acc{per_class}"
    if not data.exists():
        write_fashion_mnist_folder(data, per_class=per_class, seed=3, part="train")
    args = [
        "--weights",
        "imagenet",
        "--alpha",
        "1.0",
        "--image-size",
        str(px),
        "--epochs",
        "5",
        "--fine-tune-epochs",
        "1",
        "--cache-views",
        "3",
        "--batch-size",
        "32",
        "--seed",
        "42",
    ]
    out: dict[str, Any] = {"px": px, "per_class": per_class}
    for name, code in (("before", base), ("after", ROOT)):
        say(f"accuracy: {name}")
        result = peak_train(code, data, work / f"acc-{name}", args, work / "cache-acc")
        metrics = json.loads((work / f"acc-{name}" / "metrics.json").read_text())
        n, top1 = metrics["test"]["count"], metrics["test"]["top1"]
        out[name] = {"test_top1": top1, "n": n, "interval95": wilson(round(top1 * n), n), "seconds": result["seconds"]}
    return out


def keras_recipe(run: Path, target: float, max_head: int = 10, max_fine: int = 3) -> dict[str, Any]:
    """The seeds' Keras recipe on ``run``'s own splits until its test top-1 reaches ``target``.

    Frozen MobileNetV2 recomputed every epoch (augmented batches, Adam 1e-3), then
    fine-tuning of the top 30 layers at 1e-5; test top-1 is checked after every
    epoch and only training time is counted (plus decoding, which the recipe does too).
    """
    from edgetl import data, feed, model  # noqa: PLC0415
    from edgetl.config import TrainConfig  # noqa: PLC0415

    card = json.loads((run / "model_card.json").read_text())
    px, norm = int(card["height"]), model.MOBILENET_NORMALIZATION
    start = time.monotonic()
    pixels = {}
    for split in ("train", "test"):
        dataset, items = data.load_split(run, split)
        pixels[split] = dataset.pixels(items, px)[0], np.asarray([it.label for it in items])
    seconds = time.monotonic() - start
    built = model.build(
        TrainConfig(data="-", output="-", weights="imagenet", alpha=1.0, image_size=px, seed=42), len(card["labels"])
    )
    k = model.keras()
    k.utils.set_random_seed(42)
    built.full.compile(k.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    seq = feed.make_sequence(*pixels["train"], norm, 32, 42, True)
    history = []
    for epoch in range(max_head + max_fine):
        if epoch == max_head:
            model.unfreeze_top(built, 30)
            built.full.compile(k.optimizers.Adam(1e-5), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        start = time.monotonic()
        built.full.fit(seq, epochs=1, verbose=0)
        seconds += time.monotonic() - start
        top1 = float((feed.predict(built.full, pixels["test"][0], norm).argmax(1) == pixels["test"][1]).mean())
        history.append({"epoch": epoch + 1, "seconds": round(seconds, 1), "test_top1": round(top1, 4)})
        say(f"keras recipe: {history[-1]}")
        if top1 >= target:
            break
    return {
        "target": target,
        "reached": history[-1]["test_top1"] >= target,
        "seconds": history[-1]["seconds"],
        "epochs": len(history),
        "history": history,
    }


def render(results: dict[str, Any]) -> str:
    """The BENCHMARKS.md section."""
    lines = [
        BEGIN,
        "## Scale: memory, input pipeline, feature pass (`scripts/bench_scale.py`)",
        "",
        f"Measured {results['meta']['date']} ({results['meta']['minutes']} min of runs), {results['meta']['cpu']}, shared with other "
        "jobs (load average 10-16): absolute times are noisy and wall times vary with the load; memory is not affected. "
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
    tta = results.get("time_to_accuracy")
    if tta:
        k, e = tta["keras"], tta["edgetl_seconds"]
        reached = (
            "reached it"
            if k["reached"]
            else f"had not reached it (best {max(h['test_top1'] for h in k['history']):.4f})"
        )
        p = tta.get("edgetl_phase_seconds")
        lines += [
            f"**Time to accuracy** on the accuracy run's data: `edgetl train` (3 cached views, 5 head epochs, 1 fine-tune epoch) took {e:.0f} s "
            f"for the whole command (Python + TensorFlow start, cold decode, evaluation, run folder; its two training phases {p:.0f} s) "
            f"to test top-1 {k['target']:.4f}; the seeds' Keras recipe (backbone recomputed every epoch, then fine-tune) {reached} after "
            f"{k['epochs']} epoch(s), {k['seconds']:.0f} s of decoding + training: **{ratio(k['seconds'], e):.2f}×** edgetl's whole command, "
            f"{ratio(k['seconds'], p):.2f}× its training phases.",
            "",
        ]
    acc = results.get("accuracy")
    if acc:
        b, a = acc["before"], acc["after"]
        lines += [
            f"**Accuracy, same seed, same data** (MobileNetV2 1.0/{acc['px']} ImageNet, {acc['per_class']}/class, 5 head epochs on 3 "
            f"cached views + 1 fine-tune epoch): test top-1 before {b['test_top1']:.4f} (95% CI {b['interval95'][0]:.3f}–{b['interval95'][1]:.3f}, "
            f"n={b['n']}), after {a['test_top1']:.4f} ({a['interval95'][0]:.3f}–{a['interval95'][1]:.3f}, n={a['n']}); "
            f"wall {b['seconds']:.0f} s before, {a['seconds']:.0f} s after (cold cache). One seed: the two pipelines draw different "
            "random batches, so this is a run-to-run comparison, not a paired one.",
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
    tta = results.get("time_to_accuracy")
    if tta:
        said.append(
            f"the seeds' recipe takes {ratio(tta['keras']['seconds'], tta['edgetl_seconds']):.2f}× edgetl's time to its test top-1"
        )
    acc = results.get("accuracy")
    if acc:
        delta = 100 * (acc["after"]["test_top1"] - acc["before"]["test_top1"])
        said.append(
            f"test top-1 moved {delta:+.2f} pt with the streamed pipeline (n={acc['after']['n']}, within the 95% intervals above)"
            if abs(delta) < 100 * (acc["after"]["interval95"][1] - acc["after"]["interval95"][0]) / 2
            else f"test top-1 moved {delta:+.2f} pt with the streamed pipeline (n={acc['after']['n']})"
        )
    return [f"**In short:** {'; '.join(said)}.", ""] if said else []


def write(results: dict[str, Any], out: Path) -> None:
    from edgetl.runtime.model_card import write_bytes_atomic  # noqa: PLC0415

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
    p.add_argument("--sections", default="memory,throughput,feature_pass,accuracy")
    p.add_argument("--work", type=Path, help="scratch folder (kept; default a new temporary one)")
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
    results.setdefault("params", {}).update({"base": str(args.base)})
    if "memory" in sections:
        results["params"].update({"px": args.px, "counts": args.counts})

    def save() -> None:  # after every section: a late failure keeps what was measured
        results["meta"] = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "minutes": round((time.monotonic() - started) / 60, 1),
            "cpu": f"{info.get('cpu_model', '?')}, {os.cpu_count()} logical CPUs",
            "load": os.getloadavg(),
        }
        write(results, args.output)

    if "memory" in sections:
        results["memory"] = memory(
            args.base, work, [int(c) for c in args.counts.split(",")], args.px, args.codes.split(",")
        )
        save()
    if "throughput" in sections:
        first = int(args.counts.split(",")[0])
        if not (work / f"fm{first}").exists():
            from edgetl.datasets import write_fashion_mnist_folder  # noqa: PLC0415

            write_fashion_mnist_folder(work / f"fm{first}", per_class=first // 10, seed=0, part="train")
        results["throughput"] = throughput(work / f"fm{first}", work, args.px, 0.35)
        save()
    if "feature_pass" in sections:
        results["feature_pass"] = feature_pass()
        save()
    if "accuracy" in sections:
        results["accuracy"] = accuracy(args.base, work, 300, 96)
        after = results["accuracy"]["after"]
        phases = json.loads((work / "acc-after" / "history.json").read_text())
        results["time_to_accuracy"] = {
            "edgetl_seconds": after["seconds"],
            "edgetl_phase_seconds": round(sum(p["seconds"] for p in phases), 1),
            "keras": keras_recipe(work / "acc-after", after["test_top1"]),
        }
    save()
    print(args.output / "BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
