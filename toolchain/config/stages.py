"""The typed configuration of each stage: frozen dataclasses, validated when built.

The CLI builds one of these from its options and hands it to one stage function; the run folder
keeps ``config.json`` so ``edgetl train --config RUN/config.json`` reproduces a run.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Optional

from edgetl.config.checks import (
    MAX_EPOCHS,
    check_calib_size,
    check_seed,
    check_types,
    from_dict,
    require,
)
from edgetl.config.enums import (
    IoType,
    KeepFineTune,
    MixedPrecision,
    Pooling,
    Quantization,
    Rounding,
    Strategy,
)
from edgetl.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything ``edgetl train`` needs; its JSON form reproduces a run.

    Attributes:
        data: folder of class sub-folders (optionally split into train/val/test),
            a ``.csv`` of ``path,label``, or a ``.npz`` / ``.npy`` image array.
        output: run folder to create.
        backbone: ``mobilenet_v2`` or ``hub:HANDLE_OR_LOCAL_DIR`` (float only, no QAT).
        alpha: MobileNetV2 width multiplier.
        image_size: square input size in pixels: 96-224 with ImageNet weights, 32-1024 otherwise.
        weights: ``imagenet``, ``none`` or a path to a Keras weights file.
        cache_views: views per training image whose backbone features are computed
            once for the frozen-backbone phase (1 = no augmentation, 0 = recompute
            the backbone every epoch, the slow way).
        max_per_class: cap images per class (a quick subset); None keeps all.
        patience: early-stopping patience in epochs (best weights are restored).
        cache_dir: where decoded pixels are cached; None = ``~/.cache/edgetl/pixels``
            (``$XDG_CACHE_HOME``, or ``$EDGETL_PIXEL_CACHE``).
    """

    data: str
    output: str
    backbone: str = "mobilenet_v2"
    alpha: float = 1.0
    image_size: int = 224
    weights: str = "imagenet"
    pooling: Pooling = Pooling.AVG
    hidden_units: int = 0
    dropout: float = 0.2
    head_batchnorm: bool = False
    # The measured recipe (docs/cli.md, "Why these defaults"): head on cached features, then the top
    # 60 layers at 1e-4, kept only when the val split says it helped; early stopping
    # (patience) ends either phase when val loss stalls.
    epochs: int = 20
    fine_tune_epochs: int = 10
    fine_tune_layers: int = 60
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-4
    keep_fine_tune: KeepFineTune = KeepFineTune.IF_BETTER
    batch_size: int = 32
    seed: int = 42
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    augment: bool = True
    cache_views: int = 3
    max_per_class: Optional[int] = None
    patience: int = 3
    mixed_precision: MixedPrecision = MixedPrecision.AUTO
    strategy: Strategy = Strategy.AUTO
    allow_outside_root: bool = False
    cache_dir: Optional[str] = None

    def __post_init__(self) -> None:
        check_types(self)
        check_seed("--seed", self.seed)
        require(
            [
                (0 < self.alpha <= 1.4, f"--alpha must be in (0, 1.4] (got {self.alpha:g})"),
                (32 <= self.image_size <= 1024, f"--image-size must be between 32 and 1024 (got {self.image_size})"),
                (
                    self.weights.lower() != "imagenet" or self.is_hub or 96 <= self.image_size <= 224,
                    f"--image-size {self.image_size} is outside 96-224, the sizes MobileNetV2's ImageNet weights are "
                    "made for; pick a size in that range, or pass --weights none to train from scratch (32-1024)",
                ),
                (
                    1 <= self.epochs <= MAX_EPOCHS,
                    f"--epochs must be in 1..{MAX_EPOCHS} (got {self.epochs}); the head needs at least one",
                ),
                (
                    0 <= self.fine_tune_epochs <= MAX_EPOCHS,
                    f"--fine-tune-epochs must be in 0..{MAX_EPOCHS} (got {self.fine_tune_epochs})",
                ),
                (
                    self.fine_tune_layers >= 0,
                    f"--fine-tune-layers must be >= 0 (got {self.fine_tune_layers}); a large number tunes every layer",
                ),
                (1 <= self.batch_size <= 65536, f"--batch-size must be in 1..65536 (got {self.batch_size})"),
                (
                    0 <= self.hidden_units <= 65536,
                    f"--hidden-units must be in 0..65536, 0 = none (got {self.hidden_units})",
                ),
                (0 <= self.dropout < 1, f"--dropout must be in [0, 1) (got {self.dropout:g})"),
                (
                    0 < self.learning_rate <= 10,
                    f"--learning-rate must be a number in (0, 10] (got {self.learning_rate:g})",
                ),
                (
                    0 < self.fine_tune_learning_rate <= 10,
                    f"--fine-tune-learning-rate must be a number in (0, 10] (got {self.fine_tune_learning_rate:g})",
                ),
                (
                    0 < self.val_fraction < 1 and 0 <= self.test_fraction < 1,
                    "--val-fraction must be in (0, 1) and --test-fraction in [0, 1) "
                    f"(got {self.val_fraction:g} and {self.test_fraction:g}); --test-fraction 0 keeps no test split "
                    "(test on your own held-out images: edgetl parity RUN --data DIR)",
                ),
                (self.val_fraction + self.test_fraction < 0.9, "val + test fractions must leave >= 10% to train"),
                (0 <= self.cache_views <= 100, f"--cache-views must be in 0..100 (got {self.cache_views})"),
                (
                    self.max_per_class is None or self.max_per_class >= 3,
                    f"--max-per-class must be >= 3 (got {self.max_per_class})",
                ),
                (1 <= self.patience <= MAX_EPOCHS, f"--patience must be in 1..{MAX_EPOCHS} (got {self.patience})"),
                (
                    self.backbone == "mobilenet_v2" or (self.backbone.startswith("hub:") and len(self.backbone) > 4),
                    f"--backbone {self.backbone!r} is not supported; pass mobilenet_v2 or hub:HANDLE_OR_DIR",
                ),
            ]
        )

    @property
    def is_hub(self) -> bool:
        return self.backbone.startswith("hub:")

    def to_dict(self) -> dict[str, Any]:
        return {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        return from_dict(cls, data)


DEFAULT_CALIB_SIZE = 300
DEFAULT_CALIB_SEED = 42


@dataclasses.dataclass(frozen=True)
class CalibrationConfig:
    """``edgetl calibrate``: how many train-split images the representative set holds.

    Attributes:
        run: the run folder (its ``splits/train.csv`` is the only source).
        size: images in the set, balanced over classes (fewer when the split is smaller).
        seed: seeds which images are picked and their order.
        data_root: the folder holding the run's images, when the run folder was not trained
            on this machine (its recorded root is then not used; ``edgetl.untrusted``).
    """

    run: str
    size: int = DEFAULT_CALIB_SIZE
    seed: int = DEFAULT_CALIB_SEED
    data_root: Optional[str] = None

    def __post_init__(self) -> None:
        check_types(self)
        check_seed("--seed", self.seed)
        check_calib_size(self.size)


@dataclasses.dataclass(frozen=True)
class QatConfig:
    """``edgetl qat``: a short quantization-aware fine-tune of ``RUN/model.keras``.

    Attributes:
        run: the run folder.
        epochs: most fine-tuning epochs (early stopping on val loss restores the best).
        learning_rate: Adam learning rate; low, the model is already trained.
        seed: shuffling/augmentation seed; None uses the run's training seed.
        distill: share of the loss that is cross-entropy to the float model's
            probabilities (1: match model.keras, 0: train on the labels alone).
        data_root: the folder holding the run's images (see ``CalibrationConfig``).
    """

    run: str
    epochs: int = 3
    learning_rate: float = 1e-5
    batch_size: int = 32
    patience: int = 2
    augment: bool = True
    seed: Optional[int] = None
    distill: float = 1.0
    data_root: Optional[str] = None

    def __post_init__(self) -> None:
        check_types(self)
        check_seed("--seed", self.seed)
        require(
            [
                (1 <= self.epochs <= MAX_EPOCHS, f"--epochs must be >= 1 and <= {MAX_EPOCHS} (got {self.epochs})"),
                (0 <= self.distill <= 1, f"--distill must be a number in [0, 1] (got {self.distill:g})"),
                (
                    0 < self.learning_rate <= 10,
                    f"--learning-rate must be a number in (0, 10] (got {self.learning_rate:g})",
                ),
                (1 <= self.batch_size <= 65536, f"--batch-size must be in 1..65536 (got {self.batch_size})"),
                (1 <= self.patience <= MAX_EPOCHS, f"--patience must be in 1..{MAX_EPOCHS} (got {self.patience})"),
            ]
        )


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    """``edgetl convert``: which TFLite variants to write and how.

    Attributes:
        run: the run folder.
        quantizations: variants to write; None = fp32, fp16, dynamic, int8 (+ qat_int8
            when ``model_qat.keras`` exists).
        io: input/output type of the full-integer variants (float variants stay float32).
        calib_size, calib_seed: representative set; None reuses ``calibration.json``
            (or makes a default one).
        debug: write per-layer int8 error statistics (``int8_debug.csv``).
        keep_float: Keras layer names the int8 variant keeps in float.
        rounding: how the int8 variant's weights are rounded (calibrated GPTQ by default).
        data_root: the folder holding the run's images (see ``CalibrationConfig``).
        max_drop: a top-1 budget in points vs ``model.keras`` on the val split: search for the
            cheapest int8 model that keeps it (:mod:`edgetl.convert.budget`); None converts as asked.
        max_evals, max_seconds: caps on the search (validation passes, wall time).
    """

    run: str
    quantizations: Optional[tuple[Quantization, ...]] = None
    io: IoType = IoType.UINT8
    calib_size: Optional[int] = None
    calib_seed: Optional[int] = None
    debug: bool = False
    keep_float: tuple[str, ...] = ()
    rounding: Rounding = Rounding.GPTQ
    data_root: Optional[str] = None
    max_drop: Optional[float] = None
    max_evals: int = 12
    max_seconds: float = 1800.0

    def __post_init__(self) -> None:
        check_types(self)
        check_seed("--calib-seed", self.calib_seed)
        check_budget(self)
        if self.calib_size is not None:
            check_calib_size(self.calib_size)
        if self.quantizations is not None and not self.quantizations:
            raise ConfigError(
                "--variants needs at least one of: " + ", ".join(q.value.replace("_", "-") for q in Quantization)
            )
        if (
            (self.debug or self.keep_float)
            and self.quantizations is not None
            and Quantization.INT8 not in self.quantizations
        ):
            raise ConfigError("--debug and --keep-float apply to the int8 variant; add int8 to --variants")


def check_budget(config: ConvertConfig) -> None:
    """``--max-drop`` and its caps: a budget in points, on the int8 variant, choosing the float layers itself."""
    if config.max_drop is None:
        return
    require(
        [
            (
                0 <= config.max_drop <= 100,
                f"--max-drop is a top-1 drop in percentage points, between 0 and 100 (got {config.max_drop:g})",
            ),
            (
                config.quantizations is None or Quantization.INT8 in config.quantizations,
                "--max-drop searches the int8 variant (other variants have no calibration or float layers to "
                "choose); add int8 to --quant",
            ),
            (not config.keep_float, "--max-drop chooses the float layers itself; leave out --keep-float"),
            (1 <= config.max_evals <= 1000, f"--max-evals must be in 1..1000 (got {config.max_evals})"),
            (0 < config.max_seconds <= 7 * 86400, f"--max-seconds must be in (0, 604800] (got {config.max_seconds:g})"),
        ]
    )
