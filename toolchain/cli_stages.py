"""``edgetl qat``, ``calibrate``, ``convert``, ``parity`` and ``run``: the commands that work on a run folder.

Thin Click commands registered on :data:`edgetl.cli.main`; each builds a typed config and calls one stage.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, Optional

import click
from edgetl import log
from edgetl.cli import (
    alias_option,
    dataclass_defaults,
    emit,
    main,
    quiet_option,
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
from edgetl.errors import MissingExtraError, require_train_extra
from edgetl.parity_config import Inconclusive, ParityConfig, parse_limit
from edgetl.parity_summary import lines as answer_lines

DATA_ROOT_HELP = (
    "The folder holding the run's images, for a run folder not trained on this machine "
    "(its recorded data root is used only when this machine recorded it)."
)
data_root_option = click.option(
    "--data-root", type=click.Path(exists=True), help=DATA_ROOT_HELP
)  # edgetl.untrusted: a received run folder cannot choose which files are read


class HiddenAliases(click.Option):
    """An option whose first name is shown and whose later names (older spellings in users' scripts) still work."""

    def get_help_record(self, ctx: click.Context) -> Optional[tuple[str, str]]:
        shown, self.opts = self.opts, self.opts[:1]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = shown

    def get_error_hint(self, ctx: click.Context) -> str:
        return f"'{self.opts[0]}'"


def threshold_help(example: str) -> str:
    """The shared tail of the threshold options' help, with an example valid for that option."""
    return f"VALUE for every variant, or VARIANT=VALUE pairs ({example}); default: per variant, see README"


@main.command()
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
    from edgetl.parity import run_parity  # noqa: PLC0415

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


QAT_DEFAULTS = dataclass_defaults(QatConfig)


@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--epochs",
    type=int,
    default=QAT_DEFAULTS["epochs"],
    show_default=True,
    help="Most fine-tuning epochs (early stopping on val).",
)
@click.option(
    "--learning-rate",
    type=float,
    default=QAT_DEFAULTS["learning_rate"],
    show_default=True,
    help="Adam learning rate (low: the model is already trained).",
)
@click.option(
    "--batch-size", type=int, default=QAT_DEFAULTS["batch_size"], show_default=True, help="Images per training step."
)
@click.option(
    "--patience", type=int, default=QAT_DEFAULTS["patience"], show_default=True, help="Early-stopping patience."
)
@click.option(
    "--augment/--no-augment",
    default=QAT_DEFAULTS["augment"],
    show_default=True,
    help="Flip, small rotation and contrast.",
)
@click.option(
    "--distill",
    type=float,
    default=QAT_DEFAULTS["distill"],
    show_default=True,
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
    from edgetl.qat import qat as run_qat  # noqa: PLC0415

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


@main.command()
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
    from edgetl.calibrate import calibrate as run_calibrate  # noqa: PLC0415
    from edgetl.calibration import MANIFEST_NAME  # noqa: PLC0415

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


@main.command()
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
@click.option(
    "--max-evals",
    type=int,
    default=ConvertConfig.max_evals,
    show_default=True,
    help="--max-drop: most validation passes.",
)
@click.option(
    "--max-seconds",
    type=float,
    default=ConvertConfig.max_seconds,
    show_default=True,
    help="--max-drop: wall-time cap of the search.",
)
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
    from edgetl.convert import convert as run_convert  # noqa: PLC0415

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
    from edgetl import data  # noqa: PLC0415
    from edgetl.parity import run_parity  # noqa: PLC0415

    if not data.load_split(run_dir, "test", data_root)[1]:
        log.warn(f"{run_dir} has no test split (--test-fraction 0): check it with `edgetl parity {run_dir} --data DIR`")
        return
    with log.continued_stages():  # [8/11] after convert's [7/7]
        result = run_parity(
            ParityConfig(
                run=str(run_dir), data_root=data_root, max_drop=None if max_drop is None else {"int8": max_drop}
            )
        )
    for line in answer_lines(result):
        log.info(f"parity: {line}")
    result.raise_for_verdict()
    log.info(f"parity: {result.verdict.value} ({len(result.checks)} checks, {result.report_path})")


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run(args: tuple[str, ...]) -> None:
    """Classify a camera, video or images with a .tflite: `edge-classify` on this machine (see `edgetl run --help`)."""
    from edgetl.runtime.__main__ import main as edge_main  # noqa: PLC0415

    sys.exit(edge_main(list(args), prog_name="edgetl run"))


@main.command("report")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@quiet_option
def report_command(run: str) -> None:
    """Rebuild RUN/report.html (one self-contained page: data, training, test, variants, parity) and RUN/results.csv.

    Prints the page's path; open it in any browser (it loads nothing from the network).
    """
    from edgetl.runreport import write_report  # noqa: PLC0415

    if importlib.util.find_spec("matplotlib") is None:  # the figures; TensorFlow is not needed
        raise MissingExtraError("matplotlib")
    click.echo(str(write_report(Path(run))))
