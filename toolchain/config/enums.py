"""The choices of edgetl's configs as ``str`` Enums (one ``Quantization`` behind ``--variants``, the converter and the report)."""

from __future__ import annotations

import enum


class Pooling(str, enum.Enum):
    """Global pooling between the backbone and the head."""

    AVG = "avg"
    MAX = "max"


class MixedPrecision(str, enum.Enum):
    """Compute dtype policy; ``auto`` picks float16 on a GPU and float32 elsewhere."""

    AUTO = "auto"
    OFF = "off"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"


class Strategy(str, enum.Enum):
    """``tf.distribute`` strategy; ``auto`` mirrors across GPUs when there are several.

    ``multi-worker`` is ``MultiWorkerMirroredStrategy`` over the hosts ``TF_CONFIG`` lists.
    """

    AUTO = "auto"
    DEFAULT = "default"
    MIRRORED = "mirrored"
    MULTI_WORKER = "multi-worker"


class KeepFineTune(str, enum.Enum):
    """Whether the fine-tuned model replaces the head-only one.

    ``if-better``: only when the val split says the fine-tune helped (lower val loss
    and val top-1 no lower than the head-only model's); otherwise the head-only
    weights are restored. ``always``: keep it, as the tutorials do.
    """

    IF_BETTER = "if-better"
    ALWAYS = "always"


class Quantization(str, enum.Enum):
    """The TFLite variants ``edgetl convert`` writes, one file each."""

    FP32 = "fp32"
    FP16 = "fp16"
    DYNAMIC = "dynamic"
    INT8 = "int8"
    QAT_INT8 = "qat_int8"


# What ``edgetl convert`` writes when --variants is not given (plus qat_int8 when the run has a QAT model).
DEFAULT_VARIANTS = (Quantization.FP32, Quantization.FP16, Quantization.DYNAMIC, Quantization.INT8)


class IoType(str, enum.Enum):
    """Input/output tensor type of a full-integer model (``uint8`` takes raw camera pixels)."""

    UINT8 = "uint8"
    INT8 = "int8"
    FLOAT32 = "float32"


class Rounding(str, enum.Enum):
    """How the int8 variant's weights are rounded to their int8 steps."""

    GPTQ = "gptq"  # calibrated: GPTQ + bias correction on a simulated int8 graph (edgetl.convert.rounding)
    NEAREST = "nearest"  # the converter's own round-to-nearest
