"""Fidelity judged against the reference's own noise floor, and the gate's closing sentences.

Pure numpy and cv2: the paired interval of ``flips − ratio × floor`` checked by
simulation (coverage and false-red rate), the two perturbations, the fidelity check's
message, data-derived per-class limit, and what ``edgetl parity`` says at its end.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from edgetl import stats as v
from edgetl.config.parity import DEFAULT_THRESHOLDS, ParityConfig
from edgetl.errors import ConfigError
from edgetl.gate import noise_floor
from edgetl.gate.checks import Check, threshold_checks
from edgetl.parity import summary as answer
from edgetl.parity.stage import ParityReport


def _cells(both: float, x_only: float, y_only: float) -> list[float]:
    return [both, x_only, y_only, 1 - both - x_only - y_only]


@pytest.mark.parametrize(
    ("n", "both", "x_only", "y_only"),
    [
        (200, 0.004, 0.008, 0.007),  # Fashion-MNIST's healthy int8: 1.2% flips, floor 1.1%
        (300, 0.020, 0.028, 0.034),  # the colour set: 4.8% vs 5.4%
        (2000, 0.004, 0.008, 0.007),
        (2000, 0.004, 0.040, 0.007),  # nearest rounding: 4.4% vs 1.1%
    ],
)
def test_excess_interval_covers_the_truth(n: int, both: float, x_only: float, y_only: float) -> None:
    """The 95% interval of flips − 1.5 × floor holds the true value about 95% of the time, also at a few flips."""
    rng = np.random.default_rng(n)
    truth = (both + x_only) - 1.5 * (both + y_only)
    hits, above = 0, 0
    for counts in rng.multinomial(n, _cells(both, x_only, y_only), size=1500):
        _, low, high = v.excess_interval(*counts, ratio=1.5)
        hits += low <= truth <= high
        above += low > truth  # the side that makes a false red
    assert 0.93 <= hits / 1500 <= 0.995 and above / 1500 <= 0.035, (hits / 1500, above / 1500)


def _paired(n: int, both: int, x_only: int, y_only: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.zeros(n, bool), np.zeros(n, bool)
    x[:both] = y[:both] = True
    x[both : both + x_only] = True
    y[both + x_only : both + x_only + y_only] = True
    return x, y


def test_a_healthy_variant_at_its_floor_is_never_red_and_a_degraded_one_fails() -> None:
    healthy = v.fidelity_check(*_paired(10_000, 40, 80, 70), 1.5)  # 1.2% vs 1.1%
    assert healthy.verdict == v.Verdict.PASS and healthy.value == pytest.approx(1.2 - 1.65)
    small = v.fidelity_check(*_paired(200, 1, 1, 1), 1.5)  # two flips vs two in 200 images
    assert small.verdict == v.Verdict.INCONCLUSIVE and small.images_needed and small.images_needed > 200
    degraded = v.fidelity_check(*_paired(2000, 8, 80, 14), 1.5)  # 4.4% vs 1.1%: four times the floor
    assert degraded.verdict == v.Verdict.FAIL and degraded.low > 0
    zero = v.fidelity_check(*_paired(500, 0, 0, 0), 1.5)  # nothing flips: no evidence either way
    assert zero.verdict != v.Verdict.FAIL


def test_rate_carries_its_interval_and_size() -> None:
    r = v.Rate.of(np.array([True] * 81 + [False] * 182))
    assert r.to_dict() == pytest.approx({"value": 100 * 81 / 263, "low": 25.53, "high": 36.62, "n": 263}, abs=0.01)


def test_perturbations_are_imperceptible_and_seeded() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    pixels[0] = 0  # clipped at the ends of the range
    noisy = noise_floor.perturb(pixels, "noise")
    assert np.abs(noisy.astype(int) - pixels).max() == 1 and noisy.min() >= 0
    assert np.array_equal(noisy, noise_floor.perturb(pixels, "noise")) and not np.array_equal(noisy, pixels)
    smooth = np.repeat(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], 32, axis=0).repeat(3, axis=2)
    jpeg = noise_floor.perturb(smooth[None], "jpeg95")
    assert jpeg.shape == (1, 32, 32, 3) and np.abs(jpeg.astype(int) - smooth).mean() < 2


def test_floor_flips_counts_changed_answers() -> None:
    """A 'model' that thresholds mean brightness at 128: images at 128 flip under noise, others do not."""

    def predict(images: np.ndarray) -> np.ndarray:
        bright = images.reshape(len(images), -1).mean(1) >= 128.0
        return np.stack([~bright, bright], 1).astype(np.float32)

    pixels = np.stack([np.full((8, 8, 3), value, np.uint8) for value in (20, 128, 128, 230)])
    floor = noise_floor.floor_flips(predict, pixels, predict(pixels))
    assert not floor["noise"][0] and not floor["noise"][3]
    assert set(noise_floor.PERTURBATIONS) <= set(floor) and float(floor["noise_dprob"]) >= 0


def _model(n: int, flips: int, floor_flips: int, classes: int = 8) -> tuple[np.ndarray, ...]:
    labels = np.arange(n) % classes
    ref = np.eye(classes, dtype=np.float32)[labels]
    variant = ref.copy()
    variant[:flips] = np.roll(ref[:flips], 1, axis=1)
    floor = np.zeros(n, bool)
    floor[flips // 2 : flips // 2 + floor_flips] = True
    return labels, ref, variant, floor


def test_fidelity_check_message_and_data_derived_class_limit() -> None:
    labels, ref, variant, floor = _model(2000, 96, 108)  # 4.8% vs 5.4%: a healthy int8 on an unsure model
    names = [f"c{i}" for i in range(8)]
    checks, figures = threshold_checks(
        "int8", variant, ref, ref, labels, names, DEFAULT_THRESHOLDS["int8"], floor={"noise": floor, "jpeg95": floor}
    )
    fidelity = [c for c in checks if c.name == "fidelity"][0]
    assert fidelity.verdict == v.Verdict.PASS
    assert fidelity.detail.startswith(
        "int8 changes 4.80% [3.95, 5.83] of model.keras's answers; moving every pixel by ±1 grey level "
        "changes 5.40% [4.49, 6.48]: 0.89x the noise floor (≤ 1.5x allowed;"
    ), fidelity.detail
    assert figures["flip_rate"]["n"] == 2000 and figures["noise_floor"]["perturbation"] == "noise"
    assert figures["per_class_drop"]["c0"]["threshold"] == 5.4  # the floor, in points, above the fixed 3 pt
    agreement = [c for c in checks if c.name == "agreement"][0]
    assert agreement.verdict == v.Verdict.PASS and "(hard floor 80%)" in agreement.detail  # 95.2% agreement


def test_fidelity_fails_a_variant_four_times_its_floor() -> None:
    labels, ref, variant, floor = _model(2000, 88, 22, classes=10)
    checks, _ = threshold_checks(
        "int8_nearest", variant, ref, ref, labels, [str(i) for i in range(10)], DEFAULT_THRESHOLDS["int8"],
        floor={"noise": floor, "jpeg95": np.zeros(2000, bool)},
    )  # fmt: skip
    fidelity = [c for c in checks if c.name == "fidelity"][0]
    assert fidelity.verdict == v.Verdict.FAIL
    assert "moving every pixel by ±1 grey level changes 1.10%" in fidelity.detail
    assert ": 4.00x the noise floor (> 1.5x allowed;" in fidelity.detail


def test_max_flip_ratio_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"--max-flip-ratio is a multiple of the noise floor, between 1 and 100"):
        ParityConfig(run=".", max_flip_ratio=0.5)
    assert ParityConfig(run=".", max_flip_ratio={"int8": 2}).thresholds_for("int8").max_flip_ratio == 2.0
    assert ParityConfig(run=".").thresholds_for("fp16").max_flip_ratio == 1.5


def _estimate(value: float, low: float, high: float, threshold: float, needed: int | None = None) -> v.Estimate:
    verdict = v.at_most(low, high, threshold)
    return v.Estimate(value, low, high, threshold, verdict, needed if verdict == v.Verdict.INCONCLUSIVE else None)


def _report(drops: dict[str, v.Estimate], count: int = 10_000) -> ParityReport:
    models = {
        name: {
            "count": count,
            "drop": e.to_dict(),
            "flip_rate": {"value": 1.2, "low": 1.0, "high": 1.4, "n": count},
            "noise_floor": {"value": 1.1, "low": 0.9, "high": 1.3, "n": count, "description": "re-saving X"},
        }
        for name, e in drops.items()
    }
    checks = [Check(name, "top-1 drop", e.verdict, "…", e) for name, e in drops.items()]
    return ParityReport({"count": count}, models, checks, Path("parity.md"))


def test_closing_lines_say_exactly_what_was_shown() -> None:
    assert answer.accuracy_phrase({"low": -0.2, "high": 0.5}) == "at most 0.50 pt below float (95%)"
    assert answer.accuracy_phrase({"low": 0.06, "high": 0.5}) == "measurably below float: 0.06 to 0.50 pt lower (95%)"
    assert answer.accuracy_phrase({"low": -0.54, "high": -0.07}) == (
        "measurably above float: 0.07 to 0.54 pt higher (95%)"
    )
    report = _report({"fp16": _estimate(0.0, -0.1, 0.1, 0.2), "int8": _estimate(0.28, 0.06, 0.5, 0.3, 1_220_000)})
    lines = answer.lines(report)
    assert lines[0] == (
        "fp16: PASS: at most 0.10 pt below float (95%); fp16 changes 1.2% of answers; re-saving X changes 1.1%"
    )
    assert lines[1] == (
        "int8: INCONCLUSIVE (top-1 drop): measurably below float: 0.06 to 0.50 pt lower (95%); int8 changes 1.2% of "
        "answers; re-saving X changes 1.1%; top-1 drop sits at its threshold (0.3): 10,000 images cannot settle it, "
        "nor would ten times as many"
    )
    assert lines[2] == (
        "deploy model_fp16.tflite (fp16: at most 0.10 pt below float (95%)); int8 is smaller but unresolved (top-1 "
        "drop; measurably below float: 0.06 to 0.50 pt lower (95%)): deploy model_int8.tflite instead if you accept that"
    )
    passing = _report({"int8": _estimate(-0.3, -0.54, -0.07, 0.3)})
    assert (
        answer.lines(passing)[-1]
        == "deploy model_int8.tflite (int8: measurably above float: 0.07 to 0.54 pt higher (95%))"
    )
    assert passing.to_dict()["deploy"] == "model_int8.tflite"
    failed = _report({"int8": _estimate(1.2, 0.6, 1.8, 0.3)})
    assert answer.lines(failed)[-1].startswith("deploy nothing: every variant failed a check on evidence")
    settle = _report({"int8": _estimate(0.28, 0.06, 0.5, 0.3, 5_000)})
    assert "top-1 drop needs about 5,000 images to settle" in answer.lines(settle)[0]
    assert answer.lines(settle)[-1].startswith("no variant passes every check; int8 is unresolved (top-1 drop; ")


def test_check_text_says_a_variant_sits_at_the_threshold() -> None:
    from edgetl.gate import texts

    e = _estimate(0.28, 0.06, 0.5, 0.3, 1_220_000)
    text = texts.drop_text({"top1": 0.84, "top1_ci": [0.83, 0.85]}, e, available=10_000)
    assert text.endswith(
        "; it sits at the threshold: these images cannot settle it, nor would ten times as many. Decide: accept "
        "the interval's far end as your margin (0.50), or deploy a variant that passes"
    ), text
    assert texts.drop_text({"top1": 0.84, "top1_ci": [0.83, 0.85]}, e).endswith(
        "about 1,220,000 held-out images would resolve it"
    )


def test_gate_study_rates_judge_each_subset_with_its_own_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    """``benchmarks/gate.py``: a faithful variant is never red, one flipping 4x the floor is red at 2,000 images."""
    from benchmarks import redrates

    labels, ref, healthy, floor = _model(4000, 48, 44, classes=10)  # 1.2% vs 1.1%
    _, _, broken, _ = _model(4000, 176, 44, classes=10)  # 4.4%
    labels[:176] = (labels[:176] + 5) % 10  # the flipped images were wrong anyway: no accuracy moves, only answers
    saved = redrates.Saved(
        labels=labels,
        probabilities={"model.keras": ref, "int8": healthy, "int8_nearest": broken},
        floors={"model.keras": {"noise": floor, "jpeg95": floor}},
        references={"int8": "model.keras", "int8_nearest": "model.keras"},
        class_names=[str(i) for i in range(10)],
        contract={"int8": True, "int8_nearest": True},
        float_metrics={},
        timing={},
    )
    monkeypatch.setattr(redrates, "PARTITIONS", 2)  # the study's 10 partitions and 200 subsets: a fast lane's share
    monkeypatch.setattr(redrates, "RANDOM_SUBSETS", 20)
    rates = redrates.gate_rates(saved, (1000, 2000))
    assert rates["int8"]["2000"]["disjoint"] == {"sets": 2 * redrates.PARTITIONS, "fail": 0.0}
    assert (
        rates["int8_nearest"]["2000"]["disjoint"]["fail"] == 1.0
        and rates["int8_nearest"]["2000"]["random"]["sets"] == 20
    )


def test_gate_study_sets_take_one_view_of_a_picture() -> None:
    """Three views of each of 500 pictures: a 300-image set never holds two views of one picture."""
    from benchmarks import redrates

    groups = np.repeat(np.arange(500), 3)
    sets = redrates.test_sets(groups, 300, np.random.default_rng(0))
    assert len(sets["disjoint"]) == 3 * redrates.PARTITIONS  # a round of 500 pictures holds one set of 300: 3 rounds
    for s in sets["disjoint"] + sets["random"]:
        assert len(s) == 300 and len(np.unique(groups[s])) == 300
    first = np.concatenate(sets["disjoint"][:3])
    assert len(np.unique(first)) == 900  # one partition: no image twice
    big = redrates.test_sets(groups, 1000, np.random.default_rng(0))["random"][0]
    assert len(big) == 1000 and np.bincount(groups[big]).max() == 2  # 500 pictures: two views each


def test_far_end_of_a_ceiling_above_its_threshold_is_the_high_end() -> None:
    """A per-class drop of 3.1 pt [1.2, 5.1] against 3 pt: the margin to accept is 5.10, not the low end."""
    from edgetl.gate import texts

    e = _estimate(3.1, 1.2, 5.1, 3.0, None)
    text = texts.class_text("t-shirt_top", e, 10, available=10_000)
    assert text.endswith("accept the interval's far end as your margin (5.10), or deploy a variant that passes"), text


def test_shift_is_the_total_variation_between_score_vectors() -> None:
    clean = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    moved = np.array([[0.7, 0.3, 0.0], [0.0, 0.0, 1.0]])
    assert np.allclose(noise_floor.shift(moved, clean), [0.2, 1.0])
    assert np.allclose(noise_floor.shift(clean, clean), 0.0)


def test_fidelity_is_judged_on_probability_shifts_when_the_floor_carries_them() -> None:
    labels, ref, variant, floor = _model(2000, 96, 108)
    names = [f"c{i}" for i in range(8)]
    # the variant moves every image's top probability by 0.02, the noise moves it by 0.02 on
    # the floor's flips only: 2.0 pt vs 0.108 pt on average, far past 1.5x
    variant = 0.98 * variant + 0.02 / 8
    floor_shift = np.where(floor, 0.02, 0.0)
    checks, figures = threshold_checks(
        "int8",
        variant,
        ref,
        ref,
        labels,
        names,
        DEFAULT_THRESHOLDS["int8"],
        floor={"noise": floor, "jpeg95": floor, "noise_shift": floor_shift},
    )
    fidelity = [c for c in checks if c.name == "fidelity"][0]
    assert fidelity.verdict == v.Verdict.FAIL and figures["fidelity"]["measure"] == "shift"
    assert "its probabilities move 6.45 pt [5.54, 7.37] on average" in fidelity.detail, fidelity.detail
    assert "the noise's 0.11 pt [0.09, 0.13]" in fidelity.detail
    assert figures["noise_floor"]["shift"]["value"] == pytest.approx(0.108)
