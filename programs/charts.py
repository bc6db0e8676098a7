"""Server-side charts as inline SVG (no JavaScript, no CDN): safe to embed in any page."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

PALETTE = ("#adb5bd", "#3b5bdb", "#2b8a3e", "#e8590c")


def _nice_ceiling(value: int) -> int:
    """The smallest 1/2/5 times 10^n at or above ``value`` (so grid lines fall on round numbers)."""
    if value <= 0:
        return 1
    magnitude = 1
    while magnitude * 10 <= value:
        magnitude *= 10
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover


def grouped_bar_chart_svg(
    *,
    title: str,
    groups: Sequence[tuple[str, Sequence[int]]],
    series: Sequence[str],
    value_label: Callable[[int], str],
    width: int = 760,
    height: int = 300,
) -> SafeString:
    """A grouped bar chart: one group per label, one bar per series (values are integers ≥ 0).

    Every text is escaped; each bar carries a <title> tooltip with its exact value.
    """
    peak = _nice_ceiling(max([max(values, default=0) for _, values in groups] + [0]))
    axis_labels = [value_label(peak * step // 4) for step in range(5)]
    # Room for the longest axis label (about 7 px per character at 12 px).
    left, right, top, bottom = max(60, 7 * max(len(label) for label in axis_labels) + 14), 12, 34, 48
    plot_width = width - left - right
    plot_height = height - top - bottom
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="{escape(title)}" class="chart" style="max-width:{width}px;font:12px system-ui,sans-serif">',
        f"<title>{escape(title)}</title>",
    ]
    for step, label in enumerate(axis_labels):
        y = top + plot_height - plot_height * step / 4
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#dfe3ea"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#5b6478">{escape(label)}</text>')
    group_width = plot_width / max(len(groups), 1)
    bar_width = max(2.0, group_width * 0.8 / max(len(series), 1))
    for index, (label, values) in enumerate(groups):
        x0 = left + group_width * index + group_width * 0.1
        for position, value in enumerate(values):
            bar_height = plot_height * value / peak if peak else 0
            x = x0 + bar_width * position
            y = top + plot_height - bar_height
            color = PALETTE[position % len(PALETTE)]
            name = series[position] if position < len(series) else ""
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_width - 1:.1f}" height="{bar_height:.1f}" fill="{color}">'
                f"<title>{escape(label)}, {escape(name)}: {escape(value_label(value))}</title></rect>"
            )
        parts.append(
            f'<text x="{x0 + bar_width * len(values) / 2:.1f}" y="{height - bottom + 16}" text-anchor="middle" '
            f'fill="#1d2433">{escape(label)}</text>'
        )
    legend_x = left
    for position, name in enumerate(series):
        color = PALETTE[position % len(PALETTE)]
        parts.append(f'<rect x="{legend_x}" y="10" width="12" height="12" fill="{color}"/>')
        parts.append(f'<text x="{legend_x + 16}" y="20" fill="#1d2433">{escape(name)}</text>')
        legend_x += 24 + 7 * len(name)
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated text above is escaped
