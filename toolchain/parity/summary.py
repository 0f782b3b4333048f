"""The parity gate's answer in sentences: what each variant was shown to be, and what to deploy.

Every sentence says exactly what the 95% intervals show: "at most 0.50 pt below float"
is the upper end of the drop's interval; "measurably below float" only when the whole
interval lies above zero; a check that cannot be settled by ten times the test set is
said to sit at its threshold, with the decision it leaves to the user.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from edgetl import stats

if TYPE_CHECKING:
    from edgetl.parity.stage import ParityReport

PREFERENCE = ("int8", "qat_int8", "fp16", "dynamic", "fp32")  # smallest and fastest first (FACTS: dynamic is slow)


def accuracy_phrase(drop: dict[str, Any]) -> str:
    """What the drop's interval shows, against the float model (points, 95%)."""
    low, high = drop["low"], drop["high"]
    if low > 0:
        return f"measurably below float: {low:.2f} to {high:.2f} pt lower (95%)"
    if high < 0:
        return f"measurably above float: {-high:.2f} to {-low:.2f} pt higher (95%)"
    return f"at most {high:.2f} pt below float (95%)"


def fidelity_phrase(name: str, m: dict[str, Any]) -> str:
    """``int8 changes 4.8% of answers; moving every pixel by ±1 grey level changes 4.3% (JPEG q95 re-save: 5.4%)``."""
    flip = m.get("flip_rate")
    if not flip:
        return ""
    text = f"{name} changes {flip['value']:.1f}% of answers"
    floor = m.get("noise_floor")
    if floor:
        text += f"; {floor['description']} changes {floor['value']:.1f}%"
        jpeg = floor.get("by_perturbation", {}).get("jpeg95")
        if jpeg and floor.get("perturbation") != "jpeg95":
            text += f" (re-saving as JPEG q95: {jpeg['value']:.1f}%)"
    return text


def _checks(result: ParityReport, name: str) -> list[Any]:
    return [c for c in result.checks if c.model == name]


def variant_line(result: ParityReport, name: str) -> str:
    """One variant's verdict and guarantee, e.g. ``int8: PASS: at most 0.50 pt below float (95%); ...``."""
    m, checks = result.models[name], _checks(result, name)
    verdict = stats.combine([c.verdict for c in checks])
    parts = [accuracy_phrase(m["drop"]), fidelity_phrase(name, m)]
    head = f"{name}: {verdict.value.upper()}"
    failed = [c.name for c in checks if c.verdict == stats.Verdict.FAIL]
    unsure = [c for c in checks if c.verdict == stats.Verdict.INCONCLUSIVE]
    if failed:
        head += f" ({', '.join(failed)})"
    elif unsure:
        head += f" ({', '.join(c.name for c in unsure)})"
        parts += [_unsure_phrase(c, int(m["count"])) for c in unsure]
    return f"{head}: " + "; ".join(p for p in parts if p)


def _unsure_phrase(check: Any, images: int) -> str:
    e = check.estimate
    if e is None:
        return ""
    if e.images_needed is None or e.images_needed > 10 * images:
        return (
            f"{check.name} sits at its threshold ({e.threshold:g}): {images:,} images cannot settle it, "
            "nor would ten times as many"
        )
    unit = "images per class" if check.name == "per-class drop" else "images"
    return f"{check.name} needs about {e.images_needed:,} {unit} to settle"


def deploy(result: ParityReport) -> Optional[str]:
    """The variant to deploy: the first of ``PREFERENCE`` (then any) that passes every check."""
    order = [n for n in PREFERENCE if n in result.models] + [n for n in result.models if n not in PREFERENCE]
    for name in order:
        if stats.combine([c.verdict for c in _checks(result, name)]) == stats.Verdict.PASS:
            return name
    return None


def deploy_line(result: ParityReport) -> str:
    """``deploy model_int8.tflite (int8: at most 0.50 pt below float (95%))``, or why nothing can be."""
    chosen = deploy(result)
    unsure = [
        n for n in result.models if stats.combine([c.verdict for c in _checks(result, n)]) == stats.Verdict.INCONCLUSIVE
    ]
    if chosen is not None:
        line = f"deploy model_{chosen}.tflite ({chosen}: {accuracy_phrase(result.models[chosen]['drop'])})"
        smaller = [n for n in unsure if n in PREFERENCE and PREFERENCE.index(n) < PREFERENCE.index(chosen)]
        if smaller and chosen in PREFERENCE:
            s = smaller[0]
            line += (
                f"; {s} is smaller but unresolved ({_unresolved(result, s)}; {accuracy_phrase(result.models[s]['drop'])}): "
                f"deploy model_{s}.tflite instead if you accept that"
            )
        return line
    if unsure:
        s = ([n for n in PREFERENCE if n in unsure] or unsure)[0]
        return (
            f"no variant passes every check; {s} is unresolved ({_unresolved(result, s)}; "
            f"{accuracy_phrase(result.models[s]['drop'])}): deploy model_{s}.tflite if you accept that, "
            "or evaluate on more held-out images"
        )
    return "deploy nothing: every variant failed a check on evidence (see the checks above)"


def _unresolved(result: ParityReport, name: str) -> str:
    return ", ".join(c.name for c in _checks(result, name) if c.verdict == stats.Verdict.INCONCLUSIVE)


def lines(result: ParityReport) -> list[str]:
    """The closing lines of ``edgetl parity``: one per variant, then what to deploy."""
    return [variant_line(result, name) for name in result.models] + [deploy_line(result)]
