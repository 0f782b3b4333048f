"""Time to accuracy and final accuracy: ``edgetl train`` (its defaults) vs the seeds' Keras recipe vs a linear
probe, on the same photos.

    python -m benchmarks.tta                                  # three datasets, ~1 h on 2 idle cores
    python -m benchmarks.tta --datasets fashion-mnist --px 96
    python -m benchmarks.tta --datasets colour-emoji --work W --reuse --train-seeds 42,43,44
    python -m benchmarks.tta --work W --add-before /tmp/base  # same --work: before vs after, 5 seeds

The datasets: Fashion-MNIST and Animal-MNIST (grey 28-px silhouettes) and colour-emoji
(``scripts/colour_emoji.py``: colour pictures whose test part shows other objects, drawn by
other vendors, on other photos). The seeds' recipe is what the Keras transfer-learning
tutorials do: the frozen MobileNetV2 recomputed on augmented batches every epoch (10
epochs, Adam 1e-3), then the top 30 layers fine-tuned (3 epochs, Adam 1e-5). The linear
probe is ``edgetl train`` with ``PROBE_FLAGS`` (frozen features, one softmax layer, no
augmentation, no fine-tune). ``edgetl train`` runs with its defaults (3 cached views,
early-stopped head, early-stopped fine-tune of the top 60 layers, kept only when the val
split says it helped) except ``--image-size``. All read the same pre-split folder (train /
val / test, each image in one split only) and decode it themselves from PNG, cold; all run
as fresh processes and are timed from their launch, so Python and TensorFlow start-up count.

"Reached" = the first epoch end at which a model's accuracy on the val split
(held out: no recipe trains on it; edgetl early-stops and decides on it) is at
least the seeds' recipe's final val accuracy; edgetl's per-epoch end times come
from its ``history.json`` (``epoch_end_unix``). Final test top-1 of the three is
compared on the test split, paired per image, with a 95% interval (Newcombe), seed by
seed (``SEEDS_PER_DATASET`` or ``--train-seeds``), and over seeds (Student t).
Each seed's figures are kept in ``--work`` (``--reuse`` keeps them instead of training again).
edgetl's ``history.json`` also says where its time went (start-up and pixel cache,
feature pass, head epochs, fine-tune), which gives a floor for any recipe that runs
each image through the backbone once. A re-run whose edgetl val curve and test top-1
come out the same as the last run's keeps that run's ``--add-before`` seeds; rows of
datasets not measured this time are kept from the last run, with their date. Writes the
``tta`` section of ``BENCHMARKS.md`` and ``benchmarks.json``; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from benchmarks.util import machine_info, markdown_table, write_section

ROOT = Path(__file__).resolve().parent.parent


SEEDS_HEAD_EPOCHS, SEEDS_FINE_EPOCHS, SEEDS_FINE_LAYERS = 10, 3, 30
# A linear probe: frozen-backbone features of each image as it is, one softmax layer, no dropout, no fine-tune.
PROBE_FLAGS = ["--cache-views", "1", "--no-augment", "--fine-tune-epochs", "0", "--dropout", "0"]
# Seeds per dataset: several where edgetl's margin over the others is within one seed's spread.
SEEDS_PER_DATASET = {"fashion-mnist": (42,), "animal-mnist": (42,), "colour-emoji": (42, 43, 44)}
TRAIN_PER_CLASS, VAL_PER_CLASS, TEST_PER_CLASS = 300, 100, 300
COLOUR_VAL_SHARE = 0.2  # colour-emoji: all its 1,959 training pictures, a fifth of each class's emoji held out for val
REUSE = False  # --reuse: keep the seeds already measured on this --work
REUSED: list[str] = []  # the seeds --reuse kept (named in the section)
QUICK = False  # --quick: a smoke run of the script itself (tiny data, 2 epochs); its figures mean nothing
ANIMAL_TEST_POOL = True  # Animal-MNIST's test split: its whole held-out pool (else TEST_PER_CLASS, --per-class)
SECTION = "tta"  # --section: the BENCHMARKS.md / benchmarks.json section written (e.g. tta_224 for another size)


def say(message: str) -> None:
    print(f"[bench_tta] {message}", file=sys.stderr, flush=True)


def _split_pool(pool: Path, out: Path, val_per_class: int) -> None:
    """Move ``val_per_class`` seeded images of each class of ``pool`` into ``out/val``, the rest into ``out/train``."""
    rng = np.random.default_rng(0)
    for cls in sorted(p.name for p in pool.iterdir() if p.is_dir()):
        files = sorted((pool / cls).iterdir())
        chosen = set(rng.permutation(len(files))[:val_per_class].tolist())
        for i, f in enumerate(files):
            target = out / ("val" if i in chosen else "train") / cls
            target.mkdir(parents=True, exist_ok=True)
            shutil.move(str(f), target / f.name)
    shutil.rmtree(pool)


def _split_pool_by_object(pool: Path, out: Path, share: float) -> None:
    """Move a seeded ``share`` of each class's *emoji* (both vendors' pictures of it) into ``out/val``.

    The pool holds the Apple and the Google drawing of each emoji: a split by picture
    would put one in train and the other in val, and val would measure recall of
    objects already seen. Held out by object, val asks what the test asks.
    """
    rng = np.random.default_rng(0)
    for cls in sorted(p.name for p in pool.iterdir() if p.is_dir()):
        files = sorted((pool / cls).iterdir())
        objects = sorted({f.name.split("_")[2] for f in files})  # train_<vendor>_<code point>_v<view>.png
        chosen = {objects[i] for i in rng.permutation(len(objects))[: max(1, round(share * len(objects)))]}
        for f in files:
            target = out / ("val" if f.name.split("_")[2] in chosen else "train") / cls
            target.mkdir(parents=True, exist_ok=True)
            shutil.move(str(f), target / f.name)
    shutil.rmtree(pool)


def write_data(work: Path, name: str) -> Path:
    """A pre-split folder: 300 train + 100 val images per class from the training pool, test from the held-out pool."""
    out = work / name
    if out.exists():
        return out
    per = TRAIN_PER_CLASS + VAL_PER_CLASS
    test = TEST_PER_CLASS
    if name == "fashion-mnist":
        from edgetl.data.fashion_mnist import write_fashion_mnist_folder

        write_fashion_mnist_folder(work / f"{name}-pool", per_class=per, seed=0, part="train")
        write_fashion_mnist_folder(out / "test", per_class=test, seed=0, part="test")
    elif name == "colour-emoji":
        script = str(ROOT / "scripts" / "colour_emoji.py")
        for part, folder in (("train", work / f"{name}-pool"), ("test", out / "test")):
            count = ["--per-class", str(per if part == "train" else test)] if QUICK else []
            subprocess.run(
                [sys.executable, script, str(folder), "--part", part, *count], check=True, stdout=subprocess.DEVNULL
            )
        _split_pool_by_object(work / f"{name}-pool", out, COLOUR_VAL_SHARE)
        return out
    elif name == "animal-mnist":
        script = str(ROOT / "scripts" / "animal_mnist.py")
        for part, folder, count in (
            ("train", work / f"{name}-pool", per),
            ("test", out / "test", 0 if ANIMAL_TEST_POOL and not QUICK else test),
        ):
            subprocess.run(
                [sys.executable, script, str(folder), "--part", part, "--per-class", str(count), "--seed", "0"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
    else:
        raise SystemExit(f"unknown dataset {name}")
    _split_pool(work / f"{name}-pool", out, VAL_PER_CLASS)
    return out


def run_edgetl(data: Path, run: Path, px: int, cache: Path, flags: Sequence[str] = ()) -> dict[str, Any]:
    """``edgetl train`` (its defaults, or ``flags``) as a fresh process; per-epoch val accuracy at seconds since launch."""
    env = {**os.environ, "EDGETL_PIXEL_CACHE": str(cache)}
    command = [
        sys.executable,
        "-m",
        "edgetl",
        "train",
        str(data),
        "-o",
        str(run),
        "--image-size",
        str(px),
        *flags,
        "-q",
    ]
    if QUICK:
        command += ["--epochs", "2"] + ([] if "--fine-tune-epochs" in flags else ["--fine-tune-epochs", "1"])
    say(" ".join(command[1:]))
    launch = time.time()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    total = time.time() - launch
    history = json.loads((run / "history.json").read_text())
    curve = []
    for phase in history:
        for acc, end in zip(phase["val_accuracy"], phase["epoch_end_unix"]):
            curve.append({"phase": phase["phase"], "val_top1": round(acc, 4), "seconds": round(end - launch, 1)})
    return {
        "seconds": round(total, 1),
        "curve": curve,
        "split": time_split(history, launch),
        "decision": history[-1].get("decision"),
        "command": " ".join(["edgetl", *command[3:]]),
    }


def time_split(history: list[dict[str, Any]], launch: float) -> dict[str, float]:
    """Where edgetl's time went, from its ``history.json``: seconds from launch to the head phase (interpreter,
    TensorFlow, data listing, pixel cache), the backbone feature pass, the head epochs, and the fine-tune's start.

    The head phase's recorded ``seconds`` cover the feature pass and its epochs; the feature pass is that minus
    the epochs, whose length is the spacing of their ends (the first one's taken as the mean of the others).
    """
    head = history[0]
    ends = head["epoch_end_unix"]
    epoch = (ends[-1] - ends[0]) / (len(ends) - 1) if len(ends) > 1 else 0.0
    head_start = ends[-1] - head["seconds"]
    head_epochs = ends[-1] - ends[0] + epoch
    return {
        "startup_and_pixels": round(head_start - launch, 1),
        "features": round(head["seconds"] - head_epochs, 1),
        "views": int(head.get("views", 0)),
        "head_epochs": round(head_epochs, 1),
        "fine_tune_start": round(ends[-1] - launch, 1),
    }


def run_seeds(run: Path, px: int, out: Path, seed: int = 42) -> dict[str, Any]:
    """The seeds' recipe as a fresh process on ``run``'s splits; per-epoch val accuracy at seconds since launch."""
    launch = time.time()
    command = [sys.executable, "-m", "benchmarks.tta", "--seeds-recipe", str(run), str(out), "--px", str(px)]
    command += ["--seed", str(seed)] + (["--quick"] if QUICK else [])
    subprocess.run(command, check=True, cwd=ROOT)
    record = json.loads(out.read_text())
    del record["test_labels"]  # stays in ``out`` for the paired comparisons; not a figure for benchmarks.json
    for row in record["curve"]:
        row["seconds"] = round(row.pop("end_unix") - launch, 1)
    record["seconds"] = record["curve"][-1]["seconds"]
    return record


def seeds_recipe(run: Path, out: Path, px: int, seed: int = 42) -> None:
    """Child process: decode the run's splits, train as the tutorials do, record val/test after every epoch."""
    from edgetl import data
    from edgetl.config import TrainConfig
    from edgetl.data import feed
    from edgetl.model import classifier as model

    pixels = {}
    for split in ("train", "val", "test"):
        dataset, items = data.load_split(run, split)
        images, kept, _ = dataset.pixels(items, px, warn=False)
        pixels[split] = images, np.asarray([it.label for it in kept])
    classes = len(dataset.class_names)
    built = model.build(TrainConfig(data="-", output="-", image_size=px, seed=seed), classes)
    k = model.keras()
    k.utils.set_random_seed(seed)
    norm = built.normalization
    built.full.compile(k.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    seq = feed.make_sequence(*pixels["train"], norm, 32, seed, True)
    curve, paused = [], 0.0
    head_epochs, fine_epochs = (1, 1) if QUICK else (SEEDS_HEAD_EPOCHS, SEEDS_FINE_EPOCHS)
    for epoch in range(head_epochs + fine_epochs):
        if epoch == head_epochs:
            model.unfreeze_top(built, SEEDS_FINE_LAYERS)
            built.full.compile(k.optimizers.Adam(1e-5), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        built.full.fit(seq, epochs=1, verbose=0)
        end = time.time() - paused  # the evaluation below is the benchmark's, not the recipe's: not counted
        start = time.time()
        val = float((feed.predict(built.full, pixels["val"][0], norm).argmax(1) == pixels["val"][1]).mean())
        curve.append({"epoch": epoch + 1, "val_top1": round(val, 4), "end_unix": end})
        say(f"seeds' recipe epoch {epoch + 1}: val top-1 {val:.4f}")
        paused += time.time() - start
    test_pred = feed.predict(built.full, pixels["test"][0], norm).argmax(1)
    np.save(out.with_suffix(".test_pred.npy"), test_pred)
    out.write_text(json.dumps({"curve": curve, "test_labels": pixels["test"][1].tolist()}))


def edgetl_test_predictions(run: Path, px: int) -> np.ndarray:
    from edgetl import data
    from edgetl.data import feed
    from edgetl.model import classifier as model

    dataset, items = data.load_split(run, "test")
    images, _, _ = dataset.pixels(items, px, warn=False)
    return feed.predict(model.load(str(run / "model.keras")), images, model.MOBILENET_NORMALIZATION).argmax(1)


def _test_top1(ok: np.ndarray) -> dict[str, Any]:
    from edgetl import stats as verdict

    lo, hi = verdict.wilson(int(ok.sum()), len(ok))
    return {"top1": round(float(ok.mean()), 4), "interval95": [round(lo, 4), round(hi, 4)], "n": len(ok)}


def _gain(ref_ok: np.ndarray, new_ok: np.ndarray) -> list[float]:
    """New minus reference test top-1 in points, paired on the same images, with its 95% interval (Newcombe)."""
    from edgetl import stats as verdict

    diff, low, high = verdict.paired_difference(ref_ok, new_ok)  # reference minus new
    return [round(-100 * v, 2) for v in (diff, high, low)]


def one_seed(name: str, work: Path, px: int, seed: int) -> dict[str, Any]:
    """edgetl's default, the seeds' recipe and a linear probe, trained with ``seed`` on the same splits.

    The seed's figures are kept in ``work/NAME-record[-seedS].json``; with ``--reuse`` a seed
    whose record is there (an interrupted or earlier run on the same ``--work``) is not trained again.
    """
    data, tag = write_data(work, name), "" if seed == 42 else f"-seed{seed}"
    record = work / f"{name}-record{tag}.json"
    if REUSE and record.exists():
        say(f"{name} seed {seed}: reusing {record.name}")
        REUSED.append(f"{name} seed {seed}")
        return json.loads(record.read_text())
    cache = work / f"cache-{name}-{os.getpid()}"
    runs = {side: work / f"{name}-{side}{tag}" for side in ("edgetl", "probe")}
    for run in runs.values():
        shutil.rmtree(run, ignore_errors=True)
    edgetl = run_edgetl(data, runs["edgetl"], px, cache, ["--seed", str(seed)])
    seeds = run_seeds(runs["edgetl"], px, work / f"{name}-seeds{tag}.json", seed)
    probe = run_edgetl(data, runs["probe"], px, cache, [*PROBE_FLAGS, "--seed", str(seed)])
    labels = np.asarray(json.loads((work / f"{name}-seeds{tag}.json").read_text())["test_labels"])
    ok = {
        "seeds": np.load(work / f"{name}-seeds{tag}.test_pred.npy") == labels,
        "edgetl": edgetl_test_predictions(runs["edgetl"], px) == labels,
        "probe": edgetl_test_predictions(runs["probe"], px) == labels,
    }
    say(f"{name} seed {seed}: " + ", ".join(f"{k} {100 * v.mean():.2f}%" for k, v in ok.items()))
    out = {
        "seed": seed,
        "edgetl": {**edgetl, "test": _test_top1(ok["edgetl"])},
        "seeds": {**seeds, "test": _test_top1(ok["seeds"])},
        "probe": {"seconds": probe["seconds"], "command": probe["command"], "test": _test_top1(ok["probe"])},
        "edgetl_minus_seeds_pt": _gain(ok["seeds"], ok["edgetl"]),
        "edgetl_minus_probe_pt": _gain(ok["probe"], ok["edgetl"]),
    }
    record.write_text(json.dumps(out))
    return out


def compare(name: str, work: Path, px: int, seeds: Sequence[int] = (42,)) -> dict[str, Any]:
    """Three recipes on one dataset: time to the seeds' final val accuracy (first seed), final test top-1 per seed."""
    from edgetl import stats as verdict

    per_seed = [one_seed(name, work, px, seed) for seed in seeds]
    first, data = per_seed[0], work / name
    seeds_run, edgetl = first["seeds"], first["edgetl"]
    target = seeds_run["curve"][-1]["val_top1"]
    reached = next((row for row in edgetl["curve"] if row["val_top1"] >= target), None)
    n_val = len(list((data / "val").rglob("*.png")))
    return {
        "dataset": name,
        "px": px,
        "train_images": len(list((data / "train").rglob("*.png"))),
        "val_images": n_val,
        "target_val_top1": target,
        "target_interval95": [round(v, 4) for v in verdict.wilson(round(target * n_val), n_val)],
        "seeds": seeds_run,
        "edgetl": {**edgetl, "reached": reached},
        "probe": first["probe"],
        "speedup_to_target": round(seeds_run["seconds"] / reached["seconds"], 2) if reached else None,
        "test_gain_pt": first["edgetl_minus_seeds_pt"],
        "per_seed": [_brief(r) for r in per_seed],
        "over_seeds": _over_seeds(per_seed),
    }


def _brief(r: dict[str, Any]) -> dict[str, Any]:
    """One seed's test top-1 of each recipe, its paired gains, times and edgetl's fine-tune decision."""
    decision = r["edgetl"].get("decision") or {}
    return {
        "seed": r["seed"],
        "test": {side: r[side]["test"] for side in ("edgetl", "seeds", "probe")},
        "seconds": {side: r[side]["seconds"] for side in ("edgetl", "seeds", "probe")},
        "edgetl_minus_seeds_pt": r["edgetl_minus_seeds_pt"],
        "edgetl_minus_probe_pt": r["edgetl_minus_probe_pt"],
        "fine_tune_kept": decision.get("kept"),
    }


def _over_seeds(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean test top-1 of each recipe over seeds; edgetl's mean paired gains, 95% Student t over seeds (one seed: its
    paired interval over test images)."""
    out: dict[str, Any] = {"n_seeds": len(per_seed)}
    for side in ("edgetl", "seeds", "probe"):
        values = np.array([100 * r[side]["test"]["top1"] for r in per_seed])
        sd = round(float(values.std(ddof=1)), 2) if len(values) > 1 else None
        out[side] = {"mean": round(float(values.mean()), 2), "sd": sd}
    for ref in ("seeds", "probe"):
        gains = np.array([r[f"edgetl_minus_{ref}_pt"][0] for r in per_seed])
        interval = _t_interval(gains) if len(gains) > 1 else per_seed[0][f"edgetl_minus_{ref}_pt"][1:]
        out[f"edgetl_minus_{ref}_pt"] = [round(float(gains.mean()), 2), *interval]
    return out


# Today's default recipe spelled out, for the code before the pixel cache (its defaults differed).
RECIPE_FLAGS = ["--epochs", "20", "--fine-tune-epochs", "10", "--fine-tune-layers", "60"]
RECIPE_FLAGS += ["--fine-tune-learning-rate", "1e-4", "--patience", "3", "--cache-views", "3"]


def _train(work: Path, name: str, px: int, seed: int, base: Optional[Path]) -> tuple[Path, float]:
    """``edgetl train`` (today's code, or ``base``'s) with the default recipe and ``seed``; its run folder and wall time."""
    side = "base" if base else "edgetl"
    run = work / (f"{name}-{side}" if seed == 42 and base else f"{name}-{side}-seed{seed}")
    if seed == 42 and not base:
        return work / f"{name}-edgetl", 0.0  # the time-to-accuracy run itself
    shutil.rmtree(run, ignore_errors=True)
    module = "toolchain" if base else "edgetl"
    command = [sys.executable, "-m", module, "train", str(work / name), "-o", str(run), "--image-size", str(px)]
    command += RECIPE_FLAGS + ["--seed", str(seed), "-q"]
    env = {**os.environ, "PYTHONPATH": str(base)} if base else {**os.environ, "EDGETL_PIXEL_CACHE": str(work / "cache")}
    say(f"{'before' if base else 'after'}, seed {seed}: {' '.join(command[1:])}")
    start = time.time()
    subprocess.run(command, env=env, cwd=str(base or ROOT), check=True, stdout=subprocess.DEVNULL)
    return run, time.time() - start


T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def _t_interval(values: np.ndarray) -> list[float]:
    """95% Student-t interval of the mean of ``values`` (one per seed: seeds are the unit of training noise)."""
    half = T975.get(len(values) - 1, 1.96) * float(np.std(values, ddof=1)) / np.sqrt(len(values))
    return [round(float(np.mean(values)) - half, 2), round(float(np.mean(values)) + half, 2)]


def before(row: dict[str, Any], work: Path, base: Path, seeds: Sequence[int]) -> dict[str, Any]:
    """The same recipe and data through ``base`` (the in-memory pipeline) and today's code, seed by seed.

    One seed's paired interval only covers which test images were drawn; the two pipelines
    draw different augmentations from the same seed, so training noise shows only across
    seeds: the mean difference over ``seeds`` and each code's seed-to-seed spread are given.
    """
    from edgetl import stats as verdict

    name, px = row["dataset"], row["px"]
    labels = np.asarray(json.loads((work / f"{name}-seeds.json").read_text())["test_labels"])

    def top1(ok: np.ndarray) -> dict[str, Any]:
        lo, hi = verdict.wilson(int(ok.sum()), len(ok))
        return {"top1": round(float(ok.mean()), 4), "interval95": [round(lo, 4), round(hi, 4)], "n": len(ok)}

    per_seed = []
    earlier = row.get("before") or {}
    done = {r["seed"]: r for r in earlier.get("seeds", [])}  # an earlier --add-before run on this --work
    for seed in seeds:
        old_run = work / (f"{name}-base" if seed == 42 else f"{name}-base-seed{seed}")
        new_run = work / (f"{name}-edgetl" if seed == 42 else f"{name}-edgetl-seed{seed}")
        if seed in done and (old_run / "model.keras").exists() and (new_run / "model.keras").exists():
            seconds = done[seed]["seconds"]
        elif seed == 42 and earlier and (old_run / "model.keras").exists():
            seconds = earlier["seconds"]  # seed 42's after-run is the time-to-accuracy run
        else:
            old_run, seconds = _train(work, name, px, seed, base)
            new_run, _ = _train(work, name, px, seed, None)
        old_ok = edgetl_test_predictions(old_run, px) == labels
        new_ok = edgetl_test_predictions(new_run, px) == labels
        diff, low, high = verdict.paired_difference(old_ok, new_ok)  # before minus after
        per_seed.append(
            {
                "seed": seed,
                "seconds": round(seconds, 1),
                "test": top1(old_ok),
                "after_test": top1(new_ok),
                "after_minus_before_pt": [round(-100 * v, 2) for v in (diff, high, low)],
            }
        )
    first = per_seed[0]
    olds = [100 * r["test"]["top1"] for r in per_seed]
    news = [100 * r["after_test"]["top1"] for r in per_seed]
    return {
        **{k: first[k] for k in ("seconds", "test", "after_minus_before_pt")},
        "seeds": per_seed,
        "mean_after_minus_before_pt": round(float(np.mean(news) - np.mean(olds)), 2),
        "mean_interval95_pt": _t_interval(np.subtract(news, olds)) if len(seeds) > 1 else None,
        "seed_sd_pt": {"before": round(float(np.std(olds, ddof=1)), 2), "after": round(float(np.std(news, ddof=1)), 2)}
        if len(seeds) > 1
        else None,
        "base": str(base),
    }


def _last_section(out: Path) -> dict[str, Any]:
    """The ``tta`` section an earlier run wrote to ``out``'s ``benchmarks.json`` (empty if none)."""
    path = out / "benchmarks.json"
    return json.loads(path.read_text()).get("sections", {}).get(SECTION, {}) if path.exists() else {}


def _keep_before(rows: list[dict[str, Any]], out: Path) -> None:
    """Keep an earlier ``--add-before`` comparison for a dataset whose seed-42 run came out the same again.

    Training is deterministic for a seed on CPU, so a re-run with the same val top-1 after every epoch
    and the same test top-1 on the same images is taken as the same model: its before/after seeds still hold.
    """
    earlier = {r["dataset"]: r for r in _last_section(out).get("rows", []) if r.get("before")}
    for row in rows:
        prev = earlier.get(row["dataset"])
        if not prev or prev["edgetl"]["test"] != row["edgetl"]["test"]:
            continue
        if [c["val_top1"] for c in prev["edgetl"]["curve"]] == [c["val_top1"] for c in row["edgetl"]["curve"]]:
            row["before"] = prev["before"]
            say(f"{row['dataset']}: same val curve and test top-1 as the last run, its before/after seeds are kept")


def _with_other_rows(rows: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
    """This run's rows after the last run's rows of the datasets it did not measure (each keeps its date)."""
    last = _last_section(out)
    measured = {r["dataset"] for r in rows}
    others = [r for r in last.get("rows", []) if r["dataset"] not in measured]
    for r in others:
        r.setdefault("measured", last.get("meta", {}).get("date"))
    return others + rows


def render(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "## Time to accuracy: `edgetl train` vs the seeds' Keras recipe and a linear probe (`benchmarks/tta.py`)"
        + ("" if SECTION == "tta" else f", {', '.join(sorted({str(r['px']) + ' px' for r in rows}))}"),
        "",
        f"Measured {meta['date']} ({meta['minutes']} min), {meta['cpu']}, load average {meta['load']} at the end"
        + (
            f" ({', '.join(meta['reused'])}: measured by earlier invocations on the same `--work`, `--reuse`). "
            if meta.get("reused")
            else ". "
        )
        + f"Fashion-MNIST and Animal-MNIST: {TRAIN_PER_CLASS} train + {VAL_PER_CLASS} val images per class from the "
        "training pool, the test split from the held-out pool. colour-emoji (`scripts/colour_emoji.py`): all 1,959 "
        "training pictures (Apple + Google emoji artwork on five photos), a fifth of each class's emoji held out as "
        "val (both drawings of an emoji in one split), test = 1,297 pictures of *other* emoji drawn by Twitter and "
        "Facebook on four other photos. MobileNetV2 1.0 with the offline ImageNet weights at the size shown. "
        f"Seeds' recipe: backbone recomputed on augmented batches every epoch ({SEEDS_HEAD_EPOCHS} epochs, Adam 1e-3), "
        f"then the top {SEEDS_FINE_LAYERS} layers ({SEEDS_FINE_EPOCHS} epochs, 1e-5). `edgetl train`: its defaults "
        "(3 cached views, early-stopped head, then the top 60 layers at 1e-4, early-stopped, kept only when the "
        "val split says it helped). Both are fresh "
        "processes timed from launch (interpreter, TensorFlow import, cold PNG decoding included); the seeds' "
        "per-epoch evaluation is not counted. *Target* = the seeds' final val top-1; *reached* = edgetl's first "
        "epoch end at or above it.",
        "",
    ]
    if meta.get("note"):  # what a reader must know about this section's runs (set when the rows are assembled)
        lines += [meta["note"], ""]
    table = []
    for r in rows:
        reached = r["edgetl"]["reached"]
        table.append(
            [
                f"{r['dataset']} ({r['train_images']:,} train, {r['px']} px)"
                + (f", measured {r['measured'][:10]}" if r.get("measured") else ""),
                f"{100 * r['target_val_top1']:.2f}% [{100 * r['target_interval95'][0]:.1f}, "
                f"{100 * r['target_interval95'][1]:.1f}] (n={r['val_images']:,})",
                f"{r['seeds']['seconds']:.0f} s",
                f"{reached['seconds']:.1f} s ({reached['phase']})" if reached else "not reached",
                f"**{r['speedup_to_target']:.1f}×**" if r["speedup_to_target"] else "–",
                f"{r['edgetl']['seconds']:.0f} s",
            ]
        )
    lines += [
        markdown_table(
            [
                "data",
                "target (seeds' final val top-1)",
                "seeds' recipe, whole",
                "edgetl reached it at",
                "speed-up",
                "edgetl, whole",
            ],
            table,
        ),
        "",
    ]
    lines += _time_split_lines(rows)
    lines += _accuracy_lines(rows)
    olds = [r for r in rows if r.get("before")]
    if olds:
        lines += [
            "**Before and after the pixel cache.** The same recipe and data through the code before it (every split "
            "decoded into memory, `feed.make_sequence` batches; its defaults differed, so today's are given as flags), "
            "seed by seed. A paired interval covers only the draw of test images; the two pipelines draw different "
            "augmentations from one seed, so the seed-to-seed spread is the training noise to compare against:",
            "",
            markdown_table(
                [
                    "data",
                    "seed",
                    "before (in-memory)",
                    "after (pixel cache + tf.data)",
                    "after − before (pt, paired 95%)",
                ],
                [
                    [
                        r["dataset"],
                        str(s["seed"]),
                        _top1(s["test"]),
                        _top1(s["after_test"]),
                        "{:+.2f} [{:+.2f}, {:+.2f}]".format(*s["after_minus_before_pt"]),
                    ]
                    for r in olds
                    for s in r["before"].get("seeds", [])
                ],
            ),
            "",
        ]
        for r in olds:
            b = r["before"]
            if b.get("seed_sd_pt"):
                lines.append(
                    f"- {r['dataset']}: mean over {len(b['seeds'])} seeds after − before "
                    f"**{b['mean_after_minus_before_pt']:+.2f} pt** (95% over seeds, Student t: "
                    f"[{b['mean_interval95_pt'][0]:+.2f}, {b['mean_interval95_pt'][1]:+.2f}]); "
                    "seed-to-seed standard deviation of test top-1 "
                    f"{b['seed_sd_pt']['before']:.2f} pt before, {b['seed_sd_pt']['after']:.2f} pt after."
                )
        lines.append("")
    return "\n".join(lines)


def _pt(gain: Optional[Sequence[float]]) -> str:
    if gain is None:
        return "–"
    return "{:+.2f} [{:+.2f}, {:+.2f}]".format(*(v + 0.0 for v in gain))  # + 0.0: no "-0.00"


def _before_probe(r: dict[str, Any]) -> dict[str, Any]:
    """A row measured before the linear probe joined (one seed, no probe) in the shape of ``_over_seeds``."""
    test = {side: r[side]["test"] for side in ("edgetl", "seeds")}
    test["probe"] = None
    r["per_seed"] = [
        {
            "seed": 42,
            "test": test,
            "seconds": {"seeds": r["seeds"]["seconds"], "probe": None, "edgetl": r["edgetl"]["seconds"]},
            "edgetl_minus_seeds_pt": r["test_gain_pt"],
            "edgetl_minus_probe_pt": None,
            "fine_tune_kept": None,
        }
    ]
    out: dict[str, Any] = {side: {"mean": round(100 * t["top1"], 2), "sd": None} for side, t in test.items() if t}
    return {
        **out,
        "n_seeds": 1,
        "probe": None,
        "edgetl_minus_seeds_pt": r["test_gain_pt"],
        "edgetl_minus_probe_pt": None,
    }


def _mean(figures: Optional[dict[str, Any]]) -> str:
    if figures is None:
        return "–"
    sd = figures["sd"]
    return f"{figures['mean']:.2f}%" + (f" (sd {sd:.2f})" if sd is not None else "")


def _accuracy_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Final test top-1 of the three recipes (mean over seeds) and edgetl's paired gains, then seed by seed."""
    table, seeds_table, gains = [], [], []
    for r in rows:
        o = r.get("over_seeds") or _before_probe(r)
        gains.append(o["edgetl_minus_seeds_pt"][0])
        n = r["per_seed"][0]["test"]["edgetl"]["n"]
        table.append(
            [
                r["dataset"],
                *(_mean(o[side]) for side in ("seeds", "probe", "edgetl")),
                _pt(o["edgetl_minus_seeds_pt"]),
                _pt(o["edgetl_minus_probe_pt"]),
                f"{n:,} × {o['n_seeds']}",
            ]
        )
        for p in r["per_seed"]:
            t = p["test"]
            seeds_table.append(
                [
                    r["dataset"],
                    str(p["seed"]),
                    _top1(t["seeds"]),
                    _top1(t["probe"]),
                    _top1(t["edgetl"]),
                    _pt(p["edgetl_minus_seeds_pt"]),
                    _pt(p["edgetl_minus_probe_pt"]),
                    {True: "kept", False: "dropped", None: "–"}[p["fine_tune_kept"]],
                    " / ".join(
                        "–" if p["seconds"][k] is None else f"{p['seconds'][k]:.0f}"
                        for k in ("seeds", "probe", "edgetl")
                    ),
                ]
            )
    return [
        "Final test top-1 of the three recipes trained on the same images, paired on the same test images. "
        f"*Linear probe*: `edgetl train {' '.join(PROBE_FLAGS)}` (frozen features, one softmax layer). Gains are "
        "edgetl minus the other recipe in points: over several seeds, the mean of the per-seed paired differences "
        "with a 95% Student-t interval over seeds (seeds are the unit of training noise); over one seed, the paired "
        "95% interval over test images (Newcombe).",
        "",
        markdown_table(
            [
                "data",
                "seeds' recipe",
                "linear probe",
                "edgetl default",
                "edgetl − seeds (pt, 95%)",
                "edgetl − probe (pt, 95%)",
                "test images × seeds",
            ],
            table,
        ),
        "",
        f"Mean edgetl − seeds over the {len(gains)} datasets: **{np.mean(gains):+.2f} pt**. Seed by seed (test "
        "top-1 with its 95% Wilson interval; gains paired per image, Newcombe; *fine-tune* = what edgetl's val split "
        "decided; seconds under load, each a fresh process):",
        "",
        markdown_table(
            [
                "data",
                "seed",
                "seeds' recipe",
                "linear probe",
                "edgetl",
                "edgetl − seeds",
                "edgetl − probe",
                "fine-tune",
                "s: seeds / probe / edgetl",
            ],
            seeds_table,
        ),
        "",
    ]


def _time_split_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The table of where edgetl's time went, and the fastest any once-through-the-backbone recipe could be here."""
    table, bounds, heads = [], [], []
    spans = [100 * (r["target_interval95"][1] - r["target_interval95"][0]) for r in rows]
    for r in rows:
        split, reached = r["edgetl"].get("split"), r["edgetl"]["reached"]
        if not split or not split["views"]:
            continue
        seen = split["views"] * r["train_images"] + r["val_images"]
        rate = seen / split["features"]
        once = split["startup_and_pixels"] + (r["train_images"] + r["val_images"]) / rate
        in_fine_tune = reached and reached["phase"] == "fine-tune"
        to_target = f"{reached['seconds'] - split['fine_tune_start']:.1f} s" if in_fine_tune else "–"
        table.append(
            [
                r["dataset"],
                f"{split['startup_and_pixels']:.1f} s",
                f"{split['features']:.1f} s ({seen:,} images, {rate:.0f}/s)",
                f"{split['head_epochs']:.1f} s",
                to_target,
                f"{once:.1f} s = {r['seeds']['seconds'] / once:.1f}×",
            ]
        )
        bounds.append(r["seeds"]["seconds"] / once)
        head = max(c["val_top1"] for c in r["edgetl"]["curve"] if c["phase"].startswith("head"))
        heads.append(f"{r['dataset']} {100 * head:.1f}% vs {100 * r['target_val_top1']:.1f}%")
    if not table:
        return []
    return [
        "Where edgetl's time went (from its `history.json`): launch to the head phase (interpreter, TensorFlow "
        "import, data listing, decoding into the pixel cache), the backbone feature pass over the cached views and "
        "the val split, the head epochs on those features, and the fine-tune until the target. The last column is a "
        "floor for *any* recipe that runs every train and val image through the backbone once on this machine: the "
        "same start-up plus one pass at the measured feature rate, and the speed-up it would give at best.",
        "",
        markdown_table(
            [
                "data",
                "start-up + pixels",
                "feature pass",
                "head epochs",
                "fine-tune to target",
                "floor: start-up + one pass",
            ],
            table,
        ),
        "",
        (
            f"So a 10× speed-up to the seeds' accuracy is out of reach here for any such recipe (at most "
            f"{max(bounds):.1f}×). "
            if max(bounds) < 10
            else f"The floor allows up to {max(bounds):.1f}×. "
        )
        + "Best val top-1 of edgetl's cached head phase vs the target: "
        + "; ".join(heads)
        + ". Past the head, every fine-tune epoch costs a backbone forward and backward pass per image. The target "
        f"is itself one noisy figure (its 95% interval above spans {_span(spans)} pt), so where "
        "it falls between edgetl's "
        "head and fine-tune epochs decides the speed-up: read the ratio with that interval in mind.",
        "",
    ]


def _span(spans: Sequence[float]) -> str:
    low, high = round(min(spans)), round(max(spans))
    return f"about {low}" if low == high else f"{low}–{high}"


def _top1(t: Optional[dict[str, Any]]) -> str:
    if t is None:
        return "–"
    return f"{100 * t['top1']:.2f}% [{100 * t['interval95'][0]:.2f}, {100 * t['interval95'][1]:.2f}]"


def main(argv: Optional[Sequence[str]] = None) -> int:
    global REUSE, SECTION, TRAIN_PER_CLASS, VAL_PER_CLASS, TEST_PER_CLASS, QUICK, ANIMAL_TEST_POOL
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="fashion-mnist,animal-mnist,colour-emoji")
    p.add_argument("--px", type=int, default=96)
    p.add_argument("--work", type=Path, help="scratch folder (kept; default a new temporary one)")
    p.add_argument("--output", type=Path, default=ROOT)
    p.add_argument(
        "--add-before",
        type=Path,
        metavar="BASE",
        help="run the code before the pixel cache (a checkout, e.g. git worktree add --detach /tmp/base 2d7f1a6) on "
        "the data of the last run (same --work) and add its paired test top-1 to the section",
    )
    p.add_argument(
        "--seeds",
        default="42,43,44,45,46",
        help="with --add-before: the seeds to train both codes with (42 = the time-to-accuracy run's, reused)",
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke-test the script: tiny data, 2 epochs, written to the scratch folder"
    )
    p.add_argument("--seeds-recipe", nargs=2, type=Path, metavar=("RUN", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=42, help=argparse.SUPPRESS)
    p.add_argument(
        "--train-seeds",
        help="seeds to train every recipe with on every dataset, e.g. 42,43,44 (default: 42 on the grey sets, "
        "42,43,44 on colour-emoji, where the recipes are closer than one seed's spread)",
    )
    p.add_argument(
        "--per-class",
        metavar="TRAIN,VAL,TEST",
        help=f"Fashion-MNIST / Animal-MNIST images per class (default {TRAIN_PER_CLASS},{VAL_PER_CLASS},"
        f"{TEST_PER_CLASS}, Animal-MNIST's test then its whole held-out pool); a new --work for other counts",
    )
    p.add_argument("--section", default=SECTION, help="the BENCHMARKS.md section to write, e.g. tta_224")
    p.add_argument(
        "--reuse", action="store_true", help="keep the seeds already measured on this --work (their record files)"
    )
    args = p.parse_args(argv)
    REUSE, SECTION = args.reuse, args.section
    if args.per_class:
        TRAIN_PER_CLASS, VAL_PER_CLASS, TEST_PER_CLASS = (int(v) for v in args.per_class.split(","))
        ANIMAL_TEST_POOL = False
    if args.quick:
        QUICK, TRAIN_PER_CLASS, VAL_PER_CLASS, TEST_PER_CLASS = True, 20, 10, 20
    if args.seeds_recipe:
        seeds_recipe(*args.seeds_recipe, args.px, args.seed)
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-tta-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.add_before:
        out = work if QUICK else args.output
        section = _last_section(out)
        for row in section["rows"]:
            row["seeds"].pop("test_labels", None)  # written by runs before 2026-12-05
            row["before"] = before(row, work, args.add_before, [int(v) for v in args.seeds.split(",")])
        write_section(out, SECTION, render(section["rows"], section["meta"]), section)
        return 0
    started, info = time.monotonic(), machine_info()
    chosen = [int(v) for v in args.train_seeds.split(",")] if args.train_seeds else None
    rows = [compare(n, work, args.px, chosen or SEEDS_PER_DATASET.get(n, (42,))) for n in args.datasets.split(",")]
    _keep_before(rows, work if QUICK else args.output)
    rows = _with_other_rows(rows, work if QUICK else args.output)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "minutes": round((time.monotonic() - started) / 60, 1),
        "cpu": f"{info.get('cpu_model', '?')}, {os.cpu_count()} logical CPUs",
        "load": ", ".join(f"{v:.1f}" for v in os.getloadavg()),
        "reused": REUSED,
    }
    write_section(work if QUICK else args.output, SECTION, render(rows, meta), {"meta": meta, "rows": rows})
    for r in rows:
        print(json.dumps({k: r.get(k) for k in ("dataset", "speedup_to_target", "test_gain_pt", "over_seeds")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
