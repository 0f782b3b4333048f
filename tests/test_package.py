"""The installed package: one ``edgetl`` name, a lazy Python API, no TensorFlow on the device side."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import edgetl
import pytest


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_import_edgetl_and_the_runtime_never_load_tensorflow(tmp_path: Path) -> None:
    """With tensorflow blocked in sys.modules, the package, its API names and the runtime still import."""
    code = (
        "import sys\n"
        "for name in ('tensorflow', 'tf_keras', 'keras', 'tensorflow_model_optimization'):\n"
        "    sys.modules[name] = None\n"
        "import edgetl, edgetl.runtime\n"
        "from edgetl.runtime import Classifier, ClassifierOptions\n"
        "edgetl.train, edgetl.qat, edgetl.convert, edgetl.parity, edgetl.calibrate\n"
        "import edgetl.cli.main, edgetl.config, edgetl.calibration\n"
        "print(sorted(k for k in sys.modules if k.split('.')[0] in ('toolchain', 'edge_runtime', 'calibration')))\n"
    )
    result = _python(code, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"  # nothing under the repository's folder names


def test_a_users_calibration_py_in_the_working_directory_breaks_nothing(tmp_path: Path) -> None:
    """The generic names (calibration, toolchain, edge_runtime) are the user's: ours live under edgetl."""
    for name in ("calibration", "toolchain", "edge_runtime"):
        (tmp_path / f"{name}.py").write_text("raise SystemExit('the user module was imported instead of edgetl')\n")
    code = "import edgetl.calibration, edgetl.runtime, edgetl.cli.main\nprint(edgetl.calibration.MANIFEST_NAME)\n"
    result = _python(code, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "calibration.json"
    cli = subprocess.run(
        [sys.executable, "-m", "edgetl", "calibrate", "--help"], capture_output=True, text=True, cwd=tmp_path
    )
    assert cli.returncode == 0 and "calibration.json" in cli.stdout


def test_the_api_names_stay_functions_after_the_stage_modules_load() -> None:
    from edgetl.convert.stage import ConvertResult  # noqa: F401 - imports the stage module edgetl.convert
    from edgetl.parity.stage import run_parity  # noqa: F401
    from edgetl.train.stage import TrainResult  # noqa: F401

    for name in ("train", "qat", "calibrate", "convert", "parity"):
        assert callable(getattr(edgetl, name)), name
    assert edgetl.runtime.Classifier.__module__ == "edgetl.runtime.classifier"


def test_api_builds_configs_from_keywords_and_enum_strings() -> None:
    from edgetl.api import _config
    from edgetl.config import ConvertConfig, IoType, Quantization, Rounding, TrainConfig

    convert = _config(
        ConvertConfig, None, {"run": "r", "quantizations": ["fp32", "int8"], "io": "int8", "rounding": "nearest"}
    )
    assert convert.quantizations == (Quantization.FP32, Quantization.INT8)
    assert convert.io == IoType.INT8 and convert.rounding == Rounding.NEAREST
    base = TrainConfig(data="d", output="o")
    assert _config(TrainConfig, base, {"epochs": 3, "pooling": "max"}).pooling.value == "max"


def test_api_errors_are_the_cli_errors(tmp_path: Path) -> None:
    from edgetl.errors import RunFolderError

    with pytest.raises(RunFolderError, match="is it an `edgetl train` run folder"):
        edgetl.convert(tmp_path)
