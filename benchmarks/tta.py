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

from benchmarks.seeds_recipe import run_seeds
from benchmarks.tta_before import before, edgetl_test_predictions, say
from benchmarks.tta_table import (
    PROBE_FLAGS,
    brief,
    over_seeds,
    paired_gain,
    render,
    test_top1,
    time_split,
)
from benchmarks.util import machine_info, write_section

ROOT = Path(__file__).resolve().parent.parent


# A linear probe: frozen-backbone features of each image as it is, one softmax layer, no dropout, no fine-tune.
# Seeds per dataset: several where edgetl's margin over the others is within one seed's spread.
SEEDS_PER_DATASET = {"fashion-mnist": (42,), "animal-mnist": (42,), "colour-emoji": (42, 43, 44)}
TRAIN_PER_CLASS, VAL_PER_CLASS, TEST_PER_CLASS = 300, 100, 300
COLOUR_VAL_SHARE = 0.2  # colour-emoji: all its 1,959 training pictures, a fifth of each class's emoji held out for val
REUSE = False  # --reuse: keep the seeds already measured on this --work
REUSED: list[str] = []  # the seeds --reuse kept (named in the section)
QUICK = False  # --quick: a smoke run of the script itself (tiny data, 2 epochs); its figures mean nothing
ANIMAL_TEST_POOL = True  # Animal-MNIST's test split: its whole held-out pool (else TEST_PER_CLASS, --per-class)
SECTION = "tta"  # --section: the BENCHMARKS.md / benchmarks.json section written (e.g. tta_224 for another size)


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
    seeds = run_seeds(runs["edgetl"], px, work / f"{name}-seeds{tag}.json", seed, QUICK)
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
        "edgetl": {**edgetl, "test": test_top1(ok["edgetl"])},
        "seeds": {**seeds, "test": test_top1(ok["seeds"])},
        "probe": {"seconds": probe["seconds"], "command": probe["command"], "test": test_top1(ok["probe"])},
        "edgetl_minus_seeds_pt": paired_gain(ok["seeds"], ok["edgetl"]),
        "edgetl_minus_probe_pt": paired_gain(ok["probe"], ok["edgetl"]),
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
        "per_seed": [brief(r) for r in per_seed],
        "over_seeds": over_seeds(per_seed),
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
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-tta-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.add_before:
        out = work if QUICK else args.output
        section = _last_section(out)
        for row in section["rows"]:
            row["seeds"].pop("test_labels", None)  # written by runs before 2026-12-05
            row["before"] = before(row, work, args.add_before, [int(v) for v in args.seeds.split(",")])
        write_section(
            out, SECTION, render(section["rows"], section["meta"], SECTION, (TRAIN_PER_CLASS, VAL_PER_CLASS)), section
        )
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
    write_section(
        work if QUICK else args.output,
        SECTION,
        render(rows, meta, SECTION, (TRAIN_PER_CLASS, VAL_PER_CLASS)),
        {"meta": meta, "rows": rows},
    )
    for r in rows:
        print(json.dumps({k: r.get(k) for k in ("dataset", "speedup_to_target", "test_gain_pt", "over_seeds")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
