"""The page's second half: every variant side by side, which file to deploy, flipped images, int8 error per layer.

The variant table shows whatever checks ``parity.json`` holds, generically: one
column per check name (in the order parity ran them) and, beside the known
figures, any other per-variant measurement it records (a flip rate, a noise
floor…), so a new check appears on the page without a change here.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from edgetl import runfolder, stats
from edgetl.data.paths import inside
from edgetl.runreport import pictures
from edgetl.runreport.files import RunFiles, VariantFile, as_dict, as_list, num, png
from edgetl.runreport.html import details, esc, image, para, table, tag
from edgetl.runreport.html import verdict as verdict_html

# Per-variant keys of parity.json shown in their own columns (or deliberately not shown); the rest are "other figures".
KNOWN = frozenset(
    "count top1 top1_ci top5 per_class confusion reference accuracy_reference mean_abs_dprob max_abs_dprob "
    "size_bytes median_ms flips drop_pt drop agreement agreement_check per_class_drop_pt per_class_drop".split()
)
# Which passing file to deploy first: full-integer (smallest and fastest with XNNPACK), then fp16, fp32, dynamic.
PREFERENCE = ("int8", "qat_int8", "fp16", "fp32", "dynamic")
INTEGER = ("int8", "qat_int8")
FLIP_ROWS = 20


def model_verdicts(parity: dict[str, Any]) -> dict[str, str]:
    """Each variant's verdict: fail if a check failed, else inconclusive if one was, else pass."""
    found: dict[str, list[stats.Verdict]] = {}
    for check in as_list(parity.get("checks")):
        check = as_dict(check)
        try:
            found.setdefault(str(check.get("model")), []).append(stats.Verdict(check.get("verdict")))
        except ValueError:
            continue
    return {name: stats.combine(marks).value for name, marks in found.items()}


def deploy_choice(files: RunFiles) -> tuple[Optional[str], str]:
    """The file to put on the device and why, or None and what to do first."""
    if not files.variants:
        return None, "no .tflite yet: run `edgetl convert RUN`"
    if not files.parity:
        return None, "parity has not run: `edgetl parity RUN` measures which file is safe to deploy"
    verdicts, models = model_verdicts(files.parity), as_dict(files.parity.get("models"))
    on_disk = {v.name: v for v in files.variants}

    def rank(name: str) -> tuple[int, float, int]:
        tier = PREFERENCE.index(name) if name in PREFERENCE else len(PREFERENCE)
        if name in INTEGER:  # the two full-integer models: the more accurate one first, int8 on a tie
            return (0, -(num(as_dict(models.get(name)).get("top1")) or 0.0), tier)
        return (tier, 0.0, tier)

    passing = sorted((n for n in on_disk if verdicts.get(n) == "pass"), key=rank)
    if passing:
        return on_disk[passing[0]].file, _why(on_disk[passing[0]], passing[1:], "passes every parity check")
    unsure = sorted((n for n in on_disk if verdicts.get(n) == "inconclusive"), key=rank)
    if unsure and files.parity.get("inconclusive_policy") == "pass":  # the gate lets them pass: no evidence of a loss
        open_checks = _unsure_checks(files.parity, unsure[0])
        return on_disk[unsure[0]].file, _why(
            on_disk[unsure[0]],
            unsure[1:],
            f"no check fails, {open_checks} inconclusive (the gate passes it under --inconclusive pass; "
            "more held-out images would settle it)",
        )
    failed = [n for n in on_disk if verdicts.get(n) == "fail"]
    unsure = [n for n in on_disk if verdicts.get(n) == "inconclusive"]
    said = f"{', '.join(failed)} fail{'s' if len(failed) == 1 else ''} parity" if failed else ""
    if unsure:
        said += ("; " if said else "") + (
            f"{', '.join(unsure)} {'is' if len(unsure) == 1 else 'are'} inconclusive (too few images to tell): "
            "run `edgetl parity RUN --data DIR` with more held-out images"
        )
    return None, f"no variant is proven yet: {said or 'parity recorded no checks'}"


def _why(best: VariantFile, others: list[str], verdict_text: str) -> str:
    why = f"{verdict_text}; {best.size_bytes / 1024:,.0f} KiB"
    if best.name in INTEGER:
        why += ", full-integer (the smallest and fastest on a Pi's CPU)"
        other = next((n for n in others if n in INTEGER), None)
        if other:
            why += f"; the higher top-1 of the two integer models ({other} is the other)"
    return why


def _unsure_checks(parity: dict[str, Any], model: str) -> str:
    names = [
        str(as_dict(c).get("name"))
        for c in as_list(parity.get("checks"))
        if as_dict(c).get("model") == model and as_dict(c).get("verdict") == "inconclusive"
    ]
    return ", ".join(names) or "a check"


