"""Every option explains itself, one name per idea, and the CLI's defaults are the config dataclasses' defaults."""

from __future__ import annotations

import dataclasses
from typing import Iterator

import click
import pytest
from click.testing import CliRunner
from edgetl.cli.main import main
from edgetl.config import CalibrationConfig, QatConfig, TrainConfig


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        yield " ".join(prefix + (name,)), command
        if isinstance(command, click.Group):
            yield from _commands(command, prefix + (name,))


OWNED_ELSEWHERE = {"parity"}  # the parity command's options are being reworked with issue #17


def test_every_visible_option_has_help() -> None:
    missing = [
        f"{path} {'/'.join(p.opts)}"
        for path, command in _commands(main)
        for p in command.params
        if path not in OWNED_ELSEWHERE and isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()
    ]
    assert missing == []


@pytest.mark.parametrize(
    "command, config", [("train", TrainConfig), ("qat", QatConfig), ("calibrate", CalibrationConfig)]
)
def test_cli_defaults_are_the_dataclass_defaults(command: str, config: type) -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING}
    params = {p.name: p for p in main.commands[command].params if isinstance(p, click.Option) and p.expose_value}
    checked = 0
    for name, default in defaults.items():
        if name in params and default is not None:
            value = params[name].default
            if params[name].is_flag and not params[name].secondary_opts:
                continue  # a plain flag (--allow-outside-root) is off unless given
            assert value == (default.value if hasattr(default, "value") else default), name
            checked += 1
    assert checked >= 2


def test_one_name_per_idea_old_spellings_hidden_but_accepted(tmp_path) -> None:
    train_help = CliRunner().invoke(main, ["train", "--help"]).output
    assert "--per-class" in train_help and "--max-per-class" not in train_help
    calibrate_help = CliRunner().invoke(main, ["calibrate", "--help"]).output
    assert "--calib-seed" in calibrate_help and "--seed " not in calibrate_help
    # the old spelling still parses: it reaches the config validation (>= 3) instead of "no such option"
    result = CliRunner().invoke(main, ["train", str(tmp_path), "-o", str(tmp_path / "r"), "--max-per-class", "1"])
    assert result.exit_code == 2 and "--max-per-class must be >= 3" in result.output
    result = CliRunner().invoke(main, ["train", str(tmp_path), "-o", str(tmp_path / "r"), "--per-class", "1"])
    assert result.exit_code == 2 and "--max-per-class must be >= 3" in result.output
