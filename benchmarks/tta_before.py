"""Before vs after for ``python -m benchmarks.tta --add-before BASE``: the same recipe trained by an older
checkout (BASE, e.g. the code before the pixel cache) on the data of the last run, seed by seed, paired on
the same test images; and what both use: the progress line and edgetl's test predictions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from benchmarks.tta_table import t_interval

ROOT = Path(__file__).resolve().parent.parent


def say(message: str) -> None:
    print(f"[bench_tta] {message}", file=sys.stderr, flush=True)


def edgetl_test_predictions(run: Path, px: int) -> np.ndarray:
    from edgetl import data
    from edgetl.data import feed
    from edgetl.model import classifier as model

    dataset, items = data.load_split(run, "test")
    images, _, _ = dataset.pixels(items, px, warn=False)
    return feed.predict(model.load(str(run / "model.keras")), images, model.MOBILENET_NORMALIZATION).argmax(1)


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
        "mean_interval95_pt": t_interval(np.subtract(news, olds)) if len(seeds) > 1 else None,
        "seed_sd_pt": {"before": round(float(np.std(olds, ddof=1)), 2), "after": round(float(np.std(news, ddof=1)), 2)}
        if len(seeds) > 1
        else None,
        "base": str(base),
    }
