"""Server-rendered SVG charts (pure: values in, SVG text out; no script, no external asset).

The SVG scales to its container (``viewBox``, ``width=100%``), so one chart reads at
1,280 px and at 390 px. Every bar has a ``<title>`` (a tooltip, and text for screen readers).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from html import escape

from markupsafe import Markup

PALETTE = (
    "#3b6ea8", "#e0883a", "#4f9a5b", "#c2474a", "#8a6bb8",
    "#8c6d4f", "#d17cb0", "#7a7f86", "#b5b53c", "#3aaab8",
)  # fmt: skip
OTHER_COLOUR = "#b8bec4"


def colour(i: int, name: str) -> str:
    return OTHER_COLOUR if name == "other" else PALETTE[i % len(PALETTE)]


def _nice_max(value: float) -> float:
    """The smallest 1/2/5 x 10^k at or above ``value`` (the axis top)."""
    if value <= 0:
        return 1.0
    scale = 10.0 ** (len(str(int(value))) - 1) if value >= 1 else 1.0
    while scale > value:
        scale /= 10
    for step in (1, 2, 5, 10):
        if step * scale >= value:
            return step * scale
    return 10 * scale


def money(v: float) -> str:
    if v >= 100:
        return f"${v:,.0f}"
    if v >= 1:
        return f"${v:,.2f}"
    if v == 0 or v >= 0.01:
        return f"${v:.4f}".rstrip("0").rstrip(".") if v else "$0"
    return f"${v:.6f}".rstrip("0")


def stacked_bars(
    days: Sequence[dt.date],
    series: Mapping[str, Sequence[float]],
    *,
    label: str,
    width: int = 960,
    height: int = 260,
    fmt: Callable[[float], str] = money,
) -> Markup:
    """Daily bars, one stack per day, one colour per series (in ``series`` order);
    ``fmt`` writes the axis and tooltip values (USD by default)."""
    left, right, top, bottom = 64, 8, 10, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(values[i] for values in series.values()) for i in range(len(days))]
    axis_max = _nice_max(max(totals, default=0.0))
    slot = plot_w / max(1, len(days))
    bar_w = max(1.0, slot * 0.78)
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="{escape(label)}" preserveAspectRatio="xMidYMid meet">'
    ]
    for frac in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - frac)
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" '
                   'stroke="#dde2e6"/>')  # fmt: skip
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
                   f'fill="#6b7580">{escape(fmt(axis_max * frac))}</text>')  # fmt: skip
    every = max(1, round(len(days) / 8))
    for i, day in enumerate(days):
        x = left + i * slot + (slot - bar_w) / 2
        y = top + plot_h
        for j, (name, values) in enumerate(series.items()):
            v = values[i]
            if v <= 0:
                continue
            h = plot_h * v / axis_max
            y -= h
            tip = f"{day.isoformat()} · {name}: {fmt(v)}"
            out.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{max(h, 0.5):.1f}" '
                f'fill="{colour(j, name)}"><title>{escape(tip)}</title></rect>'
            )
        if i % every == 0:
            out.append(f'<text x="{x + bar_w / 2:.1f}" y="{height - 8}" text-anchor="middle" '
                       f'font-size="11" fill="#6b7580">{day.strftime("%b %d")}</text>')  # fmt: skip
    out.append("</svg>")
    return Markup("".join(out))


__all__ = ["OTHER_COLOUR", "PALETTE", "colour", "money", "stacked_bars"]
