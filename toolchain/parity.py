"""``edgetl parity``: is every .tflite as accurate as the float model, measured as the Pi runs it?

The float Keras model is evaluated on the run's held-out test split (or another
labelled folder/CSV); each .tflite is evaluated on the same images through
``edgetl.runtime.Classifier`` -- the device's decode, resize, colour order, input
quantization and output dequantization. A preprocessing-contract check compares
the tensor the device builds with the one training-side evaluation builds. Any
crossed threshold is a ``ParityError`` carrying its numbers (exit 1), so CI can
gate on it.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from edgetl.runtime import decode, preprocess
from edgetl.runtime.model_card import ModelCard, load_card, write_bytes_atomic, write_json_atomic
from edgetl import data as data_mod
from edgetl import feed, log, report, runfolder
from edgetl.errors import DataError, ParityError, RunFolderError

CONTRACT_SAMPLES = 8


@dataclasses.dataclass(frozen=True)
class ParityConfig:
    """Thresholds and inputs of a parity check.

    Attributes:
        run: the run folder (``model.keras`` + ``model_*.tflite`` with cards).
        data: another labelled folder or CSV to evaluate on; default the run's test split.
        max_drop: largest allowed top-1 drop vs float, in percentage points.
        min_agreement: smallest allowed share of images whose top-1 equals float's.
        max_class_drop: largest allowed per-class top-1 drop, in points.
        threads: interpreter threads.
        models: .tflite file names to check; default every ``model_*.tflite`` in the run.
    """

    run: str
    data: Optional[str] = None
    max_drop: float = 0.5
    min_agreement: float = 0.99
    max_class_drop: float = 2.0
    threads: int = 2
    models: Optional[tuple[str, ...]] = None
    junit: Optional[str] = None


@dataclasses.dataclass
class Check:
    """One pass/fail line of the report."""

    model: str
    name: str
    passed: bool
    detail: str


@dataclasses.dataclass
class ParityReport:
    float_metrics: dict[str, Any]
    models: dict[str, dict[str, Any]]
    checks: list[Check]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "float": self.float_metrics,
            "models": self.models,
            "checks": [dataclasses.asdict(c) for c in self.checks],
        }


def run_parity(config: ParityConfig) -> ParityReport:
    """Evaluate float vs every .tflite, write ``parity.json``/``parity.md``, and raise on a crossed threshold.

    Raises:
        RunFolderError: no Keras model, no .tflite, or a card that does not match.
        ParityError: a threshold was crossed (after the reports are written).
    """
    run = Path(config.run)
    keras_card, tflites = _inventory(run, config.models)
    items, dataset = _items(run, config.data, keras_card)
    log.stage(1, 3, f"float Keras model on {len(items)} held-out images")
    pixels, kept, _ = dataset.pixels(items, keras_card.height, keras_card.interpolation)
    labels = np.asarray([it.label for it in kept])
    float_probs = _keras_probs(run, keras_card, pixels)
    float_metrics = report.classification_metrics(float_probs, labels, keras_card.labels)
    log.stage(2, 3, f"{len(tflites)} .tflite model(s) through edge_runtime")
    results: dict[str, dict[str, Any]] = {}
    checks: list[Check] = []
    for path in tflites:
        card, variant = load_card(path.with_suffix(".json")), path.stem.removeprefix("model_")
        checks += _contract_checks(variant, card, keras_card, kept[:CONTRACT_SAMPLES], dataset)
        probs, latency = _device_probs(path, config.threads, [it.ref for it in kept], dataset)
        results[variant] = _compare(path, probs, latency, float_probs, labels, float_metrics, keras_card.labels)
        checks += _threshold_checks(variant, results[variant], config)
        report.plot_confusion(results[variant]["confusion"], keras_card.labels,
                              f"{variant} top-1 {results[variant]['top1']:.3f}", run / f"confusion_{variant}.png")  # fmt: skip
    log.stage(3, 3, "writing parity.json and parity.md")
    result = ParityReport(float_metrics, results, checks)
    _write_reports(run, config, result)
    failed = [c for c in checks if not c.passed]
    if failed:
        more = f" (+{len(failed) - 1} more, see {run / 'parity.md'})" if len(failed) > 1 else ""
        raise ParityError(f"{failed[0].model}: {failed[0].detail}{more}")
    return result


def _inventory(run: Path, models: Optional[Sequence[str]]) -> tuple[ModelCard, list[Path]]:
    keras_card = runfolder.float_card(run)
    tflites = [run / m for m in models] if models else sorted(run.glob("model_*.tflite"))
    if not tflites:
        raise RunFolderError(f"{run} has no model_*.tflite; run `edgetl convert {run}` first")
    for path in tflites:
        if not path.exists():
            raise RunFolderError(f"{path} does not exist; run `edgetl convert` or fix --models")
        if not path.with_suffix(".json").exists():
            raise RunFolderError(f"{path} has no card {path.with_suffix('.json').name}; re-run `edgetl convert`")
    return keras_card, tflites


def _items(run: Path, data: Optional[str], card: ModelCard) -> tuple[list[data_mod.Item], data_mod.Dataset]:
    if data is None:
        dataset, items = data_mod.load_split(run, "test")
        return items, dataset
    dataset = data_mod.discover(data)
    unknown = sorted(set(dataset.class_names) - set(card.labels))
    if unknown:
        raise DataError(f"{data}: classes {', '.join(unknown)} are not among the model's labels {list(card.labels)}; "
                        "name the class folders/labels as in the run's labels.txt, or leave those classes out")
    index = {name: card.labels.index(name) for name in dataset.class_names}
    items = [data_mod.Item(it.ref, index[dataset.class_names[it.label]]) for it in dataset.items]
    return items, dataset


def _keras_probs(run: Path, card: ModelCard, pixels: np.ndarray) -> np.ndarray:
    return feed.predict(runfolder.load_float_model(run, card), pixels, card.normalization)


def _frame(ref: str, dataset: data_mod.Dataset) -> tuple[np.ndarray, str]:
    """The image as the device gets it: a file decoded by cv2 (BGR), or an array row (RGB)."""
    if ref.startswith("#"):
        return preprocess.to_rgb(dataset._array[int(ref[1:])], "RGB"), "RGB"  # noqa: SLF001
    return decode.decode_image(ref), "RGB"


def _device_probs(path: Path, threads: int, refs: list[str], dataset: data_mod.Dataset) -> tuple[np.ndarray, list[float]]:
    from edgetl.runtime.classifier import Classifier, ClassifierOptions  # noqa: PLC0415

    classifier = Classifier(ClassifierOptions(model_path=str(path), num_threads=threads))
    probs, latency = [], []
    for ref in log.progress(refs, len(refs), path.name):
        frame, order = _frame(ref, dataset)
        start = time.perf_counter()
        probs.append(classifier.scores(frame, color_order=order))
        latency.append((time.perf_counter() - start) * 1000)
    return np.asarray(probs, dtype=np.float32), latency


def _contract_checks(name: str, card: ModelCard, keras_card: ModelCard, items: list[data_mod.Item], dataset: data_mod.Dataset) -> list[Check]:
    """Compare the device's input tensor with the training-side one on sample images."""
    checks = []
    same = card.color_order == keras_card.color_order and card.normalization == keras_card.normalization
    checks.append(Check(name, "preprocessing contract", same,
                        f"card says {card.color_order} {card.normalization.description}, the model was trained on "
                        f"{keras_card.color_order} {keras_card.normalization.description}"))  # fmt: skip
    worst = 0.0
    for item in items:
        frame, order = _frame(item.ref, dataset)
        device = preprocess.dequantize(preprocess.prepare(frame, card, order)[0], card.input)
        training = preprocess.normalize(dataset._load(item, keras_card.height, keras_card.interpolation), keras_card.normalization)  # noqa: SLF001
        worst = max(worst, float(np.abs(device - training).max()))
    step = card.input.scale if card.input.quantized else 1e-6
    limit = max(1.01 * step, 1e-5)
    checks.append(Check(name, "input tensor", worst <= limit,
                        f"device input differs from training-side input by {worst:.4g} ({'≤' if worst <= limit else '>'} {limit:.4g} allowed)"))  # fmt: skip
    return checks


