"""``report.html``: one self-contained page per run folder, and ``results.csv``.

The page shows the data (class counts, sample images), the training (curves with
phase boundaries and restored epochs), the float model's test results (normalised
confusion, per-class precision and recall with intervals), every variant side by
side with parity's checks and the file to deploy, the flipped images, and the int8
error per layer when ``convert --debug`` ran. It is rebuilt from the run folder's own
files alone at the end of ``train``, ``qat``, ``convert`` and ``parity``, and by
``edgetl report RUN``. Pictures are inline PNGs; the page has no script and loads
nothing (its Content-Security-Policy forbids it), so it opens from a file anywhere.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Optional

from edgetl import log, metrics
from edgetl.errors import EdgeTLError
from edgetl.runreport import files, html, results, sections, variants
from edgetl.runtime.model_card import CardError, write_bytes_atomic

REPORT_HTML = "report.html"
RESULTS_CSV = results.RESULTS_CSV
NAV = (
    ("data", "Data"),
    ("training", "Training"),
    ("test", "Test results"),
    ("variants", "Variants"),
    ("flips", "Flipped images"),
    ("debug", "int8 error per layer"),
)


def write_report(run: Path, name: Optional[str] = None) -> Path:
    """Write ``RUN/report.html`` (and ``RUN/results.csv`` when the run has a history) from the run folder's files.

    Args:
        run: the run folder.
        name: the run's name in the title (default: the folder's name).

    Returns:
        The path of ``report.html``.

    Raises:
        RunFolderError: ``run`` is not an ``edgetl train`` run folder.
    """
    run = Path(run)
    found = files.load(run)
    if found.phases:
        results.write(run, found.phases)
    body = "".join(
        [
            "".join(html.para(p, "note") for p in found.problems),
            sections.data_section(found),
            sections.training_section(found),
            sections.test_section(found),
            variants.variants_section(found),
            variants.flips_section(found),
            variants.debug_section(found),
            _files_footer(found),
        ]
    )
    title = name or run.resolve().name
    nav = [(a, t) for a, t in NAV if a != "debug" or found.debug]
    page = html.page(f"edgetl run report: {title}", _header(found, title), nav, body)
    path = run / REPORT_HTML
    write_bytes_atomic(path, page.encode("utf-8"))
    return path


def refresh(run: Path) -> Optional[Path]:
    """What a stage calls when it is done: rewrite the report, log its path; a failure is a warning, not the stage's.

    The stage's own outputs are complete at this point; a report that cannot be
    drawn (a damaged file in a received run folder, no matplotlib) must not undo them.
    """
    try:
        path = write_report(run)
    except (EdgeTLError, CardError, OSError, ValueError, ImportError) as exc:
        log.warn(f"report.html not written ({str(exc)[:200]}); rebuild it with `edgetl report {run}`")
        return None
    log.info(f"report: {path}")
    return path


def _header(found: files.RunFiles, title: str) -> str:
    choice, why = variants.deploy_choice(found)
    confusion, what = sections.test_source(found)
    verdict = str(found.parity.get("verdict", "")) if found.parity else ""
    cards = [
        html.card("parity gate", html.badge(verdict) if verdict else "not run"),
        html.card("deploy", html.tag("code", html.esc(choice)) if choice else "–"),
        html.card(
            "float top-1 (95%)",
            html.esc(metrics.top1_text(confusion).removeprefix("top-1 ").replace(" (95%)", ""))
            if confusion is not None
            else "–",
        ),
        html.card("classes", f"{len(found.labels)}"),
        html.card("variants", html.esc(", ".join(v.name for v in found.variants) or "none yet")),
    ]
    versions = found.card.extra.get("versions") if isinstance(found.card.extra.get("versions"), dict) else {}
    made = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"<h1>{html.esc(title)}</h1>"
        + html.para(
            f"edgetl run report, written {made} from this folder's files"
            + (f" (trained with edgetl {versions.get('edgetl', '?')})" if versions else "")
            + ".",
            "muted",
        )
        + html.tag(
            "p",
            f"<b>Deploy:</b> {html.tag('code', html.esc(choice))}: {html.esc(why)}"
            if choice
            else f"<b>Deploy:</b> {html.esc(why)}",
        )
        + f'<div class="cards">{"".join(cards)}</div>'
    )


def _files_footer(found: files.RunFiles) -> str:
    names = sorted(p.name for p in found.run.iterdir() if p.is_file() and not p.name.startswith("."))
    return (
        '<section id="files"><h2>Files in this run folder</h2>'
        + html.para("Everything above is drawn from these files; `edgetl report RUN` draws it again.")
        + "<p>"
        + ", ".join(html.tag("code", html.esc(n)) for n in names)
        + "</p></section>"
    )
