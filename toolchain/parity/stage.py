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
check has three verdicts (:mod:`edgetl.stats`): pass, fail (the data shows the
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
from edgetl import log, runfolder, runreport, stats, untrusted
from edgetl import metrics as report
from edgetl.config.parity import ParityConfig
from edgetl.errors import ConfigError, DataError, ParityError, ParityInconclusive, RunFolderError
from edgetl.gate import noise_floor
from edgetl.gate.checks import Check, threshold_checks
from edgetl.parity import report as reports
from edgetl.parity import summary
from edgetl.parity.outputs import contract_checks, device_frame, device_probs, load_qat_reference, reference_outputs
from edgetl.parity.variants import QAT_MODEL, Variant, inventory
from edgetl.runtime.model_card import ModelCard

CONTRACT_SAMPLES = 8


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
        chosen = summary.deploy(self)
        return {
            "verdict": self.verdict.value,
            "passed": self.passed,
            "inconclusive_policy": self.inconclusive_policy,
            "float": self.float_metrics,
            "models": self.models,
            "checks": [c.to_dict() for c in self.checks],
            "summary": summary.lines(self),
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
    variants = inventory(run, keras_card, config.models)
    total = 3 if any(v.reference == QAT_MODEL for v in variants) else 2
    log.stage(1, total + 1, f"float Keras model on {len(items)} held-out images")
    kept, labels, references, floors, timing = _references(run, items, dataset, keras_card, total)
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


def _references(
    run: Path, items: list[data_mod.Item], dataset: data_mod.Dataset, keras_card: ModelCard, total: int
) -> tuple[list[data_mod.Item], np.ndarray, dict[str, np.ndarray], dict[str, dict[str, np.ndarray]], dict[str, float]]:
    """The readable held-out images, their labels, and each Keras reference's outputs and noise floor on them."""
    pixels, kept, _ = dataset.pixels(items, keras_card.height, keras_card.interpolation)
    if not kept:
        raise DataError(f"none of the {len(items)} held-out images could be read; check the data folder or pass --data")
    labels = np.asarray([it.label for it in kept])
    start = time.perf_counter()
    references, floors, perturbed = {}, {}, {}
    references["model.keras"], floors["model.keras"] = reference_outputs(
        lambda: runfolder.load_float_model(run, keras_card), pixels, keras_card, perturbed
    )
    if total == 3:
        log.stage(2, total + 1, "QAT fake-quant graph (the reference of qat_int8)")
        references[QAT_MODEL], floors[QAT_MODEL] = reference_outputs(
            lambda: load_qat_reference(run), pixels, keras_card, perturbed
        )
    timing = {"references_with_noise_floor": round(time.perf_counter() - start, 1)}
    del pixels, perturbed
    return kept, labels, references, floors, timing


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
    checks = contract_checks(variant, keras_card, kept[:CONTRACT_SAMPLES], dataset)
    probs, latency = device_probs(variant.path, config.threads, [it.ref for it in kept], dataset)
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
        lambda ref: device_frame(where[ref], dataset)[0],
        run / f"flips_{variant.name}.png",
        variant.name,
        variant.reference,
        len(kept),
    )
    return checks + judged, {**m, **figures}, probs


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