def _compare(path: Path, probs: np.ndarray, latency: list[float], float_probs: np.ndarray, labels: np.ndarray,
             float_metrics: dict[str, Any], class_names: Sequence[str]) -> dict[str, Any]:  # fmt: skip
    metrics = report.classification_metrics(probs, labels, class_names)
    delta = np.abs(probs - float_probs)
    per_class_drop = {
        c: (None if f is None else round(100 * (f - metrics["per_class"][c]), 3))
        for c, f in float_metrics["per_class"].items()
    }
    return {
        **metrics,
        "drop_pt": round(100 * (float_metrics["top1"] - metrics["top1"]), 3),
        "agreement": float((probs.argmax(1) == float_probs.argmax(1)).mean()),
        "mean_abs_dprob": float(delta.mean()),
        "max_abs_dprob": float(delta.max()),
        "per_class_drop_pt": per_class_drop,
        "size_bytes": path.stat().st_size,
        "median_ms": float(np.median(latency)),
    }


def _threshold_checks(name: str, m: dict[str, Any], config: ParityConfig) -> list[Check]:
    worst_class, worst_drop = max(((c, d) for c, d in m["per_class_drop_pt"].items() if d is not None), key=lambda x: x[1])
    float_top1 = m["top1"] + m["drop_pt"] / 100
    return [
        Check(name, "top-1 drop", m["drop_pt"] <= config.max_drop,
              f"top-1 {100 * m['top1']:.1f}% vs float {100 * float_top1:.1f}%, drop {m['drop_pt']:.1f} pt "
              f"(> {config.max_drop} pt allowed)" if m["drop_pt"] > config.max_drop else
              f"top-1 {100 * m['top1']:.1f}% vs float {100 * float_top1:.1f}%, drop {m['drop_pt']:.1f} pt"),
        Check(name, "agreement", m["agreement"] >= config.min_agreement,
              f"top-1 agreement with float {100 * m['agreement']:.2f}% (min {100 * config.min_agreement:.1f}%)"),
        Check(name, "per-class drop", worst_drop <= config.max_class_drop,
              f"worst class {worst_class} drops {worst_drop:.1f} pt (max {config.max_class_drop} pt)"),
    ]  # fmt: skip


