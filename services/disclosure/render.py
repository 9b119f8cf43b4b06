"""The disclosure as a page (Jinja2, with an inline SVG chart) and as a PDF rendered from that page."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal
from html import escape
from typing import Any

from jinja2 import Environment, select_autoescape

from services.disclosure.domain import plain
from services.disclosure.template import TEMPLATE

SCOPE_COLOURS = {1: "#1f6f4a", 2: "#7fb77e", 3: "#c9dfb8"}


def figure(value: Any) -> str:
    """A decimal for people: thousands separated, every significant decimal kept ("812,345.123456")."""
    if value is None:
        return "—"
    if not isinstance(value, Decimal):
        value = Decimal(str(value))
    text = plain(value)
    negative = text.startswith("-")
    whole, _, fraction = text.lstrip("-").partition(".")
    grouped = f"{int(whole):,}"
    return ("-" if negative else "") + grouped + (f".{fraction}" if fraction else "")


def moment(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _nice_step(maximum: Decimal, ticks: int = 5) -> Decimal:
    raw = maximum / ticks
    exponent = raw.adjusted()
    base = Decimal(10) ** exponent
    for multiple in (1, 2, 2.5, 5, 10):
        step = base * Decimal(str(multiple))
        if step >= raw:
            return step
    return base * 10


def _axis_label(value: Decimal) -> str:
    if value >= 1_000_000:
        return f"{plain((value / 1_000_000).normalize())}M"
    if value >= 1_000:
        return f"{plain((value / 1_000).normalize())}k"
    return plain(value)


def emissions_chart(years: list[dict[str, Any]], *, width: int = 640, height: int = 280) -> str:
    """Stacked bars of emissions by year and scope, as inline SVG (no script, prints as vector)."""
    if not years:
        return ""
    scopes = [s for s in (1, 2, 3) if any(y[f"scope{s}_tco2e"] for y in years)] or [1, 2]
    left, right, top, bottom = 64, 16, 28, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    tallest = max(sum((y[f"scope{s}_tco2e"] for s in scopes), Decimal(0)) for y in years)
    step = _nice_step(tallest) if tallest > 0 else Decimal(1)
    top_value = step * max(1, int((tallest / step).to_integral_value(rounding=ROUND_CEILING)))
    scale = Decimal(plot_h) / top_value

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-labelledby="chart-title">',
             '<title id="chart-title">Emissions by year and scope (tCO2e)</title>']
    value = Decimal(0)
    while value <= top_value:
        y = top + plot_h - float(value * scale)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#e3e8e4" />')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="10" fill="#555">'
                     f'{_axis_label(value)}</text>')
        value += step
    slot = plot_w / len(years)
    bar = min(56.0, slot * 0.6)
    for i, year in enumerate(years):
        x = left + slot * i + (slot - bar) / 2
        base = top + plot_h
        for s in scopes:
            amount = year[f"scope{s}_tco2e"]
            if amount <= 0:
                continue
            h = float(amount * scale)
            base -= h
            parts.append(f'<rect x="{x:.1f}" y="{base:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                         f'fill="{SCOPE_COLOURS[s]}"><title>{year["year"]} Scope {s}: {escape(figure(amount))} tCO2e'
                         f'</title></rect>')
        parts.append(f'<text x="{x + bar / 2:.1f}" y="{height - bottom + 16}" text-anchor="middle" font-size="11" '
                     f'fill="#222">{year["year"]}</text>')
    parts.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}" stroke="#555" />')
    legend_x = left
    for s in scopes:
        parts.append(f'<rect x="{legend_x}" y="8" width="10" height="10" fill="{SCOPE_COLOURS[s]}" />')
        parts.append(f'<text x="{legend_x + 14}" y="17" font-size="11" fill="#222">Scope {s}</text>')
        legend_x += 72
    parts.append(f'<text x="{width - right}" y="17" text-anchor="end" font-size="10" fill="#555">tCO2e</text>')
    parts.append("</svg>")
    return "".join(parts)


_env = Environment(autoescape=select_autoescape(default=True, default_for_string=True), trim_blocks=True,
                   lstrip_blocks=True)
_env.filters["figure"] = figure
_env.filters["moment"] = moment
_template = _env.from_string(TEMPLATE)


def render_html(report: dict[str, Any]) -> str:
    from markupsafe import Markup

    chart = Markup(emissions_chart(report["trend"]["years"]))  # built here from numbers only
    titles = {s["key"]: s for s in report["sections"]}
    return _template.render(r=report, chart=chart, titles=titles)


def render_pdf(html: str) -> bytes:
    # Imported on first use: WeasyPrint loads Pango and fonts, which the JSON path never needs.
    from weasyprint import HTML

    return HTML(string=html, base_url=None).write_pdf()
