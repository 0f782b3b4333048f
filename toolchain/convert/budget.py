"""``edgetl convert --max-drop PT``: the cheapest int8 model that keeps a top-1 budget on the val split.

Plain int8 is converted and measured first, through ``edgetl.runtime`` (the device
path) on the run's **validation** split against ``model.keras``; the test split stays
for the parity gate. When the budget does not hold, the search tries, cheapest first:

1. a larger calibration set (the same seeded, class-balanced choice, twice as many
   train images, at least the default 300): it costs nothing on the device;
2. the fewest layers kept in float (on the larger set when there is one), ranked by TFLite's quantization debugger
   (per-layer RMSE over the quantization step, worst first): the worst ``k`` layers
   are kept in float for k = 1, 2, 4, ... until the budget holds, then the smallest
   such ``k`` is found by bisection between the last ``k`` that failed and the first
   that held (assuming, as the ranking does, that more float layers never hurt).
   With calibrated (GPTQ) rounding the ranking is of the GPTQ int8 model, and each
   candidate is re-rounded around its float layers: those keep their float weights
   (GPTQ sets a layer's weights for int8 inputs and outputs of its own; kept in float
   they would compute with weights meant for another graph), and the layers after
   them are rounded for the graph as it will run. Measured on Fashion-MNIST: every
   layer in float (float weights) changed 3 of 300 val answers, as fp16 did.

"Holds" is judged by the parity gate's own statistics (:func:`edgetl.gate.checks.threshold_checks`,
the function ``edgetl parity`` calls), on the val split, with ``max_drop`` as the top-1
drop limit and the float model's noise floor measured on the same val images:

- no check fails on evidence (top-1 drop, fidelity against the noise floor, agreement,
  per-class drop): a candidate the gate would turn red on val is never chosen; and
- the candidate changes no more val answers (top-1 different from ``model.keras``'s) than
  ``model.keras`` itself changes when every pixel moves by ±1 grey level
  (:mod:`edgetl.gate.noise_floor`): the gate on test allows 1.5x that floor, and 1x on val
  leaves the margin a small val split needs (the same Fashion-MNIST int8 file read 1.27x
  its floor on 300 val images and 0.71x on 2,000 test images; a colour model at exactly
  1.5x on val failed fidelity on test at 2.0x). Without a measured floor (a ``ValSet``
  built by hand) the rule is the top-1 drop's point estimate at most ``max_drop``.

Why not the drop's point estimate: a 0.3 pt budget on 300 val images allows no net lost
image, while fp16 alone loses two (Fashion-MNIST, BENCHMARKS.md) and the float model's
own noise floor flips 15 of the same 300; that rule kept searching past every candidate
the gate passes on test. A large top-1 drop is still refused: it fails the drop check on
evidence. Why not the interval's upper end: 300 images cannot put the
upper end of a paired interval under 0.3 pt even for a model identical to float (no
discordant image still leaves +1.01 pt; 1,000 images +0.31). A candidate within its
noise floor changes no more answers than sensor noise does to the float model, so the
val split cannot tell it from float; the gate on the test split still judges the chosen
model on intervals. (NNCF's ``quantize_with_accuracy_control`` compares the point
estimate of the validation metric with ``max_drop``; it has no noise floor.)

Deterministic (the same run folder gives the same candidates in the same order and
the same choice) and bounded (``max_evals`` validation passes, ``max_seconds`` of wall
time). Nothing is written here: candidates are staged in the convert stage's hidden work
folder (:mod:`edgetl.convert.converter`), and the stage commits the chosen one. The val
split's evaluation and judgement live in :mod:`edgetl.convert.validation`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Optional

from edgetl import calibration, log, runfolder, stats
from edgetl.config import DEFAULT_CALIB_SIZE, ConvertConfig, Quantization, Rounding
from edgetl.convert import debugger
from edgetl.convert.calibrate import choose
from edgetl.convert.converter import Conversion, pixel_loader, round_int8, source_of, write_variant
from edgetl.convert.validation import RULE, ValSet, evaluate, judge, load_val
from edgetl.errors import BudgetError

CALIB_GROWTH = 2  # the larger calibration set holds this many times the current one's images (at least the default)


@dataclasses.dataclass(frozen=True)
class Calibration:
    """One representative set and what the int8 conversion made of it."""

    manifest: calibration.Manifest
    representative: Callable[[], Any]
    saved: dict[str, Path]  # SavedModel folders: "float", and "int8" when the weights were rounded
    rounding: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Tools:
    """What the convert stage lends the search (so this module never touches the converter)."""

    stage: Callable[[Calibration, tuple[str, ...], Path], Path]  # write a candidate .tflite + card in a folder
    recalibrate: Callable[[int], Optional[Calibration]]  # a set of that many images; None when none larger exists
    rank: Callable[[Calibration], list[tuple[str, float]]]  # quantized layers, worst first, with their score


@dataclasses.dataclass
class Trial:
    """One candidate measured on the val split."""

    step: str
    calib_size: int
    keep_float: tuple[str, ...]
    size_bytes: int
    sha256: str
    drop: stats.Estimate
    agreement: stats.Estimate
    worst_class: str
    class_drop: stats.Estimate
    median_ms: float
    holds: bool
    flips: int = 0  # val answers whose top-1 differs from model.keras's
    floor_flips: Optional[int] = None  # model.keras's own flips under ±1 grey level on the same images
    why: str = ""  # which half of the rule held ("drop" or "noise floor"), or the check that failed

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "calibration_size": self.calib_size,
            "float_layers": list(self.keep_float),
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "drop": self.drop.to_dict(),
            "agreement": self.agreement.to_dict(),
            "worst_class": self.worst_class,
            "worst_class_drop": self.class_drop.to_dict(),
            "median_ms": round(self.median_ms, 4),
            "flips": self.flips,
            "noise_floor_flips": self.floor_flips,
            "holds": self.holds,
            "why": self.why,
        }

    def line(self) -> str:
        return (
            f"calibration {self.calib_size} images, {len(self.keep_float)} float layer(s): drop {self.drop.value:.2f} pt "
            f"[{self.drop.low:.2f}, {self.drop.high:.2f}], agreement {self.agreement.value:.2f}%, {self.flips} flips"
            f"{'' if self.floor_flips is None else f' (noise floor {self.floor_flips})'}, "
            f"worst class {self.worst_class} {self.class_drop.value:.1f} pt, {self.size_bytes / 1024:.0f} KiB"
        )


@dataclasses.dataclass
class Search:
    """What the search tried and what it chose (``chosen`` None: the budget was not reached)."""

    max_drop: float
    val_images: int
    trials: list[Trial]
    ranking: list[tuple[str, float]]
    chosen: Optional[Trial]
    stopped: str
    seconds: float
    calibration: Optional[Calibration] = dataclasses.field(default=None, repr=False)
    conversion: Optional[Conversion] = dataclasses.field(default=None, repr=False)  # the chosen one, to write

    @property
    def plain(self) -> Trial:
        return self.trials[0]

    def to_dict(self) -> dict[str, Any]:
        chosen, plain = self.chosen, self.plain
        return {
            "max_drop": self.max_drop,
            "rule": RULE,
            "split": "val",
            "val_images": self.val_images,
            "holds": chosen is not None,
            "stopped": self.stopped,
            "evaluations": len(self.trials),
            "seconds": round(self.seconds, 1),
            "calibration": {"method": "min/max", "size": chosen.calib_size} if chosen else None,
            "float_layers": list(chosen.keep_float) if chosen else None,
            "chosen": chosen.to_dict() if chosen else None,
            "plain_int8": plain.to_dict(),
            "vs_plain_int8": {
                "size_ratio": round(chosen.size_bytes / plain.size_bytes, 4),
                "latency_ratio": round(chosen.median_ms / plain.median_ms, 3) if plain.median_ms else None,
            }
            if chosen
            else None,
            "ranking": [{"layer": name, "rmse_over_scale": round(score, 4)} for name, score in self.ranking],
            "trials": [t.to_dict() for t in self.trials],
        }

    def summary(self) -> str:
        """One line for the convert table."""
        if self.chosen is None:
            return f"--max-drop {self.max_drop:g}: not reached ({self.stopped})"
        c, p = self.chosen, self.plain
        return (
            f"--max-drop {self.max_drop:g} on {self.val_images} val images: {c.step}, {len(c.keep_float)} float layer(s), "
            f"calibration {c.calib_size}; drop {c.drop.value:.2f} pt (plain int8 {p.drop.value:.2f}), {c.flips} flips"
            f"{'' if c.floor_flips is None else f' vs a noise floor of {c.floor_flips}'} (held by the {c.why} rule); "
            f"{c.size_bytes / p.size_bytes:.3f}x plain int8's size, {c.median_ms / max(p.median_ms, 1e-9):.2f}x its "
            f"latency; {len(self.trials)} evaluation(s)"
        )


class _Cap(Exception):
    """The evaluation or wall-time cap is reached."""


def search(config: ConvertConfig, val: ValSet, base: Calibration, tools: Tools, work: Path) -> Search:
    """Find the cheapest int8 candidate that keeps ``config.max_drop`` on ``val``.

    Returns:
        The search, with ``chosen`` None when the budget was not reached (``raise_if_unreached``).
    """
    started = time.monotonic()
    budget = float(config.max_drop)  # type: ignore[arg-type]
    trials: list[Trial] = []
    ranking: list[tuple[str, float]] = []

    def trial(step: str, cal: Calibration, layers: tuple[str, ...]) -> Trial:
        if len(trials) >= config.max_evals:
            raise _Cap(f"the evaluation cap (--max-evals {config.max_evals}) was reached")
        if time.monotonic() - started > config.max_seconds:
            raise _Cap(f"the wall-time cap (--max-seconds {config.max_seconds:g}) was reached")
        path = tools.stage(cal, layers, work / f"trial{len(trials) + 1}")
        probs, median_ms = evaluate(path, val)
        judged = judge(val, probs, budget)
        digest = runfolder.sha256_file(path)
        trials.append(
            Trial(step, cal.manifest.size, layers, path.stat().st_size, digest, median_ms=median_ms, **judged)
        )
        log.info(
            f"--max-drop {budget:g}: evaluation {len(trials)}/{config.max_evals}, {step}: {trials[-1].line()}"
            f"{' -> holds' if trials[-1].holds else ''}"
        )
        return trials[-1]

    chosen_cal = base
    stopped = "plain int8 holds"
    try:
        best = trial("plain int8", base, ())
        if not best.holds:
            chosen_cal, best, stopped = _calibrate(trial, tools, base, best)
        if not best.holds:
            ranking = tools.rank(chosen_cal)
            log.info(
                f"--max-drop {budget:g}: {len(ranking)} quantized layers ranked by the debugger, worst first: "
                + ", ".join(f"{n} {s:.2f}" for n, s in ranking[:5])
            )
            stopped = _float_layers(trial, chosen_cal, [name for name, _ in ranking])
    except _Cap as cap:
        stopped = str(cap)
    held = [t for t in trials if t.holds]
    chosen = min(held, key=lambda t: (len(t.keep_float), trials.index(t))) if held else None
    return Search(budget, len(val.labels), trials, ranking, chosen, stopped, time.monotonic() - started, chosen_cal)


def _calibrate(
    trial: Callable[..., Trial], tools: Tools, base: Calibration, plain: Trial
) -> tuple[Calibration, Trial, str]:
    """Step 1: a larger calibration set, kept for step 2 whatever its drop.

    More images estimate every range better, including those of the ops step 2 leaves
    int8 (adds, pooling, softmax); a val drop of 2.00 vs 3.00 pt on 300 images is three
    images, noise, not a reason to go back to fewer.
    """
    bigger = tools.recalibrate(max(DEFAULT_CALIB_SIZE, CALIB_GROWTH * base.manifest.size))
    if bigger is None:
        log.info("the train split holds no more images for a larger calibration set")
        return base, plain, "no larger calibration set"
    larger = trial("larger calibration set", bigger, ())
    return bigger, larger, "a larger calibration set holds" if larger.holds else "larger calibration set"


def _float_layers(trial: Callable[..., Trial], cal: Calibration, layers: list[str]) -> str:
    """Step 2: the smallest k such that the k worst layers in float hold (doubling, then bisection)."""
    failed, held, k = 0, None, 1
    while held is None and layers:
        k = min(k, len(layers))
        if trial(f"{k} worst layer(s) in float", cal, tuple(layers[:k])).holds:
            held = k
        elif k == len(layers):
            return f"every quantized layer ({k}) in float does not hold"
        else:
            failed, k = k, 2 * k
    if held is None:
        return "no layer to keep in float"
    while held - failed > 1:
        mid = (failed + held) // 2
        if trial(f"{mid} worst layer(s) in float", cal, tuple(layers[:mid])).holds:
            held = mid
        else:
            failed = mid
    return f"{held} float layer(s) hold, {held - 1} do not"


def run(conv: Conversion) -> Search:
    """The search with the convert stage's converter; the chosen calibration is saved when it is a new one.

    Raises:
        BudgetError: no candidate within the caps holds (exit 1; nothing written).
    """
    config, work = conv.config, conv.work
    assert conv.manifest is not None and conv.representative is not None
    base = Calibration(conv.manifest, conv.representative, conv.saved, conv.rounding)
    with_float: dict[tuple[str, tuple[str, ...]], Calibration] = {}

    def rounded_for(cal: Calibration, layers: tuple[str, ...], folder: Path) -> Calibration:
        return _rounded_for(conv, with_float, cal, layers, folder)

    def stage(cal: Calibration, layers: tuple[str, ...], folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        cal = rounded_for(cal, layers, folder)
        return write_variant(_candidate(conv, cal, layers, folder), Quantization.INT8, commit=False).path

    def recalibrate(size: int) -> Optional[Calibration]:
        chosen = choose(conv.run, conv.card, size, base.manifest.seed, config.data_root)
        if chosen.size <= base.manifest.size:
            return None
        feed_ = calibration.representative_dataset(
            chosen, conv.card, pixel_loader(conv.run, conv.card, chosen.refs, config.data_root)
        )
        saved, rounding = {k: v for k, v in base.saved.items() if k != "int8"}, {"method": config.rounding.value}
        if config.rounding == Rounding.GPTQ:
            (work / f"calibration-{chosen.size}").mkdir()
            rounding = round_int8(conv.tf, conv.run, feed_, work / f"calibration-{chosen.size}", saved)
        return Calibration(chosen, feed_, saved, rounding)

    result = search(
        config,
        load_val(conv.run, conv.card, config.data_root),
        base,
        Tools(stage, recalibrate, lambda cal: _rank(conv, cal)),
        work / "max-drop",
    )
    raise_if_unreached(result)
    if result.chosen and result.calibration is not None:
        result.calibration = rounded_for(result.calibration, result.chosen.keep_float, work / "chosen")
        result.conversion = _candidate(conv, result.calibration, result.chosen.keep_float, work)
    path = conv.run / calibration.MANIFEST_NAME
    if result.calibration is not None and result.calibration.manifest.sha256 != base.manifest.sha256:
        result.calibration.manifest.save(path)  # the larger set the search chose: the int8 card names its sha256
    return result


def _rank(conv: Conversion, cal: Calibration) -> list[tuple[str, float]]:
    """Quantized layers, worst first, by the debugger's RMSE over the quantization step (the int8 model's ops)."""
    worst: dict[str, float] = {}
    for row in debugger.layer_statistics(conv.tf, source_of(Quantization.INT8, cal.saved), cal.representative):
        if row["layer"] and row["rmse/scale"] != "nan":
            worst[row["layer"]] = max(worst.get(row["layer"], 0.0), float(row["rmse/scale"]))
    return sorted(worst.items(), key=lambda kv: (-kv[1], kv[0]))


def _candidate(conv: Conversion, cal: Calibration, layers: tuple[str, ...], folder: Path) -> Conversion:
    """The conversion of one candidate: its calibration, its float layers, staged in ``folder``."""
    config = dataclasses.replace(conv.config, max_drop=None, keep_float=layers)
    return dataclasses.replace(
        conv,
        config=config,
        work=folder,
        manifest=cal.manifest,
        representative=cal.representative,
        saved=cal.saved,
        rounding=cal.rounding,
    )


def _rounded_for(
    conv: Conversion,
    cache: dict[tuple[str, tuple[str, ...]], Calibration],
    cal: Calibration,
    layers: tuple[str, ...],
    folder: Path,
    rounder: Callable[..., dict[str, Any]] = round_int8,
) -> Calibration:
    """``cal`` with its GPTQ weights re-rounded around ``layers`` kept in float (their float weights), cached."""
    if not layers or "int8" not in cal.saved:  # nearest rounding: the converter reads the float weights
        return cal
    key = (cal.manifest.sha256, layers)
    if key not in cache:
        saved = {k: v for k, v in cal.saved.items() if k != "int8"}
        (folder / "gptq").mkdir(parents=True)
        rounding = rounder(conv.tf, conv.run, cal.representative, folder / "gptq", saved, layers)
        cache[key] = Calibration(cal.manifest, cal.representative, saved, rounding)
    return cache[key]


def raise_if_unreached(result: Search) -> None:
    """Raise BudgetError naming what was tried, when no candidate kept the budget.

    Raises:
        BudgetError: exit 1; nothing is written.
    """
    if result.chosen is not None:
        return
    best = min(result.trials, key=lambda t: t.drop.value)
    tried = "; ".join(f"{t.step}: drop {t.drop.value:.2f} pt" for t in result.trials)
    raise BudgetError(
        f"no int8 model keeps --max-drop {result.max_drop:g} pt on the {result.val_images} val images "
        f"({result.stopped}). Tried: {tried}. Best: {best.line()}. Nothing was written; raise --max-evals or "
        "--max-seconds, allow a larger --max-drop, or use QAT (`edgetl qat`) or fp16"
    )