def _estimate_text(estimate: dict[str, Any]) -> str:
    value, low, high = num(estimate.get("value")), num(estimate.get("low")), num(estimate.get("high"))
    if value is None:
        return ""
    interval = f" <span class=muted>[{low:.2f}, {high:.2f}]</span>" if low is not None and high is not None else ""
    return f"<br>{value:.2f}{interval}"


def figure_text(value: Any) -> str:
    """One per-variant figure as HTML: a number, ``value [low, high]`` (+ verdict) from a dict, or an interval pair."""
    if num(value) is not None:
        return f"{num(value):.4g}"
    if isinstance(value, dict) and num(value.get("value")) is not None:
        low, high = num(value.get("low")), num(value.get("high"))
        interval = f" <span class=muted>[{low:.4g}, {high:.4g}]</span>" if low is not None and high is not None else ""
        mark = f"{verdict_html(value['verdict'])}<br>" if "verdict" in value else ""
        return f"{mark}{num(value['value']):.4g}{interval}"
    if isinstance(value, list) and len(value) == 2 and all(num(v) is not None for v in value):
        return f"[{num(value[0]):.4g}, {num(value[1]):.4g}]"
    return ""


def other_keys(models: dict[str, Any]) -> list[str]:
    """Per-variant measurements parity.json holds beyond the known ones (a flip rate, a noise floor…), first seen first."""
    keys: dict[str, None] = {}
    for figures in models.values():
        for key, value in as_dict(figures).items():
            if key not in KNOWN and figure_text(value):
                keys.setdefault(str(key))
    return list(keys)


def _check_cell(checks: list[dict[str, Any]], name: str, model: str) -> str:
    found = [c for c in checks if c.get("model") == model and c.get("name") == name]
    if not found:
        return "–"
    check = found[0]
    cell = verdict_html(check.get("verdict")) + _estimate_text(as_dict(check.get("estimate")))
    return tag("span", cell, title=str(check.get("detail", "")))


def _top1(figures: dict[str, Any]) -> str:
    top1, ci = num(figures.get("top1")), [num(x) for x in as_list(figures.get("top1_ci"))]
    if top1 is None:
        return "–"
    interval = (
        f" <span class=muted>[{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]</span>" if len(ci) == 2 and None not in ci else ""
    )
    return f"{100 * top1:.2f}%{interval}"


def variant_rows(files: RunFiles) -> list[list[str]]:
    """The table turned on its side: one row per property or check, one column per variant."""
    models = as_dict(files.parity.get("models"))
    figures = {v.name: as_dict(models.get(v.name)) for v in files.variants}
    checks = [as_dict(c) for c in as_list(files.parity.get("checks"))]
    fp32 = next((v.size_bytes for v in files.variants if v.name == "fp32"), None)
    verdicts = model_verdicts(files.parity)

    def ms(name: str) -> str:
        value = num(figures[name].get("median_ms"))
        return f"{value:.2f}" if value is not None else "–"

    rows = [
        ["verdict", *(verdict_html(verdicts.get(v.name, "not checked")) for v in files.variants)],
        ["file", *(tag("code", esc(v.file)) for v in files.variants)],
        [
            "size",
            *(
                f"{v.size_bytes / 1024:,.0f} KiB" + (f" ({v.size_bytes / fp32:.2f}× fp32)" if fp32 else "")
                for v in files.variants
            ),
        ],
        [
            "input → output",
            *(
                "→".join(esc(as_dict(v.card.get(t)).get("dtype", "?")) for t in ("input", "output"))
                for v in files.variants
            ),
        ],
        ["median ms per image", *(ms(v.name) for v in files.variants)],
        ["top-1 [95%]", *(_top1(figures[v.name]) for v in files.variants)],
    ]
    for name in dict.fromkeys(str(c.get("name")) for c in checks):
        rows.append([esc(name), *(_check_cell(checks, name, v.name) for v in files.variants)])
    for key in other_keys(models):
        rows.append([esc(key), *(figure_text(figures[v.name].get(key)) or "–" for v in files.variants)])
    return rows


def variants_section(files: RunFiles) -> str:
    """Every .tflite side by side (fp32, fp16, dynamic, int8, qat_int8), parity's checks as rows, the file to deploy."""
    choice, why = deploy_choice(files)
    advice = tag(
        "p", f"<b>Deploy:</b> {tag('code', esc(choice))}: {esc(why)}" if choice else f"<b>Deploy:</b> {esc(why)}"
    )
    if not files.variants:
        return '<section id="variants"><h2>Variants</h2>' + advice + "</section>"
    checks = [as_dict(c) for c in as_list(files.parity.get("checks"))]
    head = ["", *(f"{v.name} ★ deploy" if v.file == choice else v.name for v in files.variants)]
    return (
        '<section id="variants"><h2>Variants side by side</h2>'
        + advice
        + para(_variants_intro(files))
        + table(
            head,
            variant_rows(files),
            columns_cls={1 + k: "deploy" for k, v in enumerate(files.variants) if v.file == choice},
        )
        + _stale_note(files)
        + details("every check in words", _check_list(checks))
        + _confusions(files)
        + "</section>"
    )


