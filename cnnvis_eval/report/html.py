"""Self-contained HTML report (jinja2): images embedded as data URIs, no network needed."""

from __future__ import annotations

import base64
from pathlib import Path

import jinja2


def data_uri(png: str | Path) -> str:
    """``data:image/png;base64,...`` for a PNG file."""
    return "data:image/png;base64," + base64.b64encode(Path(png).read_bytes()).decode("ascii")


def figure(png: str | Path, caption: str, alt: str | None = None) -> dict:
    return {"src": data_uri(png), "caption": caption, "alt": alt or caption}


def render(path: str | Path, **context) -> Path:
    """Render ``templates/index.html.j2`` with ``context`` to ``path``."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cnnvis_eval.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
    )
    defaults = dict(scorecard="", tables=[], totals="", study="", grids=[], agreement=[], curves=[], cost="", cost_figs=[],
                    cells="", remedies="", config="", subtitle="")
    defaults.update(context)
    html = env.get_template("index.html.j2").render(**defaults)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path
