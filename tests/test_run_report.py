"""``report.html`` and ``results.csv``: the page a person opens, built from a run folder's own files.

The fast tests build a run folder without TensorFlow through the real writers (splits,
cards, parity's checks and report, the flip sheet) over real decoded images, with
hostile class names, and check the page: it parses, has every section and the right
numbers, escapes every string, embeds only inline pictures and loads nothing. The
browser test opens it in headless Chromium: it renders, a screenshot is taken, no
console error, no request leaves the file.
"""

from __future__ import annotations

import csv
import html.parser
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from browser import CHROMIUM, CHROMIUM_FLAGS
from click.testing import CliRunner
from edgetl import data
from edgetl import metrics as report
from edgetl.cli.main import main
from edgetl.config.parity import ParityConfig, Thresholds
from edgetl.gate.checks import threshold_checks
from edgetl.parity import report as reports
from edgetl.parity.stage import ParityReport
from edgetl.runreport import REPORT_HTML, RESULTS_CSV, write_report
from edgetl.runtime.model_card import ModelCard, Normalization, TensorSpec, write_json_atomic

HOSTILE = "<img src=x onerror=alert(1)>"
CLASSES = ("circle", HOSTILE, 'quote" & amp')


def _draw(kind: int, k: int) -> np.ndarray:
    """A 48 px picture of class ``kind`` (circle, square, cross), jittered by ``k``."""
    image = np.full((48, 48, 3), 30 + 5 * k, np.uint8)
    colour = (255 - 10 * k, 200, 60 + 20 * kind)
    if kind == 0:
        cv2.circle(image, (24, 24), 10 + k % 8, colour, -1)
    elif kind == 1:
        cv2.rectangle(image, (8 + k % 5, 8), (38, 38 - k % 5), colour, -1)
    else:
        cv2.line(image, (6, 6 + k % 6), (42, 42), colour, 5)
        cv2.line(image, (42, 6), (6, 42 - k % 6), colour, 5)
    return image


