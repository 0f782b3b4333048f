"""``edgetl``: the command group. Each family of commands lives in its own module and is added here."""

from __future__ import annotations

import click
from edgetl import log
from edgetl.cli import cache, parity, stages, train
from edgetl.cli.common import FriendlyGroup


@click.group(cls=FriendlyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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


for _command in (
    train.train,
    train.weights,
    train.data,
    stages.qat,
    stages.calibrate,
    stages.convert,
    parity.parity,
    stages.report_command,
    stages.run,
    cache.cache,
):
    main.add_command(_command)
