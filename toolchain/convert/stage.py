"""``edgetl convert``: TFLite variants of a run, each with its card.

The Keras model is exported once to a temporary SavedModel and every variant is
converted from it (``from_saved_model`` is several times faster than
``from_keras_model``, which re-traces per call; the output is the same). Variants:
fp32, fp16 (float16 weights), dynamic (int8 weights, float activations), int8
(full-integer post-training quantization, calibrated on ``RUN/calibration.json``)
and qat_int8 (from ``model_qat.keras``). The int8 variant is converted from a
BatchNorm-folded copy whose weights :mod:`edgetl.convert.rounding` has already put on
their int8 steps (calibrated GPTQ + bias correction), unless ``--rounding nearest``.
Full-integer models take and return uint8 by default, so the device can feed raw
camera pixels. Each file is read back
with ai-edge-litert, which proves it loads, and its card records the tensors'
actual dtype, scale and zero point.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from edgetl import calibration, data, log, runfolder, runreport
from edgetl.config import DEFAULT_VARIANTS, ConvertConfig, IoType, Quantization, Rounding
from edgetl.convert import budget, debugger
from edgetl.convert import rounding as rounding_mod
from edgetl.convert.calibrate import ensure_manifest
from edgetl.convert.tflite_inspect import float_ops, keep_float_nodes, layers_of, read_back, spec_text
from edgetl.data import paths
from edgetl.errors import ConfigError, ConversionError, RunFolderError
from edgetl.model import classifier, graph
from edgetl.runfolder import FLOAT_CARD, FLOAT_MODEL, QAT_MODEL, card_path_for, sha256_file
from edgetl.runtime.metadata import embed
from edgetl.runtime.model_card import ModelCard, write_bytes_atomic

WORK_PREFIX = ".convert-"  # hidden work folder in the run: SavedModel export, staged models


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


@dataclasses.dataclass
class ConvertResult:
    """Every variant written, the calibration used and the debugger's report."""

    run_dir: Path
    variants: list[VariantResult]
    manifest: Optional[calibration.Manifest]
    debug_csv: Optional[Path]
    seconds: float
    search: Optional[Any] = None  # edgetl.budget.Search under --max-drop

    def fp32_bytes(self) -> Optional[int]:
        """Size of the fp32 model: converted now, or already in the run folder."""
        for v in self.variants:
            if v.quantization == Quantization.FP32:
                return v.size_bytes
        existing = self.run_dir / runfolder.variant_file(Quantization.FP32.value)
        return existing.stat().st_size if existing.exists() else None

    def to_dict(self) -> dict[str, Any]:
        fp32 = self.fp32_bytes()
        return {
            "run": str(self.run_dir),
            "seconds": round(self.seconds, 1),
            "calibration": {"sha256": self.manifest.sha256, "size": self.manifest.size} if self.manifest else None,
            "debug_csv": str(self.debug_csv) if self.debug_csv else None,
            "variants": [
                {**v.to_dict(), "ratio_vs_fp32": round(v.size_bytes / fp32, 4) if fp32 else None} for v in self.variants
            ],
            **({"max_drop": self.search.to_dict()} if self.search else {}),
        }

    def table(self) -> str:
        """The summary: variant, size, ratio to fp32, tensor types, conversion time."""
        fp32 = self.fp32_bytes()
        rows = [f"{'variant':<9} {'size KiB':>9} {'vs fp32':>8}  {'input':<26} {'output':<26} {'seconds':>7}"]
        for v in self.variants:
            ratio = f"{v.size_bytes / fp32:.3f}x" if fp32 else "-"
            rows.append(
                f"{v.quantization.value:<9} {v.size_bytes / 1024:>9.1f} {ratio:>8}  {spec_text(v.card.input):<26} "
                f"{spec_text(v.card.output):<26} {v.seconds:>7.1f}"
            )
        return "\n".join(rows + ([self.search.summary()] if self.search else []))


