"""The time-to-accuracy section's markdown (``python -m benchmarks.tta`` measures; this renders): the
recipes compared, where edgetl's time went, and the paired accuracy tables over seeds."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from benchmarks.util import markdown_table

SEEDS_HEAD_EPOCHS, SEEDS_FINE_EPOCHS, SEEDS_FINE_LAYERS = 10, 3, 30  # the seeds' (Keras tutorials') recipe
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
PROBE_FLAGS = ["--cache-views", "1", "--no-augment", "--fine-tune-epochs", "0", "--dropout", "0"]  # a linear probe


def t_interval(values: np.ndarray) -> list[float]:
    """95% Student-t interval of the mean of ``values`` (one per seed: seeds are the unit of training noise)."""
    half = T975.get(len(values) - 1, 1.96) * float(np.std(values, ddof=1)) / np.sqrt(len(values))
    return [round(float(np.mean(values)) - half, 2), round(float(np.mean(values)) + half, 2)]


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


def test_top1(ok: np.ndarray) -> dict[str, Any]:
    from edgetl import stats as verdict

    lo, hi = verdict.wilson(int(ok.sum()), len(ok))
    return {"top1": round(float(ok.mean()), 4), "interval95": [round(lo, 4), round(hi, 4)], "n": len(ok)}


def paired_gain(ref_ok: np.ndarray, new_ok: np.ndarray) -> list[float]:
    """New minus reference test top-1 in points, paired on the same images, with its 95% interval (Newcombe)."""
    from edgetl import stats as verdict

    diff, low, high = verdict.paired_difference(ref_ok, new_ok)  # reference minus new
    return [round(-100 * v, 2) for v in (diff, high, low)]


def brief(r: dict[str, Any]) -> dict[str, Any]:
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


def over_seeds(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean test top-1 of each recipe over seeds; edgetl's mean paired gains, 95% Student t over seeds (one seed: its
    paired interval over test images)."""
    out: dict[str, Any] = {"n_seeds": len(per_seed)}
    for side in ("edgetl", "seeds", "probe"):
        values = np.array([100 * r[side]["test"]["top1"] for r in per_seed])
        sd = round(float(values.std(ddof=1)), 2) if len(values) > 1 else None
        out[side] = {"mean": round(float(values.mean()), 2), "sd": sd}
    for ref in ("seeds", "probe"):
        gains = np.array([r[f"edgetl_minus_{ref}_pt"][0] for r in per_seed])
        interval = t_interval(gains) if len(gains) > 1 else per_seed[0][f"edgetl_minus_{ref}_pt"][1:]
        out[f"edgetl_minus_{ref}_pt"] = [round(float(gains.mean()), 2), *interval]
    return out


# Today's default recipe spelled out, for the code before the pixel cache (its defaults differed).


def render(
    rows: list[dict[str, Any]], meta: dict[str, Any], section: str = "tta", per_class: tuple[int, int] = (300, 100)
) -> str:
    """The section's markdown; ``per_class``: the grey sets' train and val images per class."""
    train_per_class, val_per_class = per_class
    lines = [
        "## Time to accuracy: `edgetl train` vs the seeds' Keras recipe and a linear probe (`benchmarks/tta.py`)"
        + ("" if section == "tta" else f", {', '.join(sorted({str(r['px']) + ' px' for r in rows}))}"),
        "",
        f"Measured {meta['date']} ({meta['minutes']} min), {meta['cpu']}, load average {meta['load']} at the end"
        + (
            f" ({', '.join(meta['reused'])}: measured by earlier invocations on the same `--work`, `--reuse`). "
            if meta.get("reused")
            else ". "
        )
        + f"Fashion-MNIST and Animal-MNIST: {train_per_class} train + {val_per_class} val images per class from the "
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
    """A row measured before the linear probe joined (one seed, no probe) in the shape of ``over_seeds``."""
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
