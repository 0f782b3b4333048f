"""benchmarks/: the pure helpers (tables, statistics, MAC counts, report), not the timings."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import benchmarks.__main__ as bench
from benchmarks import report as bench_report
from benchmarks import runtime as bench_runtime
from benchmarks import train as bench_train
from benchmarks import util as bench_util


def test_markdown_table_aligns_numbers_right_and_escapes_pipes() -> None:
    table = bench_util.markdown_table(["model", "ms"], [["a|b", 1.5], ["c", "–"]])
    assert table == "| model | ms |\n|---|---:|\n| a\\|b | 1.5 |\n| c | – |"


def test_markdown_table_explicit_alignment_and_ragged_rows() -> None:
    assert bench_util.markdown_table(["a", "b"], [], right=[True, False]).splitlines()[1] == "|---:|---|"
    with pytest.raises(ValueError, match="every row needs 2 cells"):
        bench_util.markdown_table(["a", "b"], [[1]])


def test_summarize_median_and_p95() -> None:
    stats = bench_util.summarize(list(range(1, 101)))
    assert stats == {"median_ms": 50.5, "p95_ms": 95.05, "n": 100}
    assert math.isnan(bench_util.summarize([])["median_ms"])


def test_ratio_fmt_and_goal() -> None:
    assert bench_util.ratio(3.0, 2.0) == 1.5
    assert bench_util.ratio(1.0, 0) is None and bench_util.ratio(None, 1.0) is None
    assert bench_util.fmt(None) == "–" and bench_util.fmt(float("nan")) == "–"
    assert bench_util.fmt(0.5, "+.2f", " pt") == "+0.50 pt" and bench_util.fmt("x") == "x"
    assert bench_util.goal(0.3, 0.3) == "met" and bench_util.goal(0.31, 0.3) == "NOT met"
    assert bench_util.goal(0.996, 0.995, at_most=False) == "met" and bench_util.goal(None, 1) == "–"


def _tiny_model():
    from edgetl.model.graph import keras

    k = keras()
    inputs = k.Input((8, 8, 3))
    x = k.layers.Conv2D(4, 3, strides=2, padding="same")(inputs)  # 4x4x4 outputs, 3*3*3 weights each
    x = k.layers.DepthwiseConv2D(3, padding="same")(x)  # 4x4x4 outputs, 3*3 weights each
    x = k.layers.BatchNormalization()(x)
    x = k.layers.Conv2D(6, 1)(x)  # 4x4x6 outputs, 4 weights each
    x = k.layers.GlobalAveragePooling2D()(x)
    return k.Model(inputs, k.layers.Dense(5)(x))  # 5 outputs, 6 weights each


def test_count_macs_matches_a_hand_count() -> None:
    model = _tiny_model()
    by_hand = 4 * 4 * 4 * (3 * 3 * 3) + 4 * 4 * 4 * (3 * 3) + 4 * 4 * 6 * 4 + 5 * 6
    assert by_hand == 2718
    assert [bench_util.layer_macs(layer) for layer in model.layers] == [0, 1728, 576, 0, 384, 0, 30]
    assert bench_util.count_macs(model) == by_hand


def test_count_macs_mobilenet_v2_matches_the_paper() -> None:
    """MobileNetV2 1.0/224 with its 1000-class head: 300 M multiply-adds (Sandler et al., Table 4)."""
    from edgetl.model.graph import keras

    model = keras().applications.MobileNetV2(input_shape=(224, 224, 3), alpha=1.0, weights=None)
    assert 295e6 < bench_util.count_macs(model) < 305e6


def test_interleaved_calls_each_callable_warmup_plus_repeats_times() -> None:
    calls = {"a": 0, "b": 0}

    def bump(name: str):
        return lambda: calls.__setitem__(name, calls[name] + 1)

    samples = bench_util.interleaved({"a": bump("a"), "b": bump("b")}, repeats=6, rounds=3, warmup=2)
    assert calls == {"a": 8, "b": 8}
    assert [len(v) for v in samples.values()] == [6, 6] and all(t >= 0 for t in samples["a"])


def test_stage_shares_from_json_lines() -> None:
    lines = [{"preprocess_ms": 1.0, "invoke_ms": 6.0, "total_ms": 7.5}] * 10
    shares = bench_runtime.stage_shares(lines, wall_s=0.1)
    assert shares == {"preprocess": 0.1, "invoke": 0.6, "postprocess": 0.05, "other": 0.25, "preprocess_ahead": 0.0}
    ahead = [{**line, "prepared_ahead": True} for line in lines]
    shares = bench_runtime.stage_shares(ahead, wall_s=0.1)
    assert shares == {"preprocess": 0.0, "invoke": 0.6, "postprocess": 0.05, "other": 0.35, "preprocess_ahead": 0.1}


def test_clean_makes_json_safe_values() -> None:
    assert bench.clean({"a": float("nan"), "b": [Path("/x"), 1.5], 3: (float("inf"),)}) == {
        "a": None,
        "b": ["/x", 1.5],
        "3": [None],
    }


def test_portable_paths() -> None:
    text = f"{bench.ROOT}/.venv/bin/edge-classify --model /tmp/w/run/m.tflite"
    assert bench._portable(text, Path("/tmp/w")) == ".venv/bin/edge-classify --model $WORK/run/m.tflite"


def test_presets_full_does_more_than_quick() -> None:
    quick, full = bench.Params.quick(), bench.Params.full()
    for field in ("train_per_class", "test_per_class", "epochs", "repeats", "video_frames", "soak_frames"):
        assert getattr(full, field) > getattr(quick, field), field
    assert full.soak_frames == 10_000 and full.test_per_class * 10 >= 2000  # agreement resolved to 0.05%


def test_goals_and_conversion_rows() -> None:
    rows = [
        {"variant": "int8", "drop_pt": 0.4, "agreement": 0.996, "size_ratio": 0.305},
        {"variant": "qat_int8", "drop_pt": 0.1, "agreement": 0.99, "size_ratio": 0.306},
    ]
    met = {g["goal"]: g["met"] for g in bench_train._goals(rows)}
    assert met == {
        "int8 top-1 drop (pt)": False,
        "QAT-int8 top-1 drop (pt)": True,
        "int8 agreement with float": True,
        "qat_int8 agreement with float": False,
        "int8 size vs fp32": True,
    }
    converted = {
        "seconds": 10.0,
        "variants": [
            {"quantization": "fp32", "seconds": 3.0, "size_bytes": 100},
            {"quantization": "int8", "seconds": 4.5, "size_bytes": 30},
        ],
    }
    steps = {r["step"]: r["seconds"] for r in bench_train.conversion_rows("m", converted)}
    assert steps == {
        "fp32": 3.0,
        "int8": 4.5,
        "rest (export, QAT rebuild, read-back, cards)": 2.5,
        "total (convert call)": 10.0,
    }


def _results() -> dict:
    """A small canned result in the shape bench.py writes."""
    timing = {"median_ms": 1.0, "p95_ms": 2.0, "n": 10}
    lat = [
        {
            "model": "0.35/96",
            "variant": v,
            "threads": 1,
            "invoke": timing,
            "scores": None if v == "keras" else timing,
            "macs": 10_000_000,
            "speedup_vs_keras": 1.0,
            "speedup_vs_fp32": 1.0,
            "gmac_per_s": 10.0,
        }
        for v in ("keras", "int8")
    ]
    train_row = {
        "name": "uncached",
        "epochs": 2,
        "head_seconds": 1.0,
        "head_images_per_s": 10.0,
        "speedup_vs_uncached": 1.0,
        "head_val_top1": 0.8,
        "final_val_top1": 0.85,
        "splits": {"train": 8, "val": 1, "test": 1},
        "fine_tune": {"epochs": 1, "seconds": 2.0, "images_per_s": 4.0, "trainable_layers": 52},
    }
    acc = [
        {
            "variant": "float (Keras)",
            "top1": 0.9,
            "drop_pt": None,
            "agreement": None,
            "size_bytes": None,
            "size_ratio": None,
        },
        {"variant": "int8", "top1": 0.89, "drop_pt": 1.0, "agreement": 0.99, "size_bytes": 2048, "size_ratio": 0.3},
    ]
    pipe = {
        "model": "1.0/224 int8",
        "threads": 2,
        "pipeline_fps": 50.0,
        "bare_invoke_fps": 100.0,
        "ratio": 0.5,
        "runs": 1,
        "shares": {"preprocess": 0.3, "invoke": 0.6, "postprocess": 0.05, "other": 0.05},
    }
    return {
        "meta": {
            "mode": "quick",
            "date": "2026-01-01 00:00 UTC",
            "wall_s": 60.0,
            "command": "python benchmarks/__main__.py --quick",
            "loadavg_end": [1.0, 1.0, 1.0],
            "versions": {"tensorflow": "2.21.0"},
            "machine": {"cpu_model": "CPU", "logical_cpus": 2, "os": "Linux", "machine": "x86_64", "python": "3.11"},
        },
        "data": {"train_per_class": 1, "test_per_class": 1},
        "training": {"rows": [train_row], "image_size": 96, "epochs": 2},
        "variants": {
            "qat_epochs": 1,
            "calibration_images": 10,
            "calibrate_seconds": 0.1,
            "calibration_feed_seconds": 0.2,
            "qat_seconds": 3.0,
        },
        "accuracy": {
            "rows": acc,
            "images": 10,
            "via": "edgetl.parity.run_parity (x)",
            "goals": bench_train._goals(acc),
        },
        "latency": {"rows": lat, "repeats": 10, "rounds": 2, "frame": "640x480 BGR frame"},
        "latency_models": [{"name": "0.35/96", "weights": "none", "macs": 10_000_000}],
        "runtime": {
            "video": {"frames": 60, "size": "640x480", "codec": "MJPG"},
            "pipeline": {"rows": [pipe], "goal_ratio": 0.95, "example_command": "edge-classify ..."},
            "cold_start": {
                "rows": [{"what": w, "code": "pass", "median_s": 0.1, "runs": 2} for w in "abc"],
                "tf_over_edge": 30.0,
                "model": "$WORK/m.tflite",
            },
            "soak": {
                "command": "edge-classify --loop",
                "frames": 500,
                "fps": 40.0,
                "rss_first_mb": 100.0,
                "rss_last_mb": 101.0,
                "rss_growth_mb": 1.0,
            },
        },
        "conversion": bench_train.conversion_rows(
            "0.35/96", {"seconds": 5.0, "variants": [{"quantization": "int8", "seconds": 2.0, "size_bytes": 2048}]}
        ),
    }


def test_report_renders_every_section_with_goal_status() -> None:
    text = bench_report.render(_results())
    for title in (
        "# Benchmarks",
        "## 1. Training speed",
        "## 2. Accuracy and size",
        "## 3. Latency per image",
        "## 4. Runtime pipeline",
        "## 5. Conversion",
    ):
        assert title in text
    assert "| int8 top-1 drop (pt) | ≤ 0.30 pt | 1.00 pt | **NOT met** |" in text
    assert "| int8 size vs fp32 | ≤ 0.310× | 0.300× | met |" in text
    assert "| 1.0/224 int8 | 2 | 50.0 | 100.0 | 50.00% | **NOT met** |" in text
    assert "10.0 M multiply-accumulates" in text and "`python benchmarks/__main__.py --quick`" in text


def test_report_without_qat_and_with_warm_soak() -> None:
    results = _results()
    results["variants"].update(qat_epochs=0, qat_seconds=None)
    results["runtime"]["soak"].update(rss_warm_mb=100.5, rss_growth_after_warmup_pct=0.5)
    text = bench_report.render(results)
    assert "no QAT in this mode" in text and "`qat()`" not in text
    assert "| QAT-int8 top-1 drop (pt) | ≤ 0.20 pt | – | – |" in text
    assert "100.5 MiB after 100 frames" in text and "+0.50% after warm-up (goal < 5%)" in text


def test_report_adds_the_browser_preview_section_when_bench_serve_ran() -> None:
    results = _results()
    assert "## 6. Browser preview" not in bench_report.render(results)
    samples = [
        {"serve": False, "fps": 100.0, "cpu_ms_per_frame": 5.0},
        {"serve": True, "fps": 90.0, "cpu_ms_per_frame": 5.5, "viewer_fps": 14.9},
    ]
    results["serve"] = {
        "models": [
            {
                "model": "m.tflite",
                "video": {"frames": 300, "size": "640x480", "codec": "MJPG"},
                "frames_per_run": 1500,
                "threads": 1,
                "runs": 1,
                "skip_s": 1.0,
                "fps_without": 100.0,
                "fps_with_viewer": 90.0,
                "ratio": 0.9,
                "cpu_ms_per_frame_without": 5.0,
                "cpu_ms_per_frame_with_viewer": 5.5,
                "cpu_ratio": 1.1,
                "viewer_fps": 14.9,
                "samples": samples,
                "loadavg_end": [1.0, 1.0, 1.0],
                "nice": 0,
                "date": "2026-12-04 16:00 UTC",
            }
        ]
    }
    text = bench_report.render(results)
    assert text.index("## 5. Conversion") < text.index("## 6. Browser preview")
    assert "| pair 1 | 100.0 | 90.0 | 5.000 | 5.500 | 14.9 |" in text
    assert "With a viewer: FPS 90.00% of the FPS without, CPU per frame 110.00% of it (medians of 1 runs each" in text
    assert "The process used 50.00% of a core without a viewer and 49.50% with one" in text


@pytest.mark.parametrize(
    "module",
    [
        "benchmarks",
        "benchmarks.gate",
        "benchmarks.tta",
        "benchmarks.maxdrop",
        "benchmarks.device",
        "benchmarks.scale",
        "benchmarks.serve",
    ],
)
def test_every_benchmark_runs_as_a_module_from_the_repository_root(module: str) -> None:
    """Each benchmark starts as documented (``python -m benchmarks.X``): its imports resolve and its options parse.

    The runs themselves take minutes to an hour (docs/benchmarks.md); CI proves the entry points, not the timings.
    """
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage: ")