def convert(config: ConvertConfig) -> ConvertResult:
    """Write every asked variant of ``RUN/model.keras`` as ``RUN/model_<variant>.tflite`` + card.

    Raises:
        RunFolderError: not a run folder, the model does not match its card, or
            qat_int8 asked without ``model_qat.keras``.
        ConfigError: a ``--keep-float`` layer that is not in the graph.
        ConversionError: the converter failed or wrote a model that does not load.
    """
    started = time.monotonic()
    run = Path(config.run)
    card = runfolder.float_card(run)
    runfolder.verify_model_file(card, run / FLOAT_MODEL)
    variants = _variants(config, run)
    if config.max_drop is not None:
        budget.check_val_split(run, card)  # before any work
    if Quantization.INT8 in variants:
        check_lineage(run, card)
    if Quantization.QAT_INT8 in variants and not (run / QAT_MODEL).is_file():
        raise RunFolderError(
            f"{run} has no {QAT_MODEL}; run `edgetl qat {run}` first, or leave qat-int8 out of --variants"
        )
    manifest = (
        ensure_manifest(run, card, config.calib_size, config.calib_seed, config.data_root)
        if Quantization.INT8 in variants
        else None
    )
    representative = (
        calibration.representative_dataset(manifest, card, _pixel_loader(run, card, manifest.refs, config.data_root))
        if manifest
        else None
    )
    rounded = Quantization.INT8 in variants and config.rounding == Rounding.GPTQ
    searched = config.max_drop is not None
    total = len(variants) + 1 + int(config.debug) + int(rounded) + int(searched)
    log.stage(1, total, "exporting the Keras model(s) to a temporary SavedModel")
    results: list[VariantResult] = []
    debug_csv = None
    rounding: dict[str, Any] = {"method": config.rounding.value}
    _sweep_stale_work(run)
    with tempfile.TemporaryDirectory(prefix=f"{WORK_PREFIX}{os.getpid()}-", dir=run) as tmp:
        tf, saved = _export_all(run, variants, Path(tmp))
        if rounded:
            log.stage(2, total, f"rounding the int8 weights (GPTQ + bias correction on {manifest.size} images)")  # type: ignore[union-attr]
            rounding = _round_int8(tf, run, representative, Path(tmp), saved, config.keep_float)  # type: ignore[arg-type]
        search = None
        if searched:
            log.stage(2 + int(rounded), total, f"--max-drop {config.max_drop:g}: int8 on the val split, then fixes")
            search = budget.run(
                budget.Calibration(manifest, representative, saved, rounding),  # type: ignore[arg-type]
                _converter_kit(tf, config, card, run, Path(tmp)),
            )
            chosen = search.calibration
            manifest, representative, saved, rounding = (
                chosen.manifest,
                chosen.representative,
                chosen.saved,
                chosen.rounding,
            )
            config = dataclasses.replace(config, max_drop=None, keep_float=search.chosen.keep_float)
        for step, quant in enumerate(variants, 2 + int(rounded) + int(searched)):
            log.stage(step, total, f"converting {quant.value}")
            notes = {"max_drop": search.to_dict()} if search and quant == Quantization.INT8 else None
            results.append(
                _write_variant(
                    tf, quant, saved, config, card, run, manifest, representative, Path(tmp), rounding, notes=notes
                )
            )
            if notes and results[-1].card.model_sha256 != search.chosen.sha256:  # type: ignore[union-attr]
                raise ConversionError("the int8 model written differs from the one --max-drop measured; rerun")
            log.info(f"{results[-1].path.name}: {results[-1].size_bytes / 1024:.1f} KiB in {results[-1].seconds:.1f}s")
        if config.debug:
            log.stage(
                total, total, f"int8 quantization debugger on {min(debugger.DEBUG_SAMPLES, manifest.size)} images"
            )  # type: ignore[union-attr]
            debug_csv = debugger.debug_int8(tf, _source(Quantization.INT8, saved), representative, run)  # type: ignore[arg-type]
    runreport.refresh(run)
    return ConvertResult(run, results, manifest, debug_csv, time.monotonic() - started, search)


def _converter_kit(tf: Any, config: ConvertConfig, card: ModelCard, run: Path, tmp: Path) -> budget.Kit:
    """This stage's converter pieces, lent to the --max-drop search (which never imports this module)."""
    return budget.Kit(
        tf,
        config,
        card,
        run,
        tmp,
        _write_variant,
        _round_int8,
        _pixel_loader,
        lambda saved: _source(Quantization.INT8, saved),
    )


def _sweep_stale_work(run: Path) -> None:
    """Remove the hidden work folders of earlier converts that were killed (their process is gone)."""
    for folder in run.glob(f"{WORK_PREFIX}*-*"):
        try:
            os.kill(int(folder.name[len(WORK_PREFIX) :].split("-")[0]), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, PermissionError):  # not ours, or another user's live process
            continue


def _commit(staged: Path, staged_card: Path, path: Path) -> None:
    """Move a checked model and its card into place: old card out, model in, card in (atomic renames).

    A kill in between leaves at worst a model without a card (refused by the device
    and parity), never a card that does not match the file beside it.
    """
    card_path = card_path_for(path)
    card_path.unlink(missing_ok=True)
    os.replace(staged, path)
    os.replace(staged_card, card_path)


def _variants(config: ConvertConfig, run: Path) -> list[Quantization]:
    asked = set(config.quantizations or DEFAULT_VARIANTS)
    if config.quantizations is None and (run / QAT_MODEL).is_file():
        asked.add(Quantization.QAT_INT8)
    return [q for q in Quantization if q in asked]


