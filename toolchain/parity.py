"""``edgetl parity``: is every .tflite as good as the model it came from, measured as the Pi runs it?

Each ``.tflite`` is evaluated on the held-out images through ``edgetl.runtime.Classifier``
-- the device's decode, resize, colour order, input quantization and output
dequantization -- and compared, image by image, with two Keras models:

- **fidelity** (top-1 agreement, |Δprob|) against the model the variant was converted
  from: ``model.keras`` for fp32/fp16/dynamic/int8, the QAT fake-quant graph
  (``model_qat.keras``) for qat_int8;
- **accuracy** (top-1 drop, per-class drop) against ``model.keras``, the model the
  user trained: no variant may be worse than it.

Every figure carries a 95% interval from the paired per-image results, and every
check has three verdicts (:mod:`edgetl.verdict`): pass, fail (the data shows the
threshold crossed) and inconclusive (too few images to tell; the report says how
many would). A card that does not belong to this run (other source model, labels,
size) is refused before anything is measured.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from edgetl import data as data_mod
from edgetl import feed, log, noise_floor, parity_summary, report, runfolder, runreport, untrusted
from edgetl import parity_report as reports
from edgetl import verdict as stats
from edgetl.errors import ConfigError, DataError, ParityError, ParityInconclusive, RunFolderError
from edgetl.parity_checks import Check, threshold_checks
from edgetl.parity_config import ParityConfig
from edgetl.runtime import decode, preprocess
from edgetl.runtime.model_card import ModelCard, load_card, sha256_file, verify_model_file

CONTRACT_SAMPLES = 8
QAT_MODEL = runfolder.QAT_MODEL


@dataclasses.dataclass
class ParityReport:
    """Every model's figures and every check; ``verdict`` is the gate's answer."""

    float_metrics: dict[str, Any]
    models: dict[str, dict[str, Any]]
    checks: list[Check]
    report_path: Path
    inconclusive_policy: str = "pass"
    labels: Optional[np.ndarray] = dataclasses.field(default=None, repr=False)
    probabilities: dict[str, np.ndarray] = dataclasses.field(default_factory=dict, repr=False)  # per image, by model
    floors: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict, repr=False)  # by reference
    timing: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def verdict(self) -> stats.Verdict:
        return stats.combine([c.verdict for c in self.checks])

    @property
    def passed(self) -> bool:
        """What the gate says: pass, or inconclusive under ``--inconclusive pass``."""
        return self.verdict == stats.Verdict.PASS or (
            self.verdict == stats.Verdict.INCONCLUSIVE and self.inconclusive_policy == "pass"
        )

    def to_dict(self) -> dict[str, Any]:
        chosen = parity_summary.deploy(self)
        return {
            "verdict": self.verdict.value,
            "passed": self.passed,
            "inconclusive_policy": self.inconclusive_policy,
            "float": self.float_metrics,
            "models": self.models,
            "checks": [c.to_dict() for c in self.checks],
            "summary": parity_summary.lines(self),
            "deploy": f"model_{chosen}.tflite" if chosen else None,
            "timing_s": self.timing,
        }

    def raise_for_verdict(self) -> None:
        """Raise ``ParityError`` (exit 1) on a failed check, ``ParityInconclusive`` (exit 4) under ``--inconclusive fail``."""
        failed = [c for c in self.checks if c.verdict == stats.Verdict.FAIL]
        if failed:
            more = f" (+{len(failed) - 1} more, see {self.report_path})" if len(failed) > 1 else ""
            raise ParityError(f"{failed[0].model}: {failed[0].detail}{more}")
        unsure = [c for c in self.checks if c.verdict == stats.Verdict.INCONCLUSIVE]
        if unsure and self.inconclusive_policy == "fail":
            raise ParityInconclusive(
                f"{unsure[0].model}: {unsure[0].name} is inconclusive: {unsure[0].detail}; "
                "evaluate on more held-out images (--data DIR) or pass --inconclusive pass"
            )


@dataclasses.dataclass(frozen=True)
class Variant:
    """A .tflite of the run, its card, and the Keras model it was converted from."""

    name: str
    path: Path
    card: ModelCard
    reference: str  # "model.keras" or "model_qat.keras"


def run_parity(config: ParityConfig) -> ParityReport:
    """Evaluate every variant against its references, write the reports, and return the verdict.

    The reports (``parity.json``/``.md``, confusion and flip pictures, JUnit) are written
    whatever the verdict; call ``raise_for_verdict()`` to turn it into an exit code.

    Raises:
        RunFolderError: no Keras model, no .tflite, or a variant that does not belong to this run.
        DataError: ``--data`` labels that the model does not know.
    """
    run = Path(config.run)
    keras_card = runfolder.float_card(run)
    items, dataset = _items(run, config, keras_card)  # the data's labels are checked before any model is opened
    _check_outputs(run, config, dataset)
    variants = _inventory(run, keras_card, config.models)
    total = 3 if any(v.reference == QAT_MODEL for v in variants) else 2
    log.stage(1, total + 1, f"float Keras model on {len(items)} held-out images")
    pixels, kept, _ = dataset.pixels(items, keras_card.height, keras_card.interpolation)
    if not kept:
        raise DataError(f"none of the {len(items)} held-out images could be read; check the data folder or pass --data")
    labels = np.asarray([it.label for it in kept])
    start = time.perf_counter()
    references, floors, perturbed = {}, {}, {}
    references["model.keras"], floors["model.keras"] = _reference_outputs(
        lambda: runfolder.load_float_model(run, keras_card), pixels, keras_card, perturbed
    )
    if total == 3:
        log.stage(2, total + 1, "QAT fake-quant graph (the reference of qat_int8)")
        references[QAT_MODEL], floors[QAT_MODEL] = _reference_outputs(
            lambda: _load_qat(run), pixels, keras_card, perturbed
        )
    timing = {"references_with_noise_floor": round(time.perf_counter() - start, 1)}
    del pixels, perturbed
    float_probs = references["model.keras"]
    float_metrics = _with_interval(report.classification_metrics(float_probs, labels, keras_card.labels))
    log.stage(total, total + 1, f"{len(variants)} .tflite model(s) through edge_runtime")
    start = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    per_image: dict[str, np.ndarray] = {}
    checks: list[Check] = []
    for variant in variants:
        judged, results[variant.name], per_image[variant.name] = _check_variant(
            variant, config, keras_card, kept, labels, references, dataset, floors[variant.reference]
        )
        checks += judged
    timing["variants_through_edge_runtime"] = round(time.perf_counter() - start, 1)
    log.stage(total + 1, total + 1, f"writing {config.report_name}.json and .md")
    result = ParityReport(
        float_metrics,
        results,
        checks,
        run / f"{config.report_name}.md",
        config.inconclusive.value,
        labels=labels,
        probabilities={**references, **per_image},
        floors=floors,
        timing=timing,
    )
    reports.write(run, config, result)
    runreport.refresh(run)
    return result


def _check_variant(
    variant: Variant,
    config: ParityConfig,
    keras_card: ModelCard,
    kept: list[data_mod.Item],
    labels: np.ndarray,
    references: dict[str, np.ndarray],
    dataset: data_mod.Dataset,
    floor: Optional[dict[str, np.ndarray]] = None,
) -> tuple[list[Check], dict[str, Any], np.ndarray]:
    """One variant through the device code: its checks, its figures (with flips) and its per-image outputs."""
    run = Path(config.run)
    checks = _contract_checks(variant, keras_card, kept[:CONTRACT_SAMPLES], dataset)
    probs, latency = _device_probs(variant.path, config.threads, [it.ref for it in kept], dataset)
    m = _measure(variant, probs, latency, references, labels, keras_card.labels)
    relative = [data_mod.Item(dataset.relative(it.ref), it.label) for it in kept]  # listed relative to the data root
    where = {rel.ref: it.ref for rel, it in zip(relative, kept)}
    m["flips"] = reports.flips(relative, labels, references[variant.reference], probs, keras_card.labels)
    judged, figures = threshold_checks(
        variant.name,
        probs,
        references[variant.reference],
        references["model.keras"],
        labels,
        keras_card.labels,
        config.thresholds_for(variant.name),
        variant.reference,
        {k: v for k, v in floor.items() if not k.endswith("_dprob")} if floor else None,
    )
    if floor:
        figures["noise_floor"]["mean_abs_dprob"] = {k: float(floor[f"{k}_dprob"]) for k in noise_floor.PERTURBATIONS}
    float_confusion = report.classification_metrics(references["model.keras"], labels, keras_card.labels)["confusion"]
    report.plot_variant_confusion(
        m["confusion"], float_confusion, keras_card.labels, variant.name, run / f"confusion_{variant.name}.png"
    )
    report.flip_sheet(
        m["flips"],
        lambda ref: _frame(where[ref], dataset)[0],
        run / f"flips_{variant.name}.png",
        variant.name,
        variant.reference,
        len(kept),
    )
    return checks + judged, {**m, **figures}, probs


def _inventory(run: Path, keras_card: ModelCard, models: Optional[Sequence[str]]) -> list[Variant]:
    found = sorted(run.glob("model_*.tflite"), key=lambda p: runfolder.variant_rank(p.stem.removeprefix("model_")))
    paths = [run / f"model_{m}.tflite" for m in models] if models else found
    if not paths:
        raise RunFolderError(f"{run} has no model_*.tflite; run `edgetl convert {run}` first")
    variants = []
    source_hashes: dict[str, str] = {}  # each source model hashed once, however many variants name it
    for path in paths:
        if not path.is_file():
            present = ", ".join(p.stem.removeprefix("model_") for p in sorted(run.glob("model_*.tflite"))) or "none"
            raise RunFolderError(
                f"{path} does not exist (variants in this run: {present}); run `edgetl convert {run}` or fix --models"
            )
        if not path.with_suffix(".json").is_file():
            raise RunFolderError(f"{path} has no card {path.with_suffix('.json').name}; re-run `edgetl convert {run}`")
        card = load_card(path.with_suffix(".json"))
        verify_model_file(card, path)
        variants.append(_lineage(run, path, card, keras_card, source_hashes))
    return variants


def _lineage(run: Path, path: Path, card: ModelCard, keras_card: ModelCard, hashes: dict[str, str]) -> Variant:
    """Refuse a variant that was not converted from this run's model, or whose card disagrees with it."""
    name = path.stem.removeprefix("model_")
    fix = f"run `edgetl convert {run}` again (or remove {path.name})"
    if tuple(card.labels) != tuple(keras_card.labels):
        raise RunFolderError(
            f"{path.name}'s card labels {list(card.labels)} differ from the run's {list(keras_card.labels)}; {fix}"
        )
    if (card.height, card.width) != (keras_card.height, keras_card.width):
        raise RunFolderError(
            f"{path.name} takes {card.height}x{card.width} images, the run's model "
            f"{keras_card.height}x{keras_card.width}; {fix}"
        )
    source = card.extra.get("source") if isinstance(card.extra.get("source"), dict) else {}
    reference = QAT_MODEL if source.get("file") == QAT_MODEL else "model.keras"
    if not (run / reference).is_file():
        raise RunFolderError(f"{path.name} was converted from {reference}, which this run does not have; {fix}")
    if reference not in hashes:
        hashes[reference] = sha256_file(run / reference)
    if (
        source.get("sha256") != hashes[reference]
        or source.get("float_sha256", keras_card.model_sha256) != keras_card.model_sha256
    ):
        raise RunFolderError(
            f"{path.name} was not converted from this run's {reference} "
            f"(its card records sha256 {str(source.get('sha256'))[:12]}…); {fix}"
        )
    return Variant(name, path, card, reference)


