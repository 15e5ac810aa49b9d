"""Server-rendered SVG line charts: pictures without a JavaScript chart library.

Colours come from CSS classes ``s0``..``s6`` (the page's stylesheet), since the Content-Security-Policy
allows no inline styles. Each time bucket has an invisible column whose ``<title>`` lists its values, so
hovering (or a screen reader) tells the numbers behind the picture.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

__all__ = ["PALETTE_SIZE", "Series", "line_chart", "nice_ticks"]

PALETTE_SIZE = 7
_W, _H = 480, 200
_LEFT, _RIGHT, _TOP, _BOTTOM = 48, 10, 10, 26


@dataclass(frozen=True, slots=True)
class Series:
    """One line: a name for the legend and one value per time bucket (None where there is no data)."""

    name: str
    values: Sequence[float | None]


def nice_ticks(top: float, count: int = 4, *, integer: bool = False) -> list[float]:
    """Round tick values from 0 up to at least ``top`` (whole steps for counts when ``integer``)."""
    if top <= 0:
        return [0.0, 1.0]
    raw = max(top / count, 1.0) if integer else top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    ticks = [0.0]
    while ticks[-1] < top:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _fmt(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:.3g}M"
    if value >= 1000:
        return f"{value / 1000:.3g}k"
    return f"{value:.3g}"


def line_chart(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    unit: str = "",
    *,
    integer: bool = True,
) -> Markup:
    """An accessible SVG chart of ``series`` over the time buckets named by ``labels``."""
    n = len(labels)
    top = max((v for s in series for v in s.values if v is not None), default=0.0)
    ticks = nice_ticks(top, integer=integer)
    y_max = ticks[-1]
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def x(i: int) -> float:
        return _LEFT + (plot_w * (i + 0.5) / n if n else 0)

    def y(v: float) -> float:
        return _TOP + plot_h * (1 - v / y_max)

    parts = [
        f'<svg class="chart" viewBox="0 0 {_W} {_H}" role="img" aria-labelledby="{chart_id}-t {chart_id}-d" '
        f'preserveAspectRatio="xMidYMid meet">',
        f'<title id="{chart_id}-t">{escape(title)}</title>',
    ]
    summary = "; ".join(
        f"{s.name}: total {_fmt(sum(v for v in s.values if v is not None))}, peak "
        f"{_fmt(max((v for v in s.values if v is not None), default=0))}{unit}"
        for s in series
    )
    parts.append(f'<desc id="{chart_id}-d">{escape(summary or "no data")}</desc>')
    for tick in ticks:
        ty = y(tick)
        parts.append(f'<line class="grid" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{ty:.1f}" y2="{ty:.1f}"/>')
        parts.append(f'<text class="tick" x="{_LEFT - 6}" y="{ty + 4:.1f}" text-anchor="end">{_fmt(tick)}</text>')
    if n:
        for i in sorted({0, n // 2, n - 1}):
            anchor = "start" if i == 0 else ("end" if i == n - 1 else "middle")
            parts.append(
                f'<text class="tick" x="{x(i):.1f}" y="{_H - 8}" text-anchor="{anchor}">{escape(labels[i])}</text>'
            )
    for index, s in enumerate(series):
        css = f"s{index % PALETTE_SIZE}"
        points = [(x(i), y(v)) for i, v in enumerate(s.values) if v is not None]
        if len(points) == 1:
            px, py = points[0]
            parts.append(f'<circle class="dot {css}" cx="{px:.1f}" cy="{py:.1f}" r="3"/>')
        elif points:
            path = " ".join(f"{'M' if j == 0 else 'L'}{px:.1f},{py:.1f}" for j, (px, py) in enumerate(points))
            parts.append(f'<path class="line {css}" d="{path}"/>')
    column = plot_w / n if n else 0
    for i, label in enumerate(labels):
        values = ", ".join(
            f"{s.name} {_fmt(value)}{unit}" for s in series if i < len(s.values) and (value := s.values[i]) is not None
        )
        parts.append(
            f'<rect class="hover" x="{_LEFT + column * i:.1f}" y="{_TOP}" width="{column:.1f}" height="{plot_h}">'
            f"<title>{escape(label)}: {escape(values or 'no requests')}</title></rect>"
        )
    parts.append("</svg>")
    legend = "".join(
        f'<li><span class="swatch s{i % PALETTE_SIZE}" aria-hidden="true"></span>{escape(s.name)}</li>'
        for i, s in enumerate(series)
    )
    caption = f'<figcaption aria-hidden="true">{escape(title)}</figcaption>'
    return Markup(f'<figure class="chart-box">{caption}{"".join(parts)}<ul class="legend">{legend}</ul></figure>')