def _variants_intro(files: RunFiles) -> str:
    if not files.parity:
        return "Parity has not run on these files: sizes and tensor types only."
    config = as_dict(files.parity.get("config"))
    n = num(as_dict(files.parity.get("float")).get("count"))
    return (
        f"Parity: every .tflite through the device code on {n or 0:,.0f} held-out images, against model.keras "
        f"(accuracy) and the model it was converted from (agreement). Median ms: per image as parity ran it on the "
        f"machine that made this report's parity.json ({_threads_text(config.get('threads', '?'))}, decode included, "
        "under that machine's load). Check cells: verdict, then the figure and its 95% interval (hover for the sentence)."
    )


def _stale_note(files: RunFiles) -> str:
    parity_json = files.run / "parity.json"
    if not parity_json.is_file():
        return ""
    newer = [v.file for v in files.variants if (files.run / v.file).stat().st_mtime > parity_json.stat().st_mtime]
    if not newer:
        return ""
    return para(f"{', '.join(newer)} changed after parity.json was written: run `edgetl parity RUN` again.", "note")


def _check_list(checks: list[dict[str, Any]]) -> str:
    items = [
        f"<li>{verdict_html(c.get('verdict'))} <b>{esc(c.get('model'))}</b>: {esc(c.get('name'))}: {esc(c.get('detail'))}</li>"
        for c in checks
    ]
    return "<ul>" + "".join(items) + "</ul>" if items else para("no checks recorded")


def _confusions(files: RunFiles) -> str:
    blocks = []
    for v in files.variants:
        picture = png(files.run, f"confusion_{v.name}.png")
        if picture:
            blocks.append(
                details(
                    f"{v.name}: confusion compared with float", image(picture, f"{v.name} confusion difference", 560)
                )
            )
    return "".join(blocks)


def shown_ref(ref: Any, roots: list[str]) -> str:
    """An image as the page shows it: relative to the data root; an absolute path outside it by its file name only."""
    text = str(ref)
    if text.startswith("#") or not os.path.isabs(text):
        return text
    for root in roots:
        if root and os.path.isabs(root) and inside(root, text):
            return os.path.relpath(text, root).replace(os.sep, "/")
    return "…/" + os.path.basename(text)


def flips_section(files: RunFiles) -> str:
    """Per variant: its flip sheet (true label, reference→variant, legend) and the list of flipped images."""
    models = as_dict(files.parity.get("models"))
    roots = [str(files.data.get("root", ""))]
    blocks = []
    for name in sorted(models, key=runfolder.variant_rank):
        rows = [as_dict(r) for r in as_list(as_dict(models[name]).get("flips"))]
        if not rows:
            continue
        sheet = png(files.run, f"flips_{name}.png")
        listing = table(
            ["#", "image (relative to the data root)", "true", "reference", name],
            [
                [
                    str(k),
                    tag("code", esc(shown_ref(r.get("ref"), roots))),
                    esc(r.get("true")),
                    f"{esc(r.get('reference'))} {num(r.get('reference_score')) or 0:.2f}",
                    f"{esc(r.get('variant'))} {num(r.get('variant_score')) or 0:.2f}",
                ]
                for k, r in enumerate(rows[:FLIP_ROWS], 1)
            ],
        )
        blocks.append(
            f"<h3>{esc(name)}: {len(rows):,} image(s) whose top-1 differs from {esc(as_dict(models[name]).get('reference', '?'))}</h3>"
            + (
                image(sheet, f"flipped images of {name}", 1000)
                if sheet
                else para(f"flips_{name}.png is missing", "note")
            )
            + details(f"the first {min(len(rows), FLIP_ROWS)} as a list", listing)
        )
    if not blocks:
        text = "parity has not run" if not files.parity else "no variant changed any image's top-1"
        blocks.append(para(text))
    return '<section id="flips"><h2>Flipped images</h2>' + "".join(blocks) + "</section>"


def debug_section(files: RunFiles) -> str:
    """``edgetl convert --debug``: the int8 error per layer, worst first (empty when it did not run)."""
    if not files.debug:
        return ""
    chart = pictures.debug_chart(files.debug)
    text = (
        f"{len(files.debug)} layers measured by TensorFlow's quantization debugger. rmse/scale is a layer's int8 error "
        "in quantization steps: about 0.29 is rounding alone; a layer far above it is where int8 loses accuracy, "
        "and `edgetl convert RUN --keep-float LAYER` keeps it in float."
    )
    return (
        '<section id="debug"><h2>int8 error per layer</h2>'
        + para(text)
        + (image(chart, "int8 error per layer", 900) if chart else para("int8_debug.csv has no usable rows", "note"))
        + "</section>"
    )


def _threads_text(threads: Any) -> str:
    """``2 thread(s)``; parity's default (None) is every core of that machine."""
    return "all cores" if threads is None else f"{threads} thread(s)"