def _check_outputs(run: Path, config: ParityConfig, dataset: data_mod.Dataset) -> None:
    """Refuse a ``--junit`` path that is a file of the run, one parity writes, or inside the data.

    Raises:
        ConfigError: the clash and the fix (exit 2), before any model is opened.
    """
    if not config.junit:
        return
    target = Path(config.junit)
    if os.path.realpath(target.parent) == os.path.realpath(run) and any(
        fnmatch.fnmatch(target.name, p) for p in ("parity*.json", "parity*.md", "confusion_*", "flips_*")
    ):  # parity's own outputs, existing or not
        raise ConfigError(
            f"--junit {config.junit} is a file edgetl parity writes in the run folder; "
            "choose another path (e.g. parity.xml in the working directory)"
        )
    files = [p for p in run.rglob("*") if p.is_file()]
    data = [Path(p) for p in (dataset.root, config.data) if p]
    untrusted.check_output(
        config.junit,
        "--junit",
        files + [p for p in data if not p.is_dir()],
        [p for p in data if p.is_dir()] + [Path(p).parent for p in [config.data] if p and Path(p).is_file()],
    )


def _items(run: Path, config: ParityConfig, card: ModelCard) -> tuple[list[data_mod.Item], data_mod.Dataset]:
    data = config.data
    if data is None:
        dataset, items = data_mod.load_split(
            run, "test", config.data_root, ", or evaluate on held-out images of yours with --data DIR"
        )
        if not items:
            raise RunFolderError(f"{run}/splits/test.csv lists no images; pass --data DIR with held-out images")
        return items, dataset
    dataset = data_mod.discover(data, min_classes=1)
    if dataset.presplit:  # a pre-split folder: its held-out split only, never train/ (the model learnt those)
        held_out = next((s for s in ("test", "val") if dataset.presplit.get(s)), None)
        if held_out is None:
            raise DataError(
                f"{data} is a pre-split folder with no test/ or val/ images; parity evaluates held-out images "
                f"only, never train/: pass a folder of test images"
            )
        log.info(f"{data} is pre-split: evaluating its {held_out}/ split ({len(dataset.presplit[held_out])} images)")
        dataset.items = dataset.presplit[held_out]
    unknown = sorted(set(dataset.class_names) - set(card.labels))
    if unknown:
        raise DataError(
            f"{data}: classes {', '.join(unknown)} are not among the model's labels {list(card.labels)}; "
            "name the class folders/labels as in the run's labels.txt, or leave those classes out"
        )
    index = {name: card.labels.index(name) for name in dataset.class_names}
    items = [data_mod.Item(it.ref, index[dataset.class_names[it.label]]) for it in dataset.items]
    return items, dataset


