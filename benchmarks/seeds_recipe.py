"""The seeds' recipe (the Keras tutorials'): the frozen backbone recomputed on augmented batches every epoch,
then the top layers at a low rate, timed as a fresh process; ``python -m benchmarks.tta`` compares it with
``edgetl train`` and a linear probe. Run as ``python -m benchmarks.seeds_recipe RUN OUT [--px N] [--seed S]``."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from benchmarks.tta_before import say
from benchmarks.tta_table import SEEDS_FINE_EPOCHS, SEEDS_FINE_LAYERS, SEEDS_HEAD_EPOCHS

ROOT = Path(__file__).resolve().parent.parent


def run_seeds(run: Path, px: int, out: Path, seed: int = 42, quick: bool = False) -> dict[str, Any]:
    """The seeds' recipe as a fresh process on ``run``'s splits; per-epoch val accuracy at seconds since launch."""
    launch = time.time()
    command = [sys.executable, "-m", "benchmarks.seeds_recipe", str(run), str(out), "--px", str(px)]
    command += ["--seed", str(seed)] + (["--quick"] if quick else [])
    subprocess.run(command, check=True, cwd=ROOT)
    record = json.loads(out.read_text())
    del record["test_labels"]  # stays in ``out`` for the paired comparisons; not a figure for benchmarks.json
    for row in record["curve"]:
        row["seconds"] = round(row.pop("end_unix") - launch, 1)
    record["seconds"] = record["curve"][-1]["seconds"]
    return record


def seeds_recipe(run: Path, out: Path, px: int, seed: int = 42, quick: bool = False) -> None:
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
    head_epochs, fine_epochs = (1, 1) if quick else (SEEDS_HEAD_EPOCHS, SEEDS_FINE_EPOCHS)
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.seeds_recipe", description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a run folder whose splits the recipe trains on")
    p.add_argument("out", type=Path, help="where its record (JSON) goes; test predictions beside it")
    p.add_argument("--px", type=int, default=96)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--quick", action="store_true", help="1 + 1 epochs: a smoke run")
    args = p.parse_args(argv)
    seeds_recipe(args.run, args.out, args.px, args.seed, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
