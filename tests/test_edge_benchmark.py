"""``edge-classify benchmark`` (issue #30): latency p50/p90 per thread count, FPS, peak memory, the board.

Runs the golden int8 model for real, a few runs per cell (nothing about speed is asserted:
only that every figure is there, consistent and bounded by the options).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from edgetl.runtime import benchmark, board
from edgetl.runtime.__main__ import main

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"
MODEL = GOLDEN / "golden_int8.tflite"
ROW_KEYS = {
    "model",
    "quantization",
    "input",
    "size_kib",
    "threads",
    "runs",
    "invoke_p50_ms",
    "invoke_p90_ms",
    "e2e_p50_ms",
    "e2e_p90_ms",
    "fps",
    "peak_rss_mb",
    "peak_rss_scope",
    "added_rss_mb",
}


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("models")
    for name in ("a", "b"):
        shutil.copy(MODEL, folder / f"{name}.tflite")
        shutil.copy(GOLDEN / "golden_int8.json", folder / f"{name}.json")
    return [folder / "a.tflite", folder / "b.tflite"]


def test_json_report_has_every_cell_with_consistent_figures(
    two_models: list[Path], capsys: pytest.CaptureFixture
) -> None:
    code = main(["benchmark", *map(str, two_models), "--threads", "1,2", "--runs", "7", "--warmup", "2", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    board = report["board"]
    assert set(board) >= {"board", "cpu", "machine", "cores", "os", "kernel", "python", "runtime", "numpy", "opencv"}
    assert board["runtime"].startswith("ai-edge-litert ") and board["python"].startswith("CPython 3.")
    assert board["board"] and board["machine"] and "emulated" not in board
    assert report["settings"]["warmup_runs"] == 2 and report["settings"]["frame"].startswith("synthetic 640x480 JPEG")
    rows = report["rows"]
    assert [(r["model"], r["threads"]) for r in rows] == [
        ("a.tflite", 1),
        ("b.tflite", 1),
        ("a.tflite", 2),
        ("b.tflite", 2),
    ]
    for row in rows:
        assert set(row) == ROW_KEYS and row["runs"] == 7 and row["quantization"] == "int8"
        assert 0 < row["invoke_p50_ms"] <= row["invoke_p90_ms"] and 0 < row["e2e_p50_ms"] <= row["e2e_p90_ms"]
        assert row["e2e_p50_ms"] > row["invoke_p50_ms"]  # decode + preprocess + postprocess on top of invoke
        assert row["fps"] > 0 and row["peak_rss_mb"] > 0 and row["peak_rss_scope"] == "this model"
    assert "benchmark: 2 thread(s) done in" in err


def test_table_on_stdout_and_a_real_image(capsys: pytest.CaptureFixture) -> None:
    code = main(["benchmark", str(MODEL), "--threads", "1", "--runs", "3", "--image", str(GOLDEN / "02_red.png"), "-q"])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith("board: ") and lines[1].startswith("os: ") and "ai-edge-litert" in lines[1]
    assert "frame: 02_red.png (" in lines[2] and "warm-up runs excluded" in lines[2]
    assert lines[4].startswith("| model | quant | threads | runs | invoke p50 ms") and lines[6].startswith(
        "| golden_int8.tflite | int8 | 1 | 3 |"
    )


def test_seconds_bound_the_runs(capsys: pytest.CaptureFixture) -> None:
    code = main(["benchmark", str(MODEL), "--threads", "1", "--runs", "10000", "--seconds", "0.1", "--json", "-q"])
    row = json.loads(capsys.readouterr().out)["rows"][0]
    assert code == 0 and 1 <= row["runs"] < 10000  # each run decodes a 640x480 JPEG: far over 0.1 s for 10,000


def test_emulation_is_labelled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QEMU_CPU", "cortex-a72")
    info = board.board_info()
    assert info["emulated"] == "qemu (QEMU_CPU=cortex-a72): timings prove it runs, not a speed"
    text = benchmark.markdown(
        {"board": info, "settings": {"frame": "f", "warmup_runs": 1, "fps": "x"}, "rows": [], "time": "t"}
    )
    assert text.startswith("EMULATED: qemu (QEMU_CPU=cortex-a72)")


def test_board_prefers_the_device_tree_then_cpuinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree, cpuinfo = tmp_path / "model", tmp_path / "cpuinfo"
    tree.write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\0")
    cpuinfo.write_text("processor\t: 0\nCPU part\t: 0xd08\n\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n")
    real = Path

    def fake(path: str = "", *more: str) -> Path:
        return real({"/proc/device-tree/model": str(tree), "/proc/cpuinfo": str(cpuinfo)}.get(path, path), *more)

    monkeypatch.setattr(board, "Path", fake)
    info = board.board_info()
    assert info["board"] == "Raspberry Pi 4 Model B Rev 1.4" and info["cpu"] == "Cortex-A72"
    tree.unlink()
    assert board.board_info()["board"] == "Raspberry Pi 4 Model B Rev 1.4"  # the Pi's cpuinfo "Model" line


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--threads", "0"], 2, "'0': each thread count must be 1-64"),
        (["--threads", "a,b"], 2, "'a,b': give thread counts separated by commas, e.g. 1,2,4"),
        (["--runs", "0"], 2, "0 is not in the range 1<=x<=10000."),
    ],
)
def test_usage_errors(args: list[str], code: int, message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["benchmark", str(MODEL), *args]) == code
    assert capsys.readouterr().err.strip().endswith(message)


def test_unusable_model_exits_3_and_unreadable_image_exits_4(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a model")
    assert main(["benchmark", str(broken)]) == 3
    assert capsys.readouterr().err.startswith("edge-classify: error: ")
    image = tmp_path / "photo.jpg"
    image.write_bytes(b"not a jpeg")
    assert main(["benchmark", str(MODEL), "--image", str(image)]) == 4
    assert (
        capsys.readouterr().err.strip()
        == f"edge-classify: error: {image}: OpenCV cannot decode it as an image; pass a JPEG or PNG file"
    )


def test_console_script_and_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edgetl.runtime", "benchmark", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "Usage: edge-classify benchmark [OPTIONS] MODEL.tflite..." in result.stdout
    result = subprocess.run(
        [sys.executable, "-m", "edgetl.runtime", "--help"], capture_output=True, text=True, timeout=60
    )
    assert "edge-classify benchmark MODEL.tflite..." in result.stdout


def test_bench_device_section_has_the_table_and_the_ratios(two_models: list[Path], tmp_path: Path) -> None:
    """benchmarks/device.py's rendering, on a real report (the second copy labelled fp32 for the ratio)."""
    from benchmarks import device as bench_device

    report = benchmark.run_benchmark(
        benchmark.BenchmarkConfig(models=tuple(map(str, two_models)), threads=(1, 2), runs=3, warmup=1)
    )
    for row in report["rows"][1::2]:
        row["quantization"] = "fp32"
    ratios = bench_device.ratios(report)
    assert [r["threads"] for r in ratios] == [1, 2]
    rows = {(r["quantization"], r["threads"]): r for r in report["rows"]}
    assert ratios[0]["invoke_p50"] == round(rows["int8", 1]["invoke_p50_ms"] / rows["fp32", 1]["invoke_p50_ms"], 3)
    meta = {"models": "Models: a, b", "command": "edge-classify benchmark a b", "load_before": "1", "load_after": "1"}
    bench_device.write_section(tmp_path, "device", bench_device.render([report, report], meta), {"runs": [report]})
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "```text\nboard: " in text and "| a.tflite | int8 | 1 | 3 |" in text and "**under load**" in text
    assert (
        text.count("| 2 | 2 | ") == 1 and json.loads((tmp_path / "benchmarks.json").read_text())["sections"]["device"]
    )
