"""``edgetl parity``: the gate's command; its one-line-per-variant summary and the answer (what to deploy).

A thin Click command (added to the group in :mod:`edgetl.cli.main`): options -> ``ParityConfig`` -> ``run_parity``.
"""

from __future__ import annotations

from typing import Any, Optional

import click
from edgetl.cli.common import HiddenAliases, data_root_option, emit, quiet_option, verbose_option
from edgetl.config.parity import Inconclusive, ParityConfig, parse_limit
from edgetl.errors import require_train_extra
from edgetl.parity.stage import run_parity
from edgetl.parity.summary import lines as answer_lines


def threshold_help(example: str) -> str:
    """The shared tail of the threshold options' help, with an example valid for that option."""
    return f"VALUE for every variant, or VARIANT=VALUE pairs ({example}); default: per variant, see docs/parity.md"


@click.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--data",
    "data_path",
    type=click.Path(exists=True),
    help="Another labelled folder/CSV (default: the run's test split).",
)
@click.option(
    "--variants",
    "--models",
    "models",
    cls=HiddenAliases,
    help="Comma-separated variants to check, e.g. int8,fp16 (default: every model_*.tflite; --models still works). "
    "A subset writes parity_<variants>.json/.md and keeps the full report.",
)
@click.option("--max-drop", help=f"Max top-1 drop vs model.keras, in points. {threshold_help('int8=0.5,fp16=0.2')}.")
@click.option(
    "--min-agreement",
    help=f"Min top-1 agreement with the model a variant came from, in percent (98 = 98%). {threshold_help('int8=98,fp16=99.5')}.",
)
@click.option("--max-class-drop", help=f"Max per-class top-1 drop, in points. {threshold_help('int8=3,qat-int8=2')}.")
@click.option(
    "--max-flip-ratio",
    help="Max changed answers as a multiple of the noise floor (how often the source's own answers change when "
    f"every pixel moves by ±1 grey level). {threshold_help('int8=1.5,fp16=2')}.",
)
@click.option(
    "--inconclusive",
    type=click.Choice([i.value for i in Inconclusive]),
    default=Inconclusive.PASS.value,
    show_default=True,
    help="Exit 0 (pass) or 4 (fail) when the held-out images are too few to decide a check.",
)
@click.option(
    "--threads", type=int, default=None, help="Interpreter threads (default: all cores, as in edge-classify)."
)
@click.option(
    "--junit",
    type=click.Path(dir_okay=False),
    help="Also write a JUnit XML report here (not a file of the run or the data).",
)
@data_root_option
@click.option(
    "--json", "as_json", is_flag=True, help="Print the whole report as JSON on stdout (also when the gate fails)."
)
@quiet_option
@verbose_option
def parity(
    run: str,
    data_path: Optional[str],
    models: Optional[str],
    as_json: bool,
    max_drop: Optional[str],
    min_agreement: Optional[str],
    max_class_drop: Optional[str],
    max_flip_ratio: Optional[str],
    **options: Any,
) -> None:
    """Check every .tflite of RUN against the model it came from, through the device code.

    Exit 0 pass, 1 a threshold is crossed (with evidence), 3 bad run folder or data,
    4 inconclusive under --inconclusive fail.
    """
    require_train_extra()

    config = ParityConfig(
        run=run,
        data=data_path,
        models=tuple(models.split(",")) if models is not None else None,
        max_drop=parse_limit("--max-drop", max_drop),
        min_agreement=parse_limit("--min-agreement", min_agreement),
        max_class_drop=parse_limit("--max-class-drop", max_class_drop),
        max_flip_ratio=parse_limit("--max-flip-ratio", max_flip_ratio),
        **options,
    )
    result = run_parity(config)
    emit(result.to_dict(), as_json, parity_summary(result))
    result.raise_for_verdict()


def parity_summary(result: Any) -> str:
    """One line per variant with intervals, the report's path and verdict, then the answer: what to deploy."""
    lines = []
    for name, m in result.models.items():
        d, f, floor = m["drop"], m["flip_rate"], m.get("noise_floor")
        lines.append(
            f"{name:9s} top-1 {100 * m['top1']:.2f}%  drop {d['value']:.2f} pt [{d['low']:.2f}, {d['high']:.2f}]  "
            f"flips {f['value']:.2f}% [{f['low']:.2f}, {f['high']:.2f}]"
            + (f"  noise floor {floor['value']:.2f}% [{floor['low']:.2f}, {floor['high']:.2f}]" if floor else "")
        )
    lines.append(
        f"{result.report_path}  {result.verdict.value}"
        + (" (gate passes)" if result.passed and result.verdict.value != "pass" else "")
    )
    return "\n".join(lines + answer_lines(result))
