"""``edgetl qat``, ``calibrate``, ``convert``, ``run`` and ``report``: the commands that work on a run folder.

Thin Click commands (added to the group in :mod:`edgetl.cli.main`); each builds a typed config and calls one stage.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, Optional

import click
from edgetl import data, log
from edgetl.calibration import MANIFEST_NAME
from edgetl.cli.common import (
    HiddenAliases,
    alias_option,
    data_root_option,
    dataclass_defaults,
    defaulted,
    emit,
    quiet_option,
    training_options,
    verbose_option,
    with_aliases,
)
from edgetl.config import (
    CalibrationConfig,
    ConvertConfig,
    IoType,
    QatConfig,
    Quantization,
    Rounding,
)
from edgetl.config.parity import ParityConfig
from edgetl.convert.calibrate import calibrate as run_calibrate
from edgetl.convert.stage import convert as run_convert
from edgetl.errors import MissingExtraError, require_train_extra
from edgetl.parity.stage import run_parity
from edgetl.parity.summary import lines
from edgetl.qat.stage import qat as run_qat
from edgetl.runreport import write_report
from edgetl.runtime.__main__ import main

QAT_DEFAULTS = dataclass_defaults(QatConfig)
CONVERT_DEFAULTS = dataclass_defaults(ConvertConfig)


@click.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@defaulted(QAT_DEFAULTS, "--epochs", int, help="Most fine-tuning epochs (early stopping on val).")
@defaulted(QAT_DEFAULTS, "--learning-rate", float, help="Adam learning rate (low: the model is already trained).")
@training_options(QAT_DEFAULTS)
@defaulted(
    QAT_DEFAULTS,
    "--distill",
    float,
    help="Share of the loss matching model.keras's probabilities (1: keep the float model's behaviour, "
    "which parity checks; 0: train on the labels, which can trade accuracy between classes).",
)
@click.option("--seed", type=int, help="Shuffle/augmentation seed (default: the run's training seed).")
@data_root_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@quiet_option
@verbose_option
def qat(run: str, as_json: bool, **options: Any) -> None:
    """Quantization-aware fine-tune of RUN/model.keras into RUN/model_qat.keras (+ model_qat.json)."""
    require_train_extra()

    result = run_qat(QatConfig(run=run, **options))
    top1 = {s: result.metrics[s]["top1"] for s in ("val", "test")}
    summary = {
        "model": str(result.model_path),
        "card": str(result.card_path),
        "val_top1": top1["val"],
        "test_top1": top1["test"],
        "float_test_top1": result.float_metrics.get("test", {}).get("top1"),
        "seconds": round(result.seconds, 1),
    }
    test = "no test split" if top1["test"] is None else f"test top-1 {top1['test']:.4f}"
    emit(summary, as_json, f"{result.model_path}  QAT val top-1 {top1['val']:.4f}  {test}")


@click.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--calib-size",
    "size",
    type=int,
    default=CalibrationConfig.size,
    show_default=True,
    help="Images in the representative set.",
)
@click.option(
    "--calib-seed",
    "seed",
    type=int,
    default=CalibrationConfig.seed,
    show_default=True,
    help="Seeds which train-split images are picked (as convert's --calib-seed).",
)
@alias_option("--seed", "seed", int)
@data_root_option
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@quiet_option
@click.pass_context
def calibrate(ctx: click.Context, run: str, size: int, seed: int, data_root: Optional[str], as_json: bool) -> None:
    """Choose the int8 representative set from RUN's train split; write RUN/calibration.json."""
    seed = with_aliases(ctx, {"seed": seed})["seed"]

    manifest = run_calibrate(CalibrationConfig(run=run, size=size, seed=seed, data_root=data_root))
    counts = sorted(set(manifest.per_class.values()))
    spread = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    emit(
        manifest.to_dict(),
        as_json,
        f"{Path(run) / MANIFEST_NAME}  {manifest.size} images, {spread} per class, "
        f"seed {manifest.seed}, sha256 {manifest.sha256[:16]}…",
    )


def _quantizations(
    ctx: click.Context, param: click.Parameter, value: Optional[str]
) -> Optional[tuple[Quantization, ...]]:
    if value is None:
        return None
    out = []
    for name in (v.strip().lower().replace("-", "_") for v in value.split(",") if v.strip()):
        try:
            out.append(Quantization(name))
        except ValueError:
            choices = ", ".join(q.value.replace("_", "-") for q in Quantization)
            raise click.BadParameter(f"{name.replace('_', '-')!r} is not one of {choices}") from None
    return tuple(out)


