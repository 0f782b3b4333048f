"""What ``edgetl parity`` writes: check texts, parity.json/.md, JUnit XML, the flipped images.

Kept apart from the stage so the statistics and the evaluation read on their own.
Every figure is printed with its 95% interval and every check with its verdict
(``[✓]`` pass, ``[x]`` fail, ``[?]`` inconclusive, with the images it would take).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence
from xml.sax.saxutils import quoteattr

import numpy as np
from edgetl import log, stats
from edgetl.runtime.model_card import write_bytes_atomic, write_json_atomic

if TYPE_CHECKING:
    from edgetl.config.parity import ParityConfig
    from edgetl.data import Item
    from edgetl.parity.stage import ParityReport

MARKS = {stats.Verdict.PASS: "✓", stats.Verdict.FAIL: "x", stats.Verdict.INCONCLUSIVE: "?"}
MAX_FLIPS = 1000  # flipped images listed in parity.json


def flips(
    items: Sequence[Item], labels: np.ndarray, ref_probs: np.ndarray, probs: np.ndarray, class_names: Sequence[str]
) -> list[dict[str, Any]]:
    """Images whose top-1 differs from the reference's, worst first.

    Worst = the reference was right and the variant is not, then by the reference's
    confidence: a confident correct answer lost is what a user notices.
    """
    ref_pred, pred = ref_probs.argmax(1), probs.argmax(1)
    rows = []
    for i in np.flatnonzero(ref_pred != pred):
        rows.append(
            {
                "ref": items[i].ref,
                "true": class_names[labels[i]],
                "reference": class_names[ref_pred[i]],
                "reference_score": round(float(ref_probs[i, ref_pred[i]]), 4),
                "variant": class_names[pred[i]],
                "variant_score": round(float(probs[i, pred[i]]), 4),
                "lost": bool(ref_pred[i] == labels[i]),
            }
        )
    rows.sort(key=lambda r: (not r["lost"], -r["reference_score"]))
    return rows[:MAX_FLIPS]


def write(run: Path, config: ParityConfig, result: ParityReport) -> None:
    """Log every check on stderr, then write ``<report>.json``/``.md`` (and JUnit) atomically."""
    for check in result.checks:
        log.info(f"[{MARKS[check.verdict]}] {check.model}: {check.name}: {check.detail}")
    payload = {"config": _config_dict(config), **result.to_dict()}
    write_json_atomic(run / f"{config.report_name}.json", payload)
    write_bytes_atomic(run / f"{config.report_name}.md", markdown(result).encode("utf-8"))
    if config.junit:
        write_bytes_atomic(Path(config.junit), junit_xml(result).encode("utf-8"))


def _config_dict(config: ParityConfig) -> dict[str, Any]:
    data = dataclasses.asdict(config)
    data["inconclusive"] = config.inconclusive.value
    return data


def _ci(pair: Sequence[float], scale: float = 100, digits: int = 2) -> str:
    return f"[{scale * pair[0]:.{digits}f}, {scale * pair[1]:.{digits}f}]"


def _rate(r: Any) -> str:
    return "–" if not r else f"{r['value']:.2f}% [{r['low']:.2f}, {r['high']:.2f}]"


def markdown(result: ParityReport) -> str:
    """The parity table a person reads (and CI posts): every figure with its 95% interval."""
    f = result.float_metrics
    title = result.verdict.value.upper() + (
        ""
        if result.verdict != stats.Verdict.INCONCLUSIVE
        else f" (gate: {'PASS' if result.passed else 'FAIL'} under --inconclusive {result.inconclusive_policy})"
    )
    lines = [
        f"# Parity: {title}",
        "",
        f"{f['count']} held-out images. 95% intervals in brackets; a check passes when its interval lies "
        "within the threshold, fails when it lies beyond, and is inconclusive otherwise. *Flips*: images whose "
        "top-1 differs from the reference's; *noise floor*: images whose reference top-1 changes under an "
        "imperceptible perturbation: every pixel moved by ±1 grey level (a JPEG q95 re-save is given beside it in the sentences above).",
        "",
        *[f"- {line}" for line in result.to_dict()["summary"]],
        "",
        "| model | reference | top-1 | drop (pt) | flips | noise floor | agreement | worst class drop (pt) | "
        "mean abs Δprob | size KiB | median ms | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| float (Keras) | – | {100 * f['top1']:.2f}% {_ci(f['top1_ci'])} | – | – | – | – | – | – | – | – | – |",
    ]
    for name, m in result.models.items():
        d, a = m["drop"], m["agreement_check"]
        checks = [c for c in result.checks if c.model == name]
        verdict = stats.combine([c.verdict for c in checks]).value
        worst = max(m["per_class_drop"].items(), key=lambda kv: kv[1]["value"])
        lines.append(
            f"| {name} | {m['reference']} | {100 * m['top1']:.2f}% {_ci(m['top1_ci'])} | {d['value']:.2f} "
            f"[{d['low']:.2f}, {d['high']:.2f}] | {_rate(m.get('flip_rate'))} | {_rate(m.get('noise_floor'))} | "
            f"{a['value']:.2f}% [{a['low']:.2f}, {a['high']:.2f}] | "
            f"{worst[0]} {worst[1]['value']:.1f} | {m['mean_abs_dprob']:.4f} | {m['size_bytes'] / 1024:.0f} | "
            f"{m['median_ms']:.2f} | {verdict} |"
        )
    lines += ["", "## Checks", ""] + [f"- [{MARKS[c.verdict]}] {c.model}: {c.name}: {c.detail}" for c in result.checks]
    for name, m in result.models.items():
        lines += max_drop_lines(name, m.get("max_drop"))
    for name, m in result.models.items():
        if m["flips"]:
            lines += [
                "",
                f"## {name}: {len(m['flips'])} image(s) whose top-1 differs from {m['reference']} "
                f"(worst first; `flips_{name}.png`)",
                "",
                "| image | true | reference | variant |",
                "|---|---|---|---|",
            ]
            lines += [
                f"| {r['ref']} | {r['true']} | {r['reference']} {r['reference_score']:.2f} | "
                f"{r['variant']} {r['variant_score']:.2f} |"
                for r in m["flips"][:20]
            ]
    return "\n".join(lines) + "\n"


def max_drop_lines(name: str, search: Any) -> list[str]:
    """What ``convert --max-drop`` chose for a variant and what it cost against plain int8 (from its card)."""
    if not isinstance(search, dict) or not search.get("chosen"):
        return []
    c, p = search["chosen"], search["plain_int8"]
    layers = ", ".join(f"`{n}`" for n in c["float_layers"]) or "none"
    return [
        "",
        f"## {name}: chosen by `edgetl convert --max-drop {search['max_drop']:g}`",
        "",
        f"Measured at convert time on {search['val_images']} images of the val split (never test), through "
        f"edge_runtime; {search['evaluations']} evaluation(s), {search['seconds']:.0f} s. Calibration: "
        f"{search['calibration']['method']} over {search['calibration']['size']} train images. "
        f"Float layers ({len(c['float_layers'])}): {layers}. Rule: {search.get('rule', 'drop <= budget')}"
        + (f" (held by: {c['why']})" if c.get("why") else "")
        + ".",
        "",
        "| on val | calibration | float layers | drop (pt) | agreement | flips (noise floor) | size KiB | "
        "median ms (1 thread) |",
        "|---|---|---|---|---|---|---|---|",
    ] + [
        f"| {label} | {t['calibration_size']} | {len(t['float_layers'])} | {t['drop']['value']:.2f} "
        f"[{t['drop']['low']:.2f}, {t['drop']['high']:.2f}] | {t['agreement']['value']:.2f}% | "
        f"{t.get('flips', '?')} ({t.get('noise_floor_flips', '?')}) | "
        f"{t['size_bytes'] / 1024:.0f} | {t['median_ms']:.3f} |"
        for label, t in (("plain int8", p), ("chosen", c))
    ]


def junit_xml(result: ParityReport) -> str:
    """JUnit XML, one test case per check (an inconclusive check is a skipped case with its reason)."""

    failures = sum(c.verdict == stats.Verdict.FAIL for c in result.checks)
    skipped = sum(c.verdict == stats.Verdict.INCONCLUSIVE for c in result.checks)
    cases = []
    for c in result.checks:
        body = {
            stats.Verdict.PASS: "",
            stats.Verdict.FAIL: f"<failure message={quoteattr(c.detail)}/>",
            stats.Verdict.INCONCLUSIVE: f"<skipped message={quoteattr('inconclusive: ' + c.detail)}/>",
        }[c.verdict]
        cases.append(
            f"  <testcase classname={quoteattr('parity.' + c.model)} name={quoteattr(c.name)}>{body}</testcase>"
        )
    head = f'<testsuite name="edgetl-parity" tests="{len(result.checks)}" failures="{failures}" skipped="{skipped}">'
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + head + "\n" + "\n".join(cases) + "\n</testsuite>\n"
