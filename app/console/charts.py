"""Charts drawn on the server as SVG: no script, nothing to download, readable without colour.

Only presentation attributes and classes are used (no ``style=``), so the console's policy, which
allows no inline styles, applies to them too.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

from markupsafe import Markup, escape

from app.console.render import num

WIDTH, HEIGHT = 960, 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 48, 12, 12, 28


def _ticks(top: int) -> list[int]:
    """Up to five round gridline values from 0 to at least ``top``."""
    if top <= 0:
        return [0]
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10_000, 20_000, 50_000,
                 100_000, 200_000, 500_000, 1_000_000):
        if top / step <= 4:
            break
    else:
        step = 10 ** len(str(top))
    count = -(-top // step)
    return [i * step for i in range(count + 1)]


def daily_bars(points: Iterable[tuple[date, int]], start: date, end: date, *, label: str) -> Markup:
    """Images per day from ``start`` to ``end`` (inclusive) as bars, missing days drawn as zero.

    Each bar carries its own <title> (the day and its count), the chart a text summary, so a
    screen reader or a hover tells the numbers the bars show.
    """
    counts = dict(points)
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    values = [int(counts.get(d, 0)) for d in days]
    ticks = _ticks(max(values, default=0))
    top = ticks[-1] or 1
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    slot = plot_w / max(len(days), 1)
    # Few days must not make slabs: a bar is at most 28 units wide whatever the range.
    bar_w = min(28.0, max(1.0, slot * 0.8))
    total = sum(values)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="chart-title" '
        f'preserveAspectRatio="xMidYMid meet" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="chart-title">{escape(label)}: {num(total)} images from {start} to {end}</title>',
    ]
    for tick in ticks:
        y = _TOP + plot_h - plot_h * tick / top
        parts.append(f'<line class="grid" x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="axis" x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{num(tick)}</text>')
    for i, (d, value) in enumerate(zip(days, values, strict=True)):
        h = plot_h * value / top
        x = _LEFT + i * slot + (slot - bar_w) / 2
        y = _TOP + plot_h - h
        parts.append(f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                     f'data-day="{d}" data-value="{value}"><title>{d}: {num(value)} images</title></rect>')
    # First, middle and last day under the axis: enough to read any bar's date from its position.
    for i in sorted({0, len(days) // 2, len(days) - 1}):
        x, anchor = _LEFT + i * slot + slot / 2, "middle"
        if len(days) > 1 and i == 0:
            x, anchor = _LEFT, "start"
        elif len(days) > 1 and i == len(days) - 1:
            x, anchor = WIDTH - _RIGHT, "end"
        parts.append(f'<text class="axis" x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="{anchor}">{days[i]}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
