"""Charts drawn on the server as inline SVG: no script, no library, readable without colour.

:func:`bar_chart` draws stacked vertical bars (one per label, one segment per series). Every
segment has a ``<title>`` (its exact figure, read by screen readers and shown on hover),
series are told apart by a fill pattern as well as a colour, the legend names them, and
each page puts the same figures in a table next to the chart. An optional ``limit`` draws a
dashed line (the balance check's window). Colours come from CSS classes (``s-<series>``),
so the stylesheet decides them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

__all__ = ["Series", "bar_chart"]

_W, _H = 720, 200
_LEFT, _BOTTOM, _TOP, _RIGHT = 44, 34, 10, 8


@dataclass(frozen=True, slots=True)
class Series:
    """One stacked series: its name (shown), its CSS key, its value per label."""

    name: str
    key: str
    values: Sequence[float]


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    step = 1.0
    while step * 10 < value:
        step *= 10
    for mult in (1, 2, 5, 10):
        if step * mult >= value:
            return step * mult
    return step * 10


def _number(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _patterns(series: Sequence[Series]) -> str:
    # A different hatch per series, so segments differ without colour as well.
    shapes = ["", "M0,4 l4,-4", "M0,0 l4,4", "M2,0 v4", "M0,2 h4", "M0,0 l4,4 M0,4 l4,-4"]
    defs = []
    for i, s in enumerate(series):
        path = shapes[i % len(shapes)]
        mark = f'<path d="{path}" class="hatch"/>' if path else ""
        defs.append(
            f'<pattern id="p-{escape(s.key)}" width="4" height="4" patternUnits="userSpaceOnUse">'
            f'<rect width="4" height="4" class="s-{escape(s.key)}"/>{mark}</pattern>'
        )
    return f"<defs>{''.join(defs)}</defs>"


def bar_chart(
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    unit: str = "",
    limit: float | None = None,
    limit_label: str = "",
    every: int = 1,
) -> Markup:
    """An SVG bar chart (see the module docstring); ``every`` labels one bar in that many."""
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    top = _nice_max(max([*totals, limit or 0.0, 0.0]))
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    slot = plot_w / max(1, len(labels))
    bar_w = max(1.0, slot * 0.7)
    parts = [
        f'<svg class="chart" viewBox="0 0 {_W} {_H}" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
        _patterns(series),
    ]
    for frac in (0.0, 0.5, 1.0):
        y = _TOP + plot_h * (1 - frac)
        parts.append(f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{_LEFT - 4}" y="{y + 4:.1f}" class="axis" text-anchor="end">'
                     f"{escape(_number(top * frac))}</text>")  # fmt: skip
    for i, label in enumerate(labels):
        x = _LEFT + i * slot + (slot - bar_w) / 2
        y = _TOP + plot_h
        for s in series:
            value = s.values[i]
            if value <= 0:
                continue
            h = plot_h * value / top
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="url(#p-{escape(s.key)})" class="bar"><title>{escape(label)}: '
                f"{escape(_number(value))}{escape(unit)} {escape(s.name)}</title></rect>"
            )
        if i % every == 0:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{_H - _BOTTOM + 14}" class="axis" '
                         f'text-anchor="middle">{escape(label)}</text>')  # fmt: skip
    if limit is not None:
        y = _TOP + plot_h * (1 - limit / top)
        parts.append(f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'class="limit"><title>{escape(limit_label)}</title></line>'
                     f'<text x="{_W - _RIGHT}" y="{y - 3:.1f}" class="axis" text-anchor="end">'
                     f"{escape(limit_label)}</text>")  # fmt: skip
    legend_x = _LEFT
    for s in series:
        parts.append(f'<rect x="{legend_x}" y="{_H - 12}" width="10" height="10" '
                     f'fill="url(#p-{escape(s.key)})" class="bar"/><text x="{legend_x + 14}" '
                     f'y="{_H - 3}" class="legend">{escape(s.name)}</text>')  # fmt: skip
        legend_x += 24 + 7 * len(s.name)
    parts.append("</svg>")
    return Markup("".join(parts))