def check_lineage(run: Path, card: ModelCard) -> None:
    """Refuse a model + card that are not this run's: their labels must be the classes its splits were made with.

    Calibration reads the run's train split with the card's labels; a model and card
    swapped in from another run (or a card with labels edited) would be calibrated on
    the wrong classes, or crash on a label index the model does not have.

    Raises:
        RunFolderError: the card's labels differ from ``data.json``'s class names.
    """
    names = paths.read_meta(run)["class_names"]
    if list(card.labels) != list(names):
        raise RunFolderError(
            f"{run / FLOAT_CARD} lists {len(card.labels)} labels ({', '.join(card.labels)[:80]}), the run's data.json "
            f"{len(names)} classes ({', '.join(names)[:80]}): the model and card come from another run or were "
            "edited; copy the whole run folder again, or re-run `edgetl train`"
        )


def _pixel_loader(
    run: Path, card: ModelCard, refs: tuple[str, ...], data_root: Optional[str]
) -> calibration.PixelLoader:
    """Pixels of a manifest ref: a file under the run's data root (decoded on the device path), or an array row."""
    return data.split_image_loader(run, card.height, card.interpolation, refs, data_root)


def _export_all(run: Path, variants: list[Quantization], tmp: Path) -> tuple[Any, dict[str, Path]]:
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


def _round_int8(
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
    from tensorflow.lite.python import schema_py_generated as schema

    converter = _converter(tf, Quantization.INT8, {"float": Path(saved_dir)}, IoType.FLOAT32, representative)
    converter._experimental_calibrate_only = True  # noqa: SLF001
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(converter.convert(), 0))
    ranges: dict[str, tuple[float, float]] = {}
    for tensor in model.subgraphs[0].tensors:
        stats = tensor.quantization
        layers = layers_of(tensor.name.decode())
        if stats is not None and stats.min is not None and len(stats.min) == 1 and layers:
            ranges.setdefault(layers[0], (float(stats.min[0]), float(stats.max[0])))
    return ranges


def _source(quant: Quantization, saved: dict[str, Path]) -> Path:
    if quant == Quantization.QAT_INT8:
        return saved["qat"]
    return saved["int8"] if quant == Quantization.INT8 and "int8" in saved else saved["float"]


def _converter(
    tf: Any, quant: Quantization, saved: dict[str, Path], io_type: IoType, representative: Optional[Callable[[], Any]]
) -> Any:
    converter = tf.lite.TFLiteConverter.from_saved_model(str(_source(quant, saved)))
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


def _convert_bytes(
    tf: Any,
    quant: Quantization,
    saved: dict[str, Path],
    config: ConvertConfig,
    representative: Optional[Callable[[], Any]],
) -> bytes:
    converter = _converter(tf, quant, saved, config.io, representative)
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
    from tensorflow.lite.python import convert as tflite_convert

    converter._experimental_calibrate_only = True  # noqa: SLF001
    calibrated = converter.convert()
    nodes = keep_float_nodes(calibrated, config.keep_float)
    io_type = tf.float32 if config.io == IoType.FLOAT32 else getattr(tf, config.io.value)
    return bytes(
        tflite_convert.mlir_quantize(
            calibrated, input_data_type=io_type, output_data_type=io_type, denylisted_nodes=nodes
        )
    )


def _write_variant(
    tf: Any,
    quant: Quantization,
    saved: dict[str, Path],
    config: ConvertConfig,
    card: ModelCard,
    run: Path,
    manifest: Optional[calibration.Manifest],
    representative: Optional[Callable[[], Any]],
    work: Path,
    rounding: dict[str, Any],
    notes: Optional[dict[str, Any]] = None,
    commit: bool = True,
) -> VariantResult:
    """Convert one variant, check it in the hidden ``work`` folder, then move it and its card into the run.

    ``notes`` are added to the card's extra; ``commit=False`` leaves the model staged (``path`` is the staged file).
    """
    start = time.monotonic()
    model = _convert_bytes(tf, quant, saved, config, representative)
    seconds = time.monotonic() - start
    model = embed(
        model, card, quant.value
    )  # labels + normalisation inside the file too (MediaPipe, card-less edge-classify)
    name = runfolder.variant_file(quant.value)
    path, staged = run / name, work / name
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
    source = run / (QAT_MODEL if quant == Quantization.QAT_INT8 else FLOAT_MODEL)
    extra: dict[str, Any] = {
        "backbone": card.extra.get("backbone", {}),
        "source": {"file": source.name, "sha256": sha256_file(source), "float_sha256": card.model_sha256},
        "keras_metrics": card.extra.get("metrics", {}),
        "conversion": {
            "seconds": round(seconds, 2),
            "size_bytes": len(model),
            "converter": "TFLiteConverter.from_saved_model",
            "io": config.io.value if integer else "float32",
            "keep_float": list(config.keep_float) if quant == Quantization.INT8 else [],
        },
        "versions": runfolder.versions(tf, litert=True),
    }
    if quant == Quantization.INT8 and manifest is not None:
        extra["calibration"] = {
            "manifest": calibration.MANIFEST_NAME,
            "sha256": manifest.sha256,
            "size": manifest.size,
            "seed": manifest.seed,
        }
        extra["rounding"] = rounding
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
    _commit(staged, card_path_for(staged), path)
    return VariantResult(quant, path, variant_card, len(model), seconds)
