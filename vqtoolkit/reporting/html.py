"""The HTML of a report page: the page template and its style, and small builders for its parts.

Everything is escaped here and every picture is an inline base64 PNG, so a page made from these
parts needs no server, makes no request and works with JavaScript off (:mod:`vqtoolkit.reporting.report`).
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable
from string import Template
from typing import Any

from torch import Tensor

from vqtoolkit.data.images import grid_bytes

#: Every small image is enlarged this many times (nearest neighbour) before it is inlined.
SCALE = 3

PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
:root { color-scheme: light; }
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #1d2433; background: #f5f6f8; }
main { max-width: 1120px; margin: 0 auto; padding: 16px; }
h1 { font-size: 1.6rem; margin: 0.4em 0 0.1em; word-break: break-word; }
h2 { font-size: 1.25rem; margin: 0 0 0.5em; }
h3 { font-size: 1rem; margin: 0.8em 0 0.3em; }
section { background: #fff; border: 1px solid #dde1e8; border-radius: 8px; padding: 16px;
          margin: 16px 0; }
.sub { color: #586174; margin: 0; }
.note { color: #586174; font-size: 0.92rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; min-width: 50%; max-width: 100%; font-size: 0.95rem; }
th, td { text-align: left; vertical-align: top; padding: 4px 8px; border-bottom: 1px solid #eceef2;
         overflow-wrap: break-word; }
th { font-weight: 600; }
td.num { font-variant-numeric: tabular-nums; white-space: nowrap; overflow-wrap: normal; }
code { font-size: 0.88rem; overflow-wrap: anywhere; }
ul { padding-left: 1.2em; margin: 0.3em 0; }
.components li { margin: 0.25em 0; }
img { max-width: 100%; height: auto; display: block; }
img.pixels { image-rendering: pixelated; image-rendering: crisp-edges; }
.figures { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
figure { margin: 0; min-width: 0; }
figcaption { font-weight: 600; margin-bottom: 4px; }
.pair figure { flex: 1 1 300px; max-width: 100%; }
.pair figure + figure { border-left: 3px solid #dde1e8; padding-left: 24px; }
.label-row { display: flex; align-items: center; gap: 12px; margin: 4px 0; }
.label-row span { flex: 0 0 4.5em; font-weight: 600; font-variant-numeric: tabular-nums; }
.label-row img { min-width: 0; }
@media (max-width: 640px) {
  main { padding: 8px; }
  section { padding: 12px; }
  .pair figure + figure { border-left: 0; padding-left: 0; border-top: 3px solid #dde1e8;
                          padding-top: 12px; }
  .label-row span { flex-basis: 3.5em; }
}
</style>
</head>
<body>
<main>
<header>
<h1>$title</h1>
<p class="sub">$subtitle</p>
</header>
$sections
<p class="note">Written by vqtoolkit $version. Everything on this page is inside this one file.</p>
</main>
</body>
</html>
""")


def esc(value: Any) -> str:
    """``value`` as text safe inside HTML."""
    return html.escape(str(value), quote=True)


def data_uri(png: bytes) -> str:
    """An inline ``data:`` URI for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def img(png: bytes, alt: str, *, pixels: bool = True) -> str:
    """An ``<img>`` of inlined PNG bytes; ``pixels`` keeps enlarged small images sharp."""
    cls = ' class="pixels"' if pixels else ""
    return f'<img{cls} src="{data_uri(png)}" alt="{esc(alt)}">'


def grid_img(images: Tensor, alt: str, *, nrow: int) -> str:
    """An ``<img>`` of an image grid, every pixel enlarged :data:`SCALE` times."""
    return img(grid_bytes(images, nrow=nrow, scale=SCALE), alt)


def section(title: str, body: str, anchor: str) -> str:
    """One card of the page."""
    return f'<section id="{esc(anchor)}">\n<h2>{esc(title)}</h2>\n{body}\n</section>'


def note(text: str) -> str:
    """A grey paragraph (escaped)."""
    return f'<p class="note">{esc(text)}</p>'


def table(rows: Iterable[tuple[str, ...]], header: tuple[str, ...] | None = None) -> str:
    """A table of escaped text; the first cell of each row is a heading, numbers align."""

    def cell(value: str, first: bool) -> str:
        if first:
            return f"<th>{esc(value)}</th>"
        numeric = value.replace(".", "", 1).replace("-", "", 1).replace("e", "", 1).isdigit()
        return f'<td class="num">{esc(value)}</td>' if numeric else f"<td>{esc(value)}</td>"

    head = "" if header is None else "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>\n"
    body = "\n".join("<tr>" + "".join(cell(v, i == 0) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f'<div class="scroll"><table>\n{head}{body}\n</table></div>'


def fmt(value: Any) -> str:
    """Numbers to 5 significant digits, everything else as JSON-ish text."""
    if isinstance(value, float):
        return f"{value:.5g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)
