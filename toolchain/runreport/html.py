"""The page's HTML toolkit: escaping, tables, inline pictures and the self-contained page shell.

Every string that reaches the page goes through :func:`esc` (labels, file names,
check texts: a run folder may come from anyone). Pictures are inline PNGs
(``data:`` URLs); the page carries no script, no font and no link to anything
outside itself, and its Content-Security-Policy lets the browser load nothing else.
"""

from __future__ import annotations

import base64
import html
from typing import Any, Iterable, Optional, Sequence

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
VERDICT_MARKS = {"pass": "✓", "fail": "✗", "inconclusive": "?"}

STYLE = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg: #f6f8fa; --pass: #1a7f37; --fail: #cf222e;
        --unsure: #9a6700; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--fg); background: #fff; }
main { max-width: 1180px; margin: 0 auto; padding: 0 24px 48px; }
header { background: var(--bg); border-bottom: 1px solid var(--line); }
header .inner { max-width: 1180px; margin: 0 auto; padding: 18px 24px 12px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 36px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 22px 0 6px; }
p, li { max-width: 80ch; }
.muted { color: var(--muted); }
nav a { margin-right: 14px; color: #0969da; text-decoration: none; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 14px 0 6px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; background: #fff; min-width: 190px; }
.card .k { font-size: 13px; color: var(--muted); }
.card .v { font-size: 18px; font-weight: 600; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 14px; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: var(--bg); font-weight: 600; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.deploy, th.deploy { background: #dafbe1; }
td:first-child { font-weight: 600; white-space: nowrap; }
.pass { color: var(--pass); font-weight: 600; }
.fail { color: var(--fail); font-weight: 600; }
.inconclusive { color: var(--unsure); font-weight: 600; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff; font-weight: 600; }
.badge.pass { background: var(--pass); color: #fff; } .badge.fail { background: var(--fail); color: #fff; }
.badge.inconclusive { background: var(--unsure); color: #fff; }
.bar { display: inline-block; height: 10px; background: #54aeff; vertical-align: middle; margin-right: 6px; }
img.fig { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
details { margin: 6px 0 12px; } summary { cursor: pointer; color: #0969da; }
code { background: var(--bg); padding: 0 4px; border-radius: 4px; font-size: 13px; }
.note { border-left: 4px solid var(--unsure); background: #fff8c5; padding: 6px 12px; margin: 10px 0; }
.scroll { overflow-x: auto; }
"""


def esc(value: Any) -> str:
    """Text (or anything printable) safe inside HTML content and quoted attributes."""
    return html.escape(str(value), quote=True)


def tag(name: str, content: str = "", cls: Optional[str] = None, title: Optional[str] = None) -> str:
    """``<name class=… title=…>content</name>``; ``content`` must already be HTML (escaped)."""
    attrs = (f' class="{esc(cls)}"' if cls else "") + (f' title="{esc(title)}"' if title else "")
    return f"<{name}{attrs}>{content}</{name}>"


def para(text: str, cls: Optional[str] = None) -> str:
    """A paragraph of plain text (escaped)."""
    return tag("p", esc(text), cls)


def table(
    head: Sequence[str],
    rows: Iterable[Sequence[str]],
    numeric: Sequence[int] = (),
    columns_cls: Optional[dict[int, str]] = None,
) -> str:
    """A table; ``head`` is plain text (escaped), cells are HTML; ``numeric`` columns are right-aligned.

    ``columns_cls`` gives some columns a class (the variant to deploy is highlighted).
    """
    marks = columns_cls or {}
    out = ["<div class=scroll><table><thead><tr>"]
    out += [tag("th", esc(h), marks.get(j)) for j, h in enumerate(head)]
    out.append("</tr></thead><tbody>")
    for row in rows:
        cells = [
            tag("td", c, " ".join(x for x in ("n" if j in numeric else "", marks.get(j, "")) if x) or None)
            for j, c in enumerate(row)
        ]
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(out) + "</tbody></table></div>"


def image(picture: bytes, alt: str, width: Optional[int] = None, mime: str = "image/png") -> str:
    """An inline picture (``data:`` URL) with its alt text; ``width`` in CSS pixels caps its shown size."""
    style = f' style="width:{int(width)}px"' if width else ""
    data = base64.b64encode(picture).decode("ascii")
    kind = mime if mime in ("image/png", "image/jpeg") else "image/png"
    return f'<img class="fig" src="data:{kind};base64,{data}" alt="{esc(alt)}"{style}>'


def verdict(value: Any) -> str:
    """A coloured ``✓ pass`` / ``✗ fail`` / ``? inconclusive`` (anything else shown as plain text)."""
    text = str(value)
    if text not in VERDICT_MARKS:
        return esc(text)
    return tag("span", f"{VERDICT_MARKS[text]} {esc(text)}", text)


def badge(value: Any) -> str:
    text = str(value)
    return tag("span", esc(text.upper()), f"badge {text}" if text in VERDICT_MARKS else "badge")


def details(summary: str, content: str) -> str:
    """A collapsed block: ``summary`` is plain text (escaped), ``content`` HTML."""
    return f"<details><summary>{esc(summary)}</summary>{content}</details>"


def card(key: str, value_html: str) -> str:
    return f'<div class="card"><div class="k">{esc(key)}</div><div class="v">{value_html}</div></div>'


def page(title: str, header_html: str, nav: Sequence[tuple[str, str]], body: str) -> str:
    """The whole document: one file, no script, nothing loaded from anywhere (enforced by its CSP)."""
    links = "".join(f'<a href="#{esc(anchor)}">{esc(text)}</a>' for anchor, text in nav)
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>"
        f'<header><div class="inner">{header_html}<nav>{links}</nav></div></header>\n'
        f"<main>{body}</main></body></html>\n"
    )
