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
from typing import Any, Optional

from edgetl import calibration, log, runfolder, runreport
from edgetl.config import DEFAULT_VARIANTS, ConvertConfig, Quantization, Rounding
from edgetl.convert import budget, debugger
from edgetl.convert.calibrate import ensure_manifest
from edgetl.convert.converter import Conversion, VariantResult, export_all, pixel_loader, round_int8, write_variant
from edgetl.convert.tflite_inspect import spec_text
from edgetl.convert.validation import check_val_split
from edgetl.data import paths
from edgetl.errors import ConversionError, RunFolderError
from edgetl.runfolder import FLOAT_CARD, FLOAT_MODEL, QAT_MODEL
from edgetl.runtime.model_card import ModelCard

WORK_PREFIX = ".convert-"  # hidden work folder in the run: SavedModel export, staged models


@dataclasses.dataclass
class ConvertResult:
    """Every variant written, the calibration used and the debugger's report."""

    run_dir: Path
    variants: list[VariantResult]
    manifest: Optional[calibration.Manifest]
    debug_csv: Optional[Path]
    seconds: float
    search: Optional[Any] = None  # edgetl.convert.budget.Search under --max-drop

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
    card, variants = _check_run(config, run)
    manifest = (
        ensure_manifest(run, card, config.calib_size, config.calib_seed, config.data_root)
        if Quantization.INT8 in variants
        else None
    )
    representative = (  # checks every calibration image is there, before any export
        calibration.representative_dataset(manifest, card, pixel_loader(run, card, manifest.refs, config.data_root))
        if manifest
        else None
    )
    steps = Steps(config, variants)
    log.stage(1, steps.total, "exporting the Keras model(s) to a temporary SavedModel")
    _sweep_stale_work(run)
    with tempfile.TemporaryDirectory(prefix=f"{WORK_PREFIX}{os.getpid()}-", dir=run) as tmp:
        tf, saved = export_all(run, variants, Path(tmp))
        rounding = {"method": config.rounding.value}
        conv = Conversion(tf, config, card, run, Path(tmp), saved, manifest, representative, rounding)
        conv, search = _int8_steps(conv, steps)
        results = [_write(conv, quant, search, step, steps.total) for step, quant in steps.variants()]
        debug_csv = _debug(conv, steps) if config.debug else None
    runreport.refresh(run)
    return ConvertResult(run, results, conv.manifest, debug_csv, time.monotonic() - started, search)


@dataclasses.dataclass(frozen=True)
class Steps:
    """The stage lines of one convert: export, [rounding], [--max-drop], one per variant, [debugger]."""

    config: ConvertConfig
    asked: list[Quantization]

    @property
    def rounded(self) -> bool:
        return Quantization.INT8 in self.asked and self.config.rounding == Rounding.GPTQ

    @property
    def searched(self) -> bool:
        return self.config.max_drop is not None

    @property
    def total(self) -> int:
        return len(self.asked) + 1 + int(self.config.debug) + int(self.rounded) + int(self.searched)

    def variants(self) -> list[tuple[int, Quantization]]:
        return list(enumerate(self.asked, 2 + int(self.rounded) + int(self.searched)))


def _check_run(config: ConvertConfig, run: Path) -> tuple[ModelCard, list[Quantization]]:
    """The run's card and the variants to write, after every check that needs no TensorFlow."""
    card = runfolder.float_card(run)
    runfolder.verify_model_file(card, run / FLOAT_MODEL)
    variants = _variants(config, run)
    if config.max_drop is not None:
        check_val_split(run, card)  # before any work
    if Quantization.INT8 in variants:
        check_lineage(run, card)
    if Quantization.QAT_INT8 in variants and not (run / QAT_MODEL).is_file():
        raise RunFolderError(
            f"{run} has no {QAT_MODEL}; run `edgetl qat {run}` first, or leave qat-int8 out of --variants"
        )
    return card, variants


def _int8_steps(conv: Conversion, steps: Steps) -> tuple[Conversion, Optional[budget.Search]]:
    """GPTQ rounding of the int8 weights, then the ``--max-drop`` search: the conversion int8 is written from."""
    config = conv.config
    if steps.rounded:
        assert conv.manifest is not None and conv.representative is not None
        log.stage(2, steps.total, f"rounding the int8 weights (GPTQ + bias correction on {conv.manifest.size} images)")
        rounding = round_int8(conv.tf, conv.run, conv.representative, conv.work, conv.saved, config.keep_float)
        conv = dataclasses.replace(conv, rounding=rounding)
    if not steps.searched:
        return conv, None
    log.stage(2 + int(steps.rounded), steps.total, f"--max-drop {config.max_drop:g}: int8 on the val split, then fixes")
    search = budget.run(conv)  # raises BudgetError when no candidate holds
    assert search.conversion is not None  # the chosen candidate: its calibration, float layers, no further search
    return search.conversion, search


def _write(
    conv: Conversion, quant: Quantization, search: Optional[budget.Search], step: int, total: int
) -> VariantResult:
    log.stage(step, total, f"converting {quant.value}")
    notes = {"max_drop": search.to_dict()} if search and quant == Quantization.INT8 else None
    result = write_variant(conv, quant, notes=notes)
    if notes and search and search.chosen and result.card.model_sha256 != search.chosen.sha256:
        raise ConversionError("the int8 model written differs from the one --max-drop measured; rerun")
    log.info(f"{result.path.name}: {result.size_bytes / 1024:.1f} KiB in {result.seconds:.1f}s")
    return result


def _debug(conv: Conversion, steps: Steps) -> Path:
    assert conv.manifest is not None and conv.representative is not None
    samples = min(debugger.DEBUG_SAMPLES, conv.manifest.size)
    log.stage(steps.total, steps.total, f"int8 quantization debugger on {samples} images")
    return debugger.debug_int8(conv.tf, conv.source(Quantization.INT8), conv.representative, conv.run)


def _sweep_stale_work(run: Path) -> None:
    """Remove the hidden work folders of earlier converts that were killed (their process is gone)."""
    for folder in run.glob(f"{WORK_PREFIX}*-*"):
        try:
            os.kill(int(folder.name[len(WORK_PREFIX) :].split("-")[0]), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, PermissionError):  # not ours, or another user's live process
            continue


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