@click.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--variants",
    "--quant",
    "quantizations",
    cls=HiddenAliases,
    callback=_quantizations,
    help="Comma-separated variants: fp32,fp16,dynamic,int8,qat-int8 (default: all but qat-int8, "
    "plus qat-int8 when model_qat.keras exists; --quant still works).",
)
@click.option(
    "--io",
    "io_type",
    type=click.Choice([t.value for t in IoType]),
    default="uint8",
    show_default=True,
    help="Input/output type of the int8 variants (uint8 takes raw camera pixels).",
)
@click.option("--calib-size", type=int, help="Representative images (default: reuse calibration.json, else 300).")
@click.option("--calib-seed", type=int, help="Representative set seed (default: reuse calibration.json, else 42).")
@click.option("--debug", is_flag=True, help="Per-layer int8 error statistics to RUN/int8_debug.csv.")
@click.option("--keep-float", help="Comma-separated Keras layer names the int8 variant keeps in float.")
@click.option(
    "--rounding",
    type=click.Choice([r.value for r in Rounding]),
    default="gptq",
    show_default=True,
    help="int8 weight rounding: gptq (calibrated, with bias correction) or the converter's nearest.",
)
@data_root_option
@click.option(
    "--max-drop",
    type=float,
    help="A top-1 budget in points vs model.keras on the val split: search for the cheapest int8 that keeps it "
    "(a larger calibration set, then the fewest float layers); exit 1, nothing written, when none does. "
    "The parity gate then checks int8 against this budget.",
)
@defaulted(CONVERT_DEFAULTS, "--max-evals", int, help="--max-drop: most validation passes.")
@defaulted(CONVERT_DEFAULTS, "--max-seconds", float, help="--max-drop: wall-time cap of the search.")
@click.option("--no-parity", is_flag=True, help="Do not run `edgetl parity` after converting.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@quiet_option
@verbose_option
def convert(
    run: str,
    quantizations: Optional[tuple[Quantization, ...]],
    io_type: str,
    keep_float: Optional[str],
    rounding: str,
    no_parity: bool,
    as_json: bool,
    **options: Any,
) -> None:
    """Convert RUN/model.keras to TFLite variants (RUN/model_<variant>.tflite + card each)."""
    require_train_extra()

    layers = tuple(n.strip() for n in keep_float.split(",") if n.strip()) if keep_float else ()
    result = run_convert(
        ConvertConfig(
            run=run,
            quantizations=quantizations,
            io=IoType(io_type),
            keep_float=layers,
            rounding=Rounding(rounding),
            **options,
        )
    )
    emit(result.to_dict(), as_json, result.table())
    if not no_parity:
        _run_parity_if_available(Path(run), options.get("data_root"), options.get("max_drop"))


def _run_parity_if_available(run_dir: Path, data_root: Optional[str] = None, max_drop: Optional[float] = None) -> None:
    """The parity gate at the end of ``convert``: same thresholds as ``edgetl parity`` (int8's drop: ``--max-drop``)."""

    if not data.load_split(run_dir, "test", data_root)[1]:
        log.warn(f"{run_dir} has no test split (--test-fraction 0): check it with `edgetl parity {run_dir} --data DIR`")
        return
    with log.continued_stages():  # [8/11] after convert's [7/7]
        result = run_parity(
            ParityConfig(
                run=str(run_dir), data_root=data_root, max_drop=None if max_drop is None else {"int8": max_drop}
            )
        )
    for line in lines(result):
        log.info(f"parity: {line}")
    result.raise_for_verdict()
    log.info(f"parity: {result.verdict.value} ({len(result.checks)} checks, {result.report_path})")


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run(args: tuple[str, ...]) -> None:
    """Classify a camera, video or images with a .tflite: `edge-classify` on this machine (see `edgetl run --help`)."""

    sys.exit(main(list(args), prog_name="edgetl run"))


@click.command("report")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@quiet_option
def report_command(run: str) -> None:
    """Rebuild RUN/report.html (one self-contained page: data, training, test, variants, parity) and RUN/results.csv.

    Prints the page's path; open it in any browser (it loads nothing from the network).
    """

    if importlib.util.find_spec("matplotlib") is None:  # the figures; TensorFlow is not needed
        raise MissingExtraError("matplotlib")
    click.echo(str(write_report(Path(run))))