def _write_reports(run: Path, config: ParityConfig, result: ParityReport) -> None:
    for check in result.checks:
        log.info(f"[{'✓' if check.passed else 'x'}] {check.model}: {check.name}: {check.detail}")
    payload = {"config": dataclasses.asdict(config), **result.to_dict()}
    write_json_atomic(run / "parity.json", payload)
    write_bytes_atomic(run / "parity.md", markdown(result, config).encode("utf-8"))
    if config.junit:
        write_bytes_atomic(Path(config.junit), junit_xml(result).encode("utf-8"))


def markdown(result: ParityReport, config: ParityConfig) -> str:
    """The parity table a person reads (and CI posts)."""
    f = result.float_metrics
    lines = [
        f"# Parity: {'PASS' if result.passed else 'FAIL'}", "",
        f"Thresholds: top-1 drop ≤ {config.max_drop} pt, agreement ≥ {100 * config.min_agreement:g}%, "
        f"per-class drop ≤ {config.max_class_drop} pt. {f['count']} held-out images.", "",
        "| model | top-1 | drop (pt) | agreement | mean abs Δprob | max abs Δprob | size KiB | median ms |",
        "|---|---|---|---|---|---|---|---|",
        f"| float (Keras) | {100 * f['top1']:.2f}% | – | – | – | – | – | – |",
    ]  # fmt: skip
    for name, m in result.models.items():
        lines.append(
            f"| {name} | {100 * m['top1']:.2f}% | {m['drop_pt']:.2f} | {100 * m['agreement']:.2f}% | "
            f"{m['mean_abs_dprob']:.4f} | {m['max_abs_dprob']:.4f} | {m['size_bytes'] / 1024:.0f} | {m['median_ms']:.2f} |"
        )
    lines += ["", "## Checks", ""] + [f"- [{'✓' if c.passed else 'x'}] {c.model}: {c.name}: {c.detail}" for c in result.checks]
    return "\n".join(lines) + "\n"


def junit_xml(result: ParityReport) -> str:
    """JUnit XML, one test case per check, for CI systems that render it."""
    from xml.sax.saxutils import quoteattr  # noqa: PLC0415

    failures = sum(not c.passed for c in result.checks)
    cases = []
    for c in result.checks:
        body = "" if c.passed else f"<failure message={quoteattr(c.detail)}/>"
        cases.append(f"  <testcase classname={quoteattr('parity.' + c.model)} name={quoteattr(c.name)}>{body}</testcase>")
    head = f'<testsuite name="edgetl-parity" tests="{len(result.checks)}" failures="{failures}">'
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + head + "\n" + "\n".join(cases) + "\n</testsuite>\n"