def _reference_outputs(
    load: Any, pixels: np.ndarray, card: ModelCard, perturbed: dict[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A reference model's probabilities on the images, and its noise floor (two more passes)."""
    with log.quiet_native():
        model = load()

    def predict(images: np.ndarray) -> np.ndarray:
        return feed.predict(model, images, card.normalization)

    probs = predict(pixels)
    return probs, noise_floor.floor_flips(predict, pixels, probs, perturbed)


def _load_qat(run: Path) -> Any:
    from edgetl.qat_scheme import load_qat  # noqa: PLC0415 - tfmot only when a QAT variant is checked

    return load_qat(run)


def _frame(ref: str, dataset: data_mod.Dataset) -> tuple[np.ndarray, str]:
    """The image as the device gets it: a file decoded by cv2 (BGR), or an array row (RGB)."""
    if ref.startswith("#"):
        return preprocess.to_rgb(dataset._array[int(ref[1:])], "RGB"), "RGB"  # noqa: SLF001
    return decode.decode_image(ref), "RGB"


def _device_probs(
    path: Path, threads: int, refs: list[str], dataset: data_mod.Dataset
) -> tuple[np.ndarray, list[float]]:
    from edgetl.runtime.classifier import Classifier, ClassifierOptions  # noqa: PLC0415

    with log.quiet_native():
        classifier = Classifier(ClassifierOptions(model_path=str(path), num_threads=threads))
    probs, latency = [], []
    for ref in log.progress(refs, len(refs), path.name):
        frame, order = _frame(ref, dataset)
        start = time.perf_counter()
        probs.append(classifier.scores(frame, color_order=order))
        latency.append((time.perf_counter() - start) * 1000)
    return np.asarray(probs, dtype=np.float32), latency


def _contract_checks(
    variant: Variant, keras_card: ModelCard, items: list[data_mod.Item], dataset: data_mod.Dataset
) -> list[Check]:
    """Compare the device's input tensor with the training-side one on sample images (exact checks, no statistics)."""
    card, name = variant.card, variant.name
    same = card.color_order == keras_card.color_order and card.normalization == keras_card.normalization
    checks = [
        Check(
            name,
            "preprocessing contract",
            stats.Verdict.PASS if same else stats.Verdict.FAIL,
            f"card says {card.color_order} {card.normalization.description}, the model was trained on "
            f"{keras_card.color_order} {keras_card.normalization.description}",
        )
    ]
    worst = 0.0
    for item in items:
        frame, order = _frame(item.ref, dataset)
        device = preprocess.dequantize(preprocess.prepare(frame, card, order)[0], card.input)
        pixels = dataset._load(item, keras_card.height, keras_card.interpolation)  # noqa: SLF001
        training = preprocess.normalize(pixels, keras_card.normalization)
        worst = max(worst, float(np.abs(device - training).max()))
    limit = max(1.01 * (card.input.scale if card.input.quantized else 1e-6), 1e-5)
    ok = stats.Verdict.PASS if worst <= limit else stats.Verdict.FAIL
    checks.append(
        Check(
            name,
            "input tensor",
            ok,
            f"device input differs from training-side input by {worst:.4g} "
            f"({'≤' if worst <= limit else '>'} {limit:.4g} allowed)",
        )
    )
    return checks


def _with_interval(metrics: dict[str, Any]) -> dict[str, Any]:
    n = metrics["count"]
    low, high = stats.wilson(round(metrics["top1"] * n), n)
    return {**metrics, "top1_ci": [low, high]}


def _measure(
    variant: Variant,
    probs: np.ndarray,
    latency: list[float],
    references: dict[str, np.ndarray],
    labels: np.ndarray,
    class_names: Sequence[str],
) -> dict[str, Any]:
    """Figures of one variant: its own accuracy, and |Δprob| against the model it came from."""
    metrics = _with_interval(report.classification_metrics(probs, labels, class_names))
    delta = np.abs(probs - references[variant.reference])
    return {
        **metrics,
        "reference": variant.reference,
        "accuracy_reference": "model.keras",
        "mean_abs_dprob": float(delta.mean()),
        "max_abs_dprob": float(delta.max()),
        "size_bytes": variant.path.stat().st_size,
        "median_ms": float(np.median(latency)),
        **({"max_drop": variant.card.extra["max_drop"]} if "max_drop" in variant.card.extra else {}),
    }
