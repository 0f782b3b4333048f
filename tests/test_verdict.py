"""The statistics behind parity verdicts, and the parity command's option validation.

Pure numpy: intervals checked against textbook values and by simulation (coverage),
verdicts on the three sides of a threshold, and the one-unit, validated thresholds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from edgetl import stats as v
from edgetl.cli.main import main
from edgetl.config.parity import DEFAULT_THRESHOLDS, ParityConfig, Thresholds, parse_limit, variant_name
from edgetl.errors import ConfigError


def test_wilson_matches_textbook_values() -> None:
    # Newcombe (1998) single-proportion examples: 81/263 -> 0.2553-0.3662; 0/10 -> 0-0.2775.
    assert v.wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert v.wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert v.wilson(0, 0) == (0.0, 1.0)


def test_paired_difference_uses_only_discordant_pairs() -> None:
    """a, b, c, d = 12, 5, 1, 2: drop 0.2; the interval holds it, and moving concordant pairs barely moves it."""

    def interval(a: int, b: int, c: int, d: int) -> tuple[float, float, float]:
        ref = np.array([1] * a + [1] * b + [0] * c + [0] * d, bool)
        new = np.array([1] * a + [0] * b + [1] * c + [0] * d, bool)
        return v.paired_difference(ref, new)

    theta, low, high = interval(12, 5, 1, 2)
    assert theta == pytest.approx(0.2) and low < 0 < 0.2 < high < 0.5
    assert interval(2000, 0, 0, 300)[2] < 0.002  # no discordant pair in 2,300 images: at most 0.2 pt
    assert interval(2000, 40, 40, 300)[1] < 0 < interval(2000, 40, 40, 300)[2]  # symmetric flips: no evidence


def _coverage(n: int, p_ref: float, p_flip: float, trials: int, rng: np.random.Generator) -> float:
    hits = 0
    truth = p_flip * p_ref - p_flip * (1 - p_ref)  # E[drop]: right answers lost minus wrong ones fixed
    for _ in range(trials):
        ref = rng.random(n) < p_ref
        flip = rng.random(n) < p_flip
        _, low, high = v.paired_difference(ref, ref ^ flip)
        hits += low <= truth <= high
    return hits / trials


@pytest.mark.parametrize("n", [300, 2000])
def test_paired_interval_covers_the_true_drop(n: int) -> None:
    """A 95% interval must hold the true drop about 95% of the time (no false alarms by construction)."""
    coverage = _coverage(n, 0.85, 0.016, 1500, np.random.default_rng(n))
    assert 0.93 <= coverage <= 0.995, coverage


def test_identical_models_have_a_tight_interval_around_zero() -> None:
    ref = np.random.default_rng(0).random(1000) < 0.9
    theta, low, high = v.paired_difference(ref, ref)
    assert theta == 0 and -0.005 < low <= 0 <= high < 0.005


def test_three_verdicts() -> None:
    assert v.at_most(0.1, 0.4, 0.5) == v.Verdict.PASS
    assert v.at_most(0.6, 1.2, 0.5) == v.Verdict.FAIL
    assert v.at_most(-0.5, 1.5, 0.5) == v.Verdict.INCONCLUSIVE
    assert v.at_least(0.985, 0.995, 0.98) == v.Verdict.PASS
    assert v.at_least(0.90, 0.95, 0.98) == v.Verdict.FAIL
    assert v.combine([v.Verdict.PASS, v.Verdict.INCONCLUSIVE]) == v.Verdict.INCONCLUSIVE
    assert v.combine([v.Verdict.INCONCLUSIVE, v.Verdict.FAIL]) == v.Verdict.FAIL


def test_a_healthy_model_on_few_images_is_inconclusive_not_failed() -> None:
    """300 images, 1.6% symmetric flips (a healthy int8): never red; more images would say pass."""
    rng = np.random.default_rng(1)
    flip = np.zeros(300, bool)
    flip[rng.choice(300, 5, replace=False)] = True
    agree = v.agreement_check(~flip, 98.0)
    assert agree.verdict == v.Verdict.INCONCLUSIVE and agree.images_needed and agree.images_needed > 300
    bigger = v.agreement_check(np.resize(~flip, agree.images_needed * 2), 98.0)
    assert bigger.verdict == v.Verdict.PASS  # the hint was enough (with the observed rate)


def test_a_broken_model_fails_even_on_200_images() -> None:
    rng = np.random.default_rng(2)
    ref = rng.random(200) < 0.85
    new = rng.random(200) < 0.3  # a BGR/normalisation bug: near chance
    assert v.drop_check(ref, new, 0.5).verdict == v.Verdict.FAIL
    assert v.agreement_check(rng.random(200) < 0.4, 98.0).verdict == v.Verdict.FAIL


def test_observed_on_threshold_cannot_be_resolved() -> None:
    e = v.agreement_check(np.array([True] * 49 + [False]), 98.0)
    assert e.verdict == v.Verdict.INCONCLUSIVE and e.images_needed is None


def test_images_needed_for_a_perfect_agreement() -> None:
    """40/40 agreeing cannot show 99.5%; n/(n + z^2) >= 0.995 needs about 765 images (Wilson, all agreeing)."""
    e = v.agreement_check(np.ones(40, bool), 99.5)
    assert e.verdict == v.Verdict.INCONCLUSIVE and 740 <= e.images_needed <= 790
    drop = v.drop_check(np.ones(40, bool), np.ones(40, bool), 0.1)
    assert drop.verdict == v.Verdict.INCONCLUSIVE and drop.images_needed > 40


def test_class_confidence_is_bonferroni() -> None:
    assert v.class_confidence(10) == pytest.approx(0.995)
    assert v.class_confidence(1) == pytest.approx(0.95)


def test_thresholds_are_validated_in_one_unit() -> None:
    with pytest.raises(ConfigError, match=r"--min-agreement is a percentage: give 99 for 99% \(got 0.99\)"):
        ParityConfig(run=".", min_agreement=0.99)
    with pytest.raises(ConfigError, match="--max-drop is in percentage points, between 0 and 100"):
        ParityConfig(run=".", max_drop=-1)
    with pytest.raises(ConfigError, match="must be a number"):
        ParityConfig(run=".", max_class_drop=float("nan"))
    with pytest.raises(ConfigError, match="--threads must be between 1 and 64"):
        ParityConfig(run=".", threads=0)
    config = ParityConfig(run=".", models=("model_int8.tflite", "QAT-int8", "int8"), max_drop={"int8": 0.3, "*": 0.4})
    assert config.models == ("int8", "qat_int8") and config.report_name == "parity_int8_qat_int8"
    assert config.thresholds_for("int8") == Thresholds(
        0.3, DEFAULT_THRESHOLDS["int8"].min_agreement, DEFAULT_THRESHOLDS["int8"].max_class_drop
    )
    assert config.thresholds_for("fp16").max_drop == 0.4
    assert ParityConfig(run=".").thresholds_for("fp16") == DEFAULT_THRESHOLDS["fp16"]
    assert ParityConfig(run=".").report_name == "parity"
    assert parse_limit("--max-drop", "int8=0.5, fp16=0.2") == {"int8": 0.5, "fp16": 0.2}
    assert variant_name(" model_qat_int8.json") == "qat_int8"
    with pytest.raises(ConfigError, match="takes a number or VARIANT=NUMBER pairs"):
        parse_limit("--max-drop", "int8:0.5")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--min-agreement", "0.99"], "Error: --min-agreement is a percentage: give 99 for 99% (got 0.99)"),
        (
            ["--max-drop", "half"],
            "Error: --max-drop takes a number or VARIANT=NUMBER pairs, e.g. 0.5 or int8=0.5,fp16=0.2 (got 'half')",
        ),
        (
            ["--max-class-drop", "int8=200"],
            "Error: --max-class-drop is in percentage points, between 0 and 100 (got 200)",
        ),
        (
            ["--inconclusive", "maybe"],
            "Error: Invalid value for '--inconclusive': 'maybe' is not one of 'pass', 'fail'.",
        ),
        (["--models", ","], "Error: --variants needs at least one variant name, e.g. int8,fp16"),
    ],
)
def test_parity_option_errors_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["parity", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines()[-1] == message
    assert "Traceback" not in result.output and result.stdout == ""


def test_parity_on_a_folder_that_is_not_a_run_exits_3(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["parity", str(tmp_path)])
    assert result.exit_code == 3
    assert (
        result.stderr.strip()
        == f"Error: {tmp_path} has no model.keras and model_card.json; is it an `edgetl train` run folder?"
    )


def test_shift_check_is_a_paired_normal_interval_on_the_per_image_excess() -> None:
    shift = np.array([0.02, 0.04, 0.00, 0.10, 0.04])
    floor = np.array([0.02, 0.02, 0.00, 0.04, 0.02])
    e = v.shift_check(shift, floor, max_ratio=1.5)
    d = shift - 1.5 * floor  # -0.01, 0.01, 0, 0.04, 0.01: mean 0.01
    half = 1.959964 * d.std(ddof=1) / np.sqrt(5)
    assert e.value == pytest.approx(1.0) and e.low == pytest.approx(100 * (0.01 - half))
    assert e.high == pytest.approx(100 * (0.01 + half)) and e.verdict == v.Verdict.INCONCLUSIVE
    assert e.images_needed is not None and 5 < e.images_needed < 20  # the same spread settles it at ~8 images
    mean = v.Mean.of(shift)
    assert mean.value == pytest.approx(4.0) and mean.n == 5 and mean.low == pytest.approx(0.72, abs=0.01)


def test_shift_check_resolves_what_flip_counts_cannot_at_2000_images() -> None:
    # Fashion-MNIST's shape (BENCHMARKS.md): per-image shifts spread ~1.6x their mean; int8 with
    # nearest rounding moves the probabilities 2x as far as ±1 grey level and flips 1.9x as many answers
    rng = np.random.default_rng(0)
    floor = rng.gamma(0.4, 0.025 / 0.4, 2000)  # mean 0.025, sd/mean 1.58
    broken = 2.0 * floor * rng.gamma(4.0, 0.25, 2000)  # paired: the same images move most
    healthy = 0.8 * floor * rng.gamma(4.0, 0.25, 2000)
    assert v.shift_check(broken, floor, 1.5).verdict == v.Verdict.FAIL
    assert v.shift_check(healthy, floor, 1.5).verdict == v.Verdict.PASS
    flips, floor_flips = np.zeros(2000, bool), np.zeros(2000, bool)
    flips[:96], floor_flips[76:126] = True, True  # 4.8% vs 2.5% (20 in common), the same ratio in answers
    assert v.fidelity_check(flips, floor_flips, 1.5).verdict == v.Verdict.INCONCLUSIVE
