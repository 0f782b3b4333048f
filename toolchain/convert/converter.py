"""One converter per variant, and the int8 steps: the SavedModel export, calibrated weight rounding,
selective float layers, and writing each checked ``.tflite`` with its card.

Every step takes a :class:`Conversion` (the run, its card and config, TensorFlow, the SavedModels and
the int8 calibration). The stage (``stage.py``) and the ``--max-drop`` search (``budget.py``) build
their candidates with these functions. Private TensorFlow Lite calls live in ``tflite_private.py``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from edgetl import calibration, data, log, runfolder
from edgetl.config import ConvertConfig, IoType, Quantization
from edgetl.convert import rounding as rounding_mod
from edgetl.convert import tflite_private
from edgetl.convert.tflite_inspect import float_ops, keep_float_nodes, layers_of, read_back
from edgetl.errors import ConfigError, ConversionError
from edgetl.model import classifier, graph
from edgetl.runfolder import FLOAT_MODEL, QAT_MODEL, card_path_for, sha256_file
from edgetl.runtime.metadata import embed
from edgetl.runtime.model_card import ModelCard, write_bytes_atomic


@dataclasses.dataclass
class VariantResult:
    """One written .tflite and its card."""

    quantization: Quantization
    path: Path
    card: ModelCard
    size_bytes: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        spec = lambda t: {"dtype": t.dtype, "scale": t.scale, "zero_point": t.zero_point}  # noqa: E731
        return {
            "quantization": self.quantization.value,
            "path": str(self.path),
            "card": str(card_path_for(self.path)),
            "size_bytes": self.size_bytes,
            "seconds": round(self.seconds, 2),
            "sha256": self.card.model_sha256,
            "input": spec(self.card.input),
            "output": spec(self.card.output),
        }


@dataclasses.dataclass(frozen=True)
class Conversion:
    """What every step of one ``edgetl convert`` works with, in one object instead of ten arguments.

    ``saved`` holds the SavedModel folders (``float``, ``qat``, and ``int8`` once the weights are
    rounded); ``manifest``, ``representative`` and ``rounding`` are the int8 calibration.
    """

    tf: Any
    config: ConvertConfig
    card: ModelCard
    run: Path
    work: Path
    saved: dict[str, Path]
    manifest: Optional[calibration.Manifest] = None
    representative: Optional[Callable[[], Any]] = None
    rounding: dict[str, Any] = dataclasses.field(default_factory=dict)

    def source(self, quant: Quantization) -> Path:
        """The SavedModel a variant is converted from."""
        return source_of(quant, self.saved)


def pixel_loader(
    run: Path, card: ModelCard, refs: tuple[str, ...], data_root: Optional[str]
) -> calibration.PixelLoader:
    """Pixels of a manifest ref: a file under the run's data root (decoded on the device path), or an array row."""
    return data.split_image_loader(run, card.height, card.interpolation, refs, data_root)


def export_all(run: Path, variants: list[Quantization], tmp: Path) -> tuple[Any, dict[str, Path]]:
    """Export the float (and QAT) Keras model once each; TF's chatter is hidden."""
    saved: dict[str, Path] = {}
    with log.quiet_native():
        graph.keras()
        import tensorflow as tf

        if any(q != Quantization.QAT_INT8 for q in variants):
            classifier.load(str(run / FLOAT_MODEL)).export(str(tmp / "float"))
            saved["float"] = tmp / "float"
    if Quantization.QAT_INT8 in variants:
        from edgetl.model.qat_scheme import load_qat  # tfmot only when a QAT model is converted

        quantized = load_qat(run)
        with log.quiet_native():
            quantized.export(str(tmp / "qat"))
        saved["qat"] = tmp / "qat"
    return tf, saved


