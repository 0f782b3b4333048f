"""The command line: help without TensorFlow, and one clear line for every bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from edgetl.cli.main import main


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, command in group.commands.items():
        out.append(prefix + (name,))
        if isinstance(command, click.Group):
            out += _commands(command, prefix + (name,))
    return out


@pytest.mark.parametrize("command", [()] + _commands(main), ids=lambda c: " ".join(c) or "edgetl")
def test_every_command_has_help(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0 and "usage:" in result.output.lower()  # `run` forwards to edge-classify's argparse


def test_help_does_not_import_tensorflow() -> None:
    code = (
        "import sys\nfrom edgetl.cli.main import main\ntry:\n  main(['--help'])\nexcept SystemExit:\n  pass\n"
        "print(sorted(m for m in ('tensorflow', 'tf_keras', 'cv2') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip().splitlines()[-1] == "[]"


def _run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_missing_data_is_one_line(tmp_path: Path) -> None:
    result = _run("train", str(tmp_path / "nope"), "-o", str(tmp_path / "run"))
    assert result.exit_code == 3
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: {tmp_path / 'nope'} does not exist; pass a folder of class sub-folders, a .csv of path,label, or a .npz"
    )
    assert result.stdout == ""


def test_single_class_and_existing_output(tmp_path: Path) -> None:
    (tmp_path / "d" / "only").mkdir(parents=True)
    (tmp_path / "d" / "only" / "x.png").write_bytes(b"")
    result = _run("train", str(tmp_path / "d"), "-o", str(tmp_path / "run"))
    assert result.exit_code == 3 and "a classifier needs at least two" in result.output
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("x")
    result = _run("train", str(tmp_path / "d"), "-o", str(tmp_path / "run"))
    assert result.exit_code == 2 and "already exists and is not empty" in result.output


def test_invalid_values_exit_2(tmp_path: Path) -> None:
    result = _run("train", str(tmp_path), "-o", str(tmp_path / "r"), "--image-size", "8")
    assert result.exit_code == 2 and "--image-size must be between 32 and 1024" in result.output
    result = _run("train", str(tmp_path), "-o", str(tmp_path / "r"), "--image-size", "500")
    assert result.exit_code == 2 and "--image-size 500 is outside 96-224" in result.output, result.output
    assert "--weights none" in result.output
    result = _run("train", str(tmp_path), "-o", str(tmp_path / "r"), "--pooling", "median")
    assert result.exit_code == 2 and "'median' is not one of 'avg', 'max'" in result.output
    (tmp_path / "c.json").write_text(json.dumps({"data": "x", "output": "y", "learning_rat": 1}))
    result = _run("train", "--config", str(tmp_path / "c.json"))
    assert result.exit_code == 2 and "unknown config key(s) learning_rat" in result.output
    assert "Traceback" not in result.output


def test_data_command_writes_fashion_mnist(tmp_path: Path) -> None:
    result = _run("data", "fashion-mnist", str(tmp_path / "fm"), "--per-class", "3")
    assert result.exit_code == 0 and "30 images in 10 classes" in result.output
    assert sorted(p.name for p in (tmp_path / "fm").iterdir())[:2] == ["ankle_boot", "bag"]
    again = _run("data", "fashion-mnist", str(tmp_path / "fm"))
    assert again.exit_code == 3 and "already exists" in again.output


@pytest.mark.parametrize("command, old", [("convert", "--quant"), ("parity", "--models")])
def test_variant_lists_are_called_variants_and_the_old_names_still_work(command: str, old: str, tmp_path: Path) -> None:
    shown = CliRunner().invoke(main, [command, "--help"]).output
    assert re.search(r"^  --variants TEXT", shown, re.M) and not re.search(rf"^  {old}\b", shown, re.M)
    assert f"{old} still works" in " ".join(shown.split())
    for name in ("--variants", old):  # both parse the list; the empty folder is then refused as a run (exit 3)
        result = CliRunner().invoke(main, [command, str(tmp_path), name, "int8"])
        assert result.exit_code == 3, result.output


def test_threads_default_to_all_cores_in_parity_and_edge_classify() -> None:
    from edgetl.config.parity import ParityConfig
    from edgetl.runtime.__main__ import cli as edge_cli

    parity_help = " ".join(CliRunner().invoke(main, ["parity", "--help"], terminal_width=200).output.split())
    edge_help = " ".join(CliRunner().invoke(edge_cli, ["--help"]).output.split())
    assert "(default: all cores, as in edge-classify)" in parity_help and "(default: all cores)" in edge_help
    assert ParityConfig(run="r").threads is None