def _probs(labels: np.ndarray, wrong: np.ndarray, classes: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    probs = rng.uniform(0, 0.3, (len(labels), classes))
    pred = np.where(wrong, (labels + 1) % classes, labels)
    probs[np.arange(len(labels)), pred] += 1
    return probs / probs.sum(1, keepdims=True)


def make_run(root: Path) -> Path:
    """A run folder as train, convert and parity leave it (no TensorFlow): real writers, fabricated outputs."""
    folder = root / "shapes"
    for kind, name in enumerate(CLASSES):
        (folder / name).mkdir(parents=True)
        for k in range(30):
            cv2.imwrite(str(folder / name / f"{k:02d}.png"), _draw(kind, k))
    dataset = data.discover(str(folder))
    run = root / "run"
    run.mkdir()
    data.write_splits(run, dataset, data.split(dataset, 0.2, 0.3, 7), [])
    (run / "model.keras").write_bytes(b"not read by the report")
    labels_ = tuple(dataset.class_names)
    card = dict(labels=labels_, height=48, width=48, normalization=Normalization())
    ModelCard(
        model_file="model.keras",
        model_sha256="0" * 64,
        extra={"backbone": {"name": "mobilenet_v2", "alpha": 1.0}},
        **card,
    ).save(run / "model_card.json")
    write_json_atomic(run / "config.json", {"seed": 7, "epochs": 4, "fine_tune_epochs": 3, "patience": 2})
    head = {
        "loss": [1.0, 0.7, 0.6, 0.65],
        "accuracy": [0.5, 0.7, 0.8, 0.8],
        "val_loss": [0.9, 0.6, 0.5, 0.55],
        "val_accuracy": [0.6, 0.75, 0.85, 0.8],
        "epoch_end_unix": [1.7e9 + i for i in range(4)],
    }
    tune = {
        "loss": [0.5, 0.4, 0.45],
        "accuracy": [0.85, 0.9, 0.9],
        "val_loss": [0.45, 0.4, 0.42],
        "val_accuracy": [0.86, 0.9, 0.88],
    }
    write_json_atomic(
        run / "history.json",
        [{"phase": "head (cached features)", **head, "seconds": 3.2}, {"phase": "fine-tune", **tune}],
    )
    test_set, items = data.load_split(run, "test")
    labels = np.asarray([it.label for it in items])
    float_probs = _probs(labels, np.arange(len(labels)) % 9 == 0, 3, 1)
    write_json_atomic(run / "metrics.json", {"test": report.classification_metrics(float_probs, labels, labels_)})
    int8_probs = _probs(labels, np.arange(len(labels)) % 5 == 0, 3, 2)
    for name, dtype in (("fp32", "float32"), ("int8", "uint8")):
        (run / f"model_{name}.tflite").write_bytes(b"TFL3" * (4000 if name == "fp32" else 1000))
        spec = TensorSpec(dtype, 1 / 255 if dtype == "uint8" else 0.0)
        ModelCard(
            model_file=f"model_{name}.tflite", model_sha256="0" * 64, input=spec, output=spec, quantization=name, **card
        ).save(run / f"model_{name}.json")
    _parity(run, test_set, items, labels, labels_, float_probs, {"fp32": float_probs, "int8": int8_probs})
    (run / "int8_debug.csv").write_text(
        "tensor_name,scale,mean_squared_error,rmse/scale,layer\nConv1/x,0.1,0.01,1.0,Conv1\nblock_1/y,0.1,0.0009,0.3,block_1_project\n"
    )
    return run


def _parity(run, dataset, items, labels, names, float_probs, variants) -> None:
    """parity.json/.md and the pictures through parity's own writers, plus two figures a later gate may add."""
    results, checks = {}, []
    for name, probs in variants.items():
        judged, figures = threshold_checks(
            name, probs, float_probs, float_probs, labels, names, Thresholds(0.5, 98.0, 3.0)
        )
        m = report.classification_metrics(probs, labels, names)
        relative = [data.Item(dataset.relative(it.ref), it.label) for it in items]
        where = {r.ref: it.ref for r, it in zip(relative, items)}
        flips = reports.flips(relative, labels, float_probs, probs, names)
        low, high = report.top1_interval(m["confusion"])[1:3]
        results[name] = {
            **m,
            "top1_ci": [low, high],
            "reference": "model.keras",
            "size_bytes": 1,
            "median_ms": 0.42,
            "mean_abs_dprob": float(np.abs(probs - float_probs).mean()),
            "flips": flips,
            **figures,
            "flip_rate": {"value": 0.2, "low": 0.1, "high": 0.3, "n": 27},  # the shapes parity writes
            "noise_floor": {
                "value": 1.5,
                "low": 0.5,
                "high": 3.0,
                "n": 27,
                "perturbation": "grey1",
                "description": "moving every pixel by ±1 grey level",
            },
        }
        checks += judged
        report.plot_variant_confusion(
            m["confusion"],
            report.classification_metrics(float_probs, labels, names)["confusion"],
            names,
            name,
            run / f"confusion_{name}.png",
        )
        report.flip_sheet(
            flips,
            lambda ref, where=where: cv2.imread(where[ref])[:, :, ::-1],
            run / f"flips_{name}.png",
            name,
            "model.keras",
            len(items),
        )
    float_metrics = report.classification_metrics(float_probs, labels, names)
    float_metrics["top1_ci"] = list(report.top1_interval(float_metrics["confusion"])[1:3])
    result = ParityReport(float_metrics, results, checks, run / "parity.md")
    reports.write(run, ParityConfig(run=str(run)), result)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = make_run(tmp_path_factory.mktemp("report"))
    write_report(path)
    return path


class _Page(html.parser.HTMLParser):
    """Every tag with its attributes, and the visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data_: str) -> None:
        self.text.append(data_)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def test_page_has_every_section_and_the_numbers(run: Path) -> None:
    page = _parse(run / REPORT_HTML)
    ids = {attrs.get("id") for _, attrs in page.tags}
    assert {"data", "training", "test", "variants", "flips", "debug", "files"} <= ids
    text = " ".join(" ".join(page.text).split())
    parity = json.loads((run / "parity.json").read_text())
    share, low, high, n = report.top1_interval(parity["float"]["confusion"])
    assert f"top-1 {100 * share:.2f}% [{100 * low:.2f}, {100 * high:.2f}] (95%), n = {n}" in text
    # the variant table, side by side in fp32, int8 order, one row per check and per extra figure parity.json holds
    assert re.search(r"<th></th><th[^>]*>fp32[^<]*</th><th[^>]*>int8[^<]*</th>", (run / REPORT_HTML).read_text())
    for check in {c["name"] for c in parity["checks"]}:
        assert f"<td>{check}</td>" in (run / REPORT_HTML).read_text()
    assert "flip_rate 0.2 [0.1, 0.3] 0.2 [0.1, 0.3]" in text  # the gate's figures: value [low, high]
    assert "noise_floor 1.5 [0.5, 3] 1.5 [0.5, 3]" in text
    assert "Deploy: model_fp32.tflite : no check fails" in text  # int8 fails its agreement check here
    assert "circle 15 6 9 30" in text  # class counts per split
    assert "restored epoch" in text and "6 (2 of the phase)" in text
    assert "Conv1" not in text  # the per-layer chart is a picture; its numbers are not repeated as text


def test_every_string_from_the_run_folder_is_escaped(run: Path) -> None:
    source = (run / REPORT_HTML).read_text(encoding="utf-8")
    assert HOSTILE not in source and "&lt;img src=x onerror=alert(1)&gt;" in source
    page = _parse(run / REPORT_HTML)
    assert not [t for t, _ in page.tags if t in ("script", "iframe", "object", "embed", "link", "base", "form")]
    assert not [a for _, attrs in page.tags for a in attrs if a.startswith("on")]  # no event handlers at all


def test_the_page_loads_nothing_and_has_no_absolute_paths(run: Path) -> None:
    source = (run / REPORT_HTML).read_text(encoding="utf-8")
    page = _parse(run / REPORT_HTML)
    sources = [attrs.get("src", "") for tag, attrs in page.tags if tag == "img"]
    assert len(sources) >= 8 and all(
        s.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for s in sources
    )
    links = [attrs["href"] for tag, attrs in page.tags if tag == "a"]
    assert all(h.startswith("#") or h == RESULTS_CSV for h in links)
    csp = [a["content"] for t, a in page.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0] and "img-src data:" in csp[0]
    assert "http://" not in source and "https://" not in source and "url(" not in source
    root = json.loads((run / "data.json").read_text())["root"]
    assert root not in source and str(run.parent) not in source


def test_results_csv_has_one_row_per_epoch(run: Path) -> None:
    rows = list(csv.DictReader((run / RESULTS_CSV).open()))
    assert [r["epoch"] for r in rows] == [str(i) for i in range(1, 8)]
    assert [r["phase_epoch"] for r in rows] == ["1", "2", "3", "4", "1", "2", "3"]
    assert [r["restored"] for r in rows] == ["0", "0", "1", "0", "0", "1", "0"]  # the lowest val loss of each phase
    assert rows[0]["val_loss"] == "0.9" and rows[0]["epoch_end_utc"].startswith("2023-11-14")
    assert rows[4]["epoch_end_utc"] == "" and rows[0]["stage"] == "train"


def test_parity_md_lists_flips_relative_to_the_data_root(run: Path) -> None:
    text = (run / "parity.md").read_text()
    root = json.loads((run / "data.json").read_text())["root"]
    flipped = re.findall(r"^\| (\S[^|]*\.png) \|", text, re.M)
    assert flipped and root not in text and all(not f.startswith("/") for f in flipped)
    assert text.index("| fp32 |") < text.index("| int8 |")


def test_flip_sheet_is_sized_to_the_flips(run: Path) -> None:
    parity = json.loads((run / "parity.json").read_text())
    flips = len(parity["models"]["int8"]["flips"])
    sheet = cv2.imread(str(run / "flips_int8.png"))
    rows = -(-min(flips, report.SHEET_FLIPS) // report.SHEET_COLUMNS)
    assert flips > 0 and sheet.shape[0] < 320 * rows + 200


def test_cli_rebuilds_the_page(run: Path) -> None:
    (run / REPORT_HTML).unlink()
    result = CliRunner().invoke(main, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(run / REPORT_HTML) and (run / REPORT_HTML).is_file()


def test_cli_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 3
    assert "has no model.keras and model_card.json; is it an `edgetl train` run folder?" in result.output


# Chromium's own services (time, updates, sign-in) that it calls whatever page it shows, even with the flags above.
CHROMIUM_OWN = re.compile(r"^https?://[a-z0-9.-]+\.(google\.com|googleapis\.com|gvt1\.com)/")


def _chromium(page: Path, tmp_path: Path, shot: Path) -> str:
    """Open ``page`` from its file in headless Chromium with a screenshot; return Chromium's log."""
    command = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}"]
    command += ["--enable-logging=stderr", "--v=1", f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    return result.stderr


def _requests(log: str) -> list[str]:
    return re.findall(r"NotifyBeforeURLRequest: (\S+)", log)


def test_page_renders_in_headless_chromium_and_requests_nothing(run: Path, tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.skip(
            "chromium is not installed (apt-get install -y chromium; .ci/run installs it): the browser part was not run"
        )
    log = _chromium(run / REPORT_HTML, tmp_path, tmp_path / "report.png")
    image = cv2.imread(str(tmp_path / "report.png"))
    assert image.shape[:2] == (2400, 1280) and float(image.std()) > 20  # drawn, not a blank page
    assert "CONSOLE" not in log, log[-3000:]  # no console message at all: no error, no CSP violation
    assert [u for u in _requests(log) if not CHROMIUM_OWN.match(u)] == [], log[-3000:]
    # The page's own policy is what guarantees it: the same page with a remote picture and style sheet injected
    # gets both blocked, and no request for either is made.
    canary = run / "canary.html"
    injected = '<main><img src="http://127.0.0.1:9/canary.png"><link rel=stylesheet href="https://example.com/x.css">'
    canary.write_text((run / REPORT_HTML).read_text(encoding="utf-8").replace("<main>", injected, 1), encoding="utf-8")
    try:
        log = _chromium(canary, tmp_path, tmp_path / "canary.png")
    finally:
        canary.unlink()
    blocked = re.findall(
        r"Loading the (?:image|stylesheet) '(\S+)' violates the following Content Security Policy", log
    )
    assert sorted(blocked) == ["http://127.0.0.1:9/canary.png", "https://example.com/x.css"], log[-3000:]
    assert [u for u in _requests(log) if not CHROMIUM_OWN.match(u)] == [], log[-3000:]


def _deploy(run: Path, tmp_path: Path, verdicts: dict[str, str], policy: str = "pass") -> tuple[str | None, str]:
    """The file to deploy when parity's checks say ``verdicts`` per variant (a copy of the run)."""
    from edgetl.runreport import files, variants

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    parity = json.loads((copy / "parity.json").read_text())
    for check in parity["checks"]:
        check["verdict"] = verdicts[check["model"]]
    parity["inconclusive_policy"] = policy
    (copy / "parity.json").write_text(json.dumps(parity))
    return variants.deploy_choice(files.load(copy))


def test_the_file_to_deploy_is_the_smallest_that_passes(run: Path, tmp_path: Path) -> None:
    choice, why = _deploy(run, tmp_path / "a", {"fp32": "pass", "int8": "pass"})
    assert choice == "model_int8.tflite" and why.startswith("passes every parity check; 4 KiB, full-integer")
    assert _deploy(run, tmp_path / "b", {"fp32": "pass", "int8": "fail"})[0] == "model_fp32.tflite"
    choice, why = _deploy(run, tmp_path / "c", {"fp32": "inconclusive", "int8": "inconclusive"})
    assert choice == "model_int8.tflite" and why.startswith(
        "no check fails, top-1 drop, agreement, per-class drop inconclusive "
        "(the gate passes it under --inconclusive pass"
    )
    assert _deploy(run, tmp_path / "d", {"fp32": "inconclusive", "int8": "fail"}, policy="fail") == (
        None,
        "no variant is proven yet: int8 fails parity; fp32 is inconclusive (too few images to tell): "
        "run `edgetl parity RUN --data DIR` with more held-out images",
    )
    text = (run / REPORT_HTML).read_text(encoding="utf-8")  # this run: int8 fails, fp32 inconclusive, policy pass
    assert "<b>Deploy:</b> <code>model_fp32.tflite</code>: no check fails" in text


def test_damaged_files_leave_their_part_out_and_nothing_unescaped(run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "parity.json").write_text("{not json")
    (copy / "history.json").write_text(json.dumps([{"phase": HOSTILE, "loss": ["x", None, 1], "val_loss": "no"}]))
    (copy / "metrics.json").write_text(json.dumps({"test": {"confusion": [["a"]]}}))
    (copy / "flips_int8.png").write_text("<script>not a png</script>")
    text = write_report(copy).read_text(encoding="utf-8")
    assert "parity.json is unreadable (JSONDecodeError)" in text and HOSTILE not in text and "<script>" not in text
    assert "No readable confusion matrix." in text and "parity has not run" in text
    rows = list(csv.DictReader((copy / RESULTS_CSV).open()))
    assert [r["loss"] for r in rows] == ["", "", "1"] and rows[0]["phase"] == HOSTILE  # a CSV cell, not HTML


def test_flip_sheet_text_is_readable_at_100_percent() -> None:
    assert report.SMALL * report.DPI / 72 >= 11  # pixels of the smallest text on every figure


def test_qat_epochs_follow_the_training_phases_in_results_csv() -> None:
    from edgetl.runreport import files, results

    history = [{"phase": "head", "loss": [1.0, 0.8], "val_loss": [0.9, 0.95]}]
    qat_card = {"extra": {"qat": {"history": {"loss": [0.3, 0.2, 0.25], "val_loss": [0.3, 0.28, 0.29]}}}}
    columns, rows = results.rows(files.phases(history, qat_card))
    assert columns[:4] == ["stage", "phase", "epoch", "phase_epoch"] and columns[-2:] == ["restored", "epoch_end_utc"]
    assert [(r["stage"], r["phase"], r["epoch"], r["phase_epoch"], r["restored"]) for r in rows] == [
        ("train", "head", 1, 1, 1),
        ("train", "head", 2, 2, 0),
        ("qat", "QAT", 3, 1, 0),
        ("qat", "QAT", 4, 2, 1),
        ("qat", "QAT", 5, 3, 0),
    ]