def round_int8(
    tf: Any,
    run: Path,
    representative: Callable[[], Any],
    tmp: Path,
    saved: dict[str, Path],
    keep_float: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Export a BatchNorm-folded copy of the model with calibrated int8 weights as ``saved["int8"]``.

    ``keep_float`` layers keep their float weights, and the others are rounded for the graph with
    those layers in float (GPTQ's weights for a layer assume int8 inputs and outputs of its own).
    """
    images = np.concatenate([sample[0] for sample in representative()])  # decoded once, for both uses below
    with log.quiet_native():
        folded = graph.fold_batchnorm(classifier.load(str(run / FLOAT_MODEL)))
        folded.export(str(tmp / "folded"))
        ranges = calibrated_ranges(tf, tmp / "folded", lambda: ([image[None]] for image in images))
    try:
        report = rounding_mod.round_weights(
            folded, images[: rounding_mod.image_budget(folded, len(images))], ranges, keep_float
        )
    except (ValueError, KeyError, TypeError, np.linalg.LinAlgError) as exc:  # a graph the simulation does not know
        raise ConversionError(
            f"calibrated int8 rounding failed on this graph ({type(exc).__name__}: {str(exc)[:200]}); "
            f"rerun with --rounding nearest"
        ) from None
    with log.quiet_native():
        folded.export(str(tmp / "int8"))
    saved["int8"] = tmp / "int8"
    log.info(
        f"rounded {report.layers} layers on {report.images} images in {report.seconds:.0f}s; "
        f"the simulated int8 graph agrees with float on {100 * report.sim_agreement:.1f}% of them"
    )
    return {**report.to_dict(), **({"float_layers_kept": list(keep_float)} if keep_float else {})}


def calibrated_ranges(tf: Any, saved_dir: Path, representative: Callable[[], Any]) -> dict[str, tuple[float, float]]:
    """Keras layer name -> the (min, max) the int8 converter calibrates for that layer's output tensor."""
    converter = make_converter(tf, Quantization.INT8, {"float": Path(saved_dir)}, IoType.FLOAT32, representative)
    model = tflite_private.read_model(tflite_private.calibrate_only(converter))
    ranges: dict[str, tuple[float, float]] = {}
    for tensor in model.subgraphs[0].tensors:
        stats = tensor.quantization
        layers = layers_of(tensor.name.decode())
        if stats is not None and stats.min is not None and len(stats.min) == 1 and layers:
            ranges.setdefault(layers[0], (float(stats.min[0]), float(stats.max[0])))
    return ranges


def source_of(quant: Quantization, saved: dict[str, Path]) -> Path:
    if quant == Quantization.QAT_INT8:
        return saved["qat"]
    return saved["int8"] if quant == Quantization.INT8 and "int8" in saved else saved["float"]


def make_converter(
    tf: Any, quant: Quantization, saved: dict[str, Path], io_type: IoType, representative: Optional[Callable[[], Any]]
) -> Any:
    converter = tf.lite.TFLiteConverter.from_saved_model(str(source_of(quant, saved)))
    if quant == Quantization.FP32:
        return converter
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quant == Quantization.FP16:
        converter.target_spec.supported_types = [tf.float16]
    elif quant in (Quantization.INT8, Quantization.QAT_INT8):
        if quant == Quantization.INT8:  # QAT carries its ranges in the graph; PTQ calibrates them
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.representative_dataset = representative
        if io_type != IoType.FLOAT32:
            converter.inference_input_type = converter.inference_output_type = getattr(tf, io_type.value)
    return converter


def convert_bytes(conv: Conversion, quant: Quantization) -> bytes:
    """One variant's ``.tflite`` bytes; the converter's errors become one ``ConversionError`` line."""
    tf, config = conv.tf, conv.config
    converter = make_converter(tf, quant, conv.saved, config.io, conv.representative)
    try:
        with log.quiet_native():
            if quant == Quantization.INT8 and config.keep_float:
                return _selective_int8(tf, converter, config)
            return bytes(converter.convert())
    except (ConfigError, ConversionError):
        raise
    except Exception as exc:  # noqa: BLE001 - the converter raises many types (ConverterError, ValueError, RuntimeError)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(
            f"converting {quant.value} failed: {first[:300]}; rerun with -v to see the converter's log"
        ) from None


def _selective_int8(tf: Any, converter: Any, config: ConvertConfig) -> bytes:
    """Full-integer int8 with the ``--keep-float`` layers denylisted (left in float).

    The converter only calibrates; the MLIR quantizer then quantizes everything but
    the denylisted ops' outputs, the same two steps QuantizationDebugger uses for
    its selective quantization.
    """
    calibrated = tflite_private.calibrate_only(converter)
    nodes = keep_float_nodes(calibrated, config.keep_float)
    io_type = tf.float32 if config.io == IoType.FLOAT32 else getattr(tf, config.io.value)
    return tflite_private.quantize_calibrated(calibrated, io_type, nodes)


def commit_variant(staged: Path, staged_card: Path, path: Path) -> None:
    """Move a checked model and its card into place: old card out, model in, card in (atomic renames).

    A kill in between leaves at worst a model without a card (refused by the device
    and parity), never a card that does not match the file beside it.
    """
    card_path = card_path_for(path)
    card_path.unlink(missing_ok=True)
    os.replace(staged, path)
    os.replace(staged_card, card_path)


def write_variant(
    conv: Conversion, quant: Quantization, notes: Optional[dict[str, Any]] = None, commit: bool = True
) -> VariantResult:
    """Convert one variant, check it in the hidden ``work`` folder, then move it and its card into the run.

    ``notes`` are added to the card's extra; ``commit=False`` leaves the model staged (``path`` is the staged file).
    """
    config, card, run = conv.config, conv.card, conv.run
    start = time.monotonic()
    model = convert_bytes(conv, quant)
    seconds = time.monotonic() - start
    model = embed(
        model, card, quant.value
    )  # labels + normalisation inside the file too (MediaPipe, card-less edge-classify)
    name = runfolder.variant_file(quant.value)
    path, staged = run / name, conv.work / name
    write_bytes_atomic(staged, model)
    spec_in, spec_out = read_back(staged, card)
    integer = quant in (Quantization.INT8, Quantization.QAT_INT8)
    if integer and config.io != IoType.FLOAT32 and not (quant == Quantization.INT8 and config.keep_float):
        floating = float_ops(staged)
        if floating:
            raise ConversionError(
                f"{path.name} is not fully integer: {len(floating)} op(s) compute in float "
                f"({', '.join(floating[:5])}); the graph lacks int8 kernels or ranges for them"
            )
    extra = _card_extra(conv, quant, seconds, len(model))
    extra.update(notes or {})
    variant_card = card.replace(
        model_file=path.name,
        model_sha256=sha256_file(staged),
        quantization=quant.value,
        input=spec_in,
        output=spec_out,
        extra=extra,
    )
    variant_card.save(card_path_for(staged))
    if not commit:
        return VariantResult(quant, staged, variant_card, len(model), seconds)
    commit_variant(staged, card_path_for(staged), path)
    return VariantResult(quant, path, variant_card, len(model), seconds)


def _card_extra(conv: Conversion, quant: Quantization, seconds: float, size: int) -> dict[str, Any]:
    """What a variant's card records beyond the float card: its source, conversion, versions, calibration."""
    config, card, run, model_len = conv.config, conv.card, conv.run, size
    integer = quant in (Quantization.INT8, Quantization.QAT_INT8)
    source = run / (QAT_MODEL if quant == Quantization.QAT_INT8 else FLOAT_MODEL)
    extra: dict[str, Any] = {
        "backbone": card.extra.get("backbone", {}),
        "source": {"file": source.name, "sha256": sha256_file(source), "float_sha256": card.model_sha256},
        "keras_metrics": card.extra.get("metrics", {}),
        "conversion": {
            "seconds": round(seconds, 2),
            "size_bytes": model_len,
            "converter": "TFLiteConverter.from_saved_model",
            "io": config.io.value if integer else "float32",
            "keep_float": list(config.keep_float) if quant == Quantization.INT8 else [],
        },
        "versions": runfolder.versions(conv.tf, litert=True),
    }
    if quant == Quantization.INT8 and conv.manifest is not None:
        extra["calibration"] = {
            "manifest": calibration.MANIFEST_NAME,
            "sha256": conv.manifest.sha256,
            "size": conv.manifest.size,
            "seed": conv.manifest.seed,
        }
        extra["rounding"] = conv.rounding
    return extra
