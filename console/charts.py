"""The console's charts as server-side SVG: no chart library, no script, nothing from a CDN. Colours and fonts
come from console.css through class names (the Content-Security-Policy allows no inline style); sizes are SVG
attributes in the viewBox's units, so a chart scales to its container's width.

Each function takes plain figures and returns safe markup with a <title> and an aria-label; the page shows the
same figures as text beside it."""

import datetime as dt

from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe


def _svg(width: int, height: int, label: str, body: SafeString, css: str) -> SafeString:
    return format_html(
        '<svg class="chart {}" viewBox="0 0 {} {}" role="img" aria-label="{}" preserveAspectRatio="xMinYMin meet">'
        "<title>{}</title>{}</svg>",
        css, width, height, label, label, body,
    )


def bar_chart(bars: list[tuple[str, int]], *, label: str, every: int = 1, width: int = 640) -> SafeString:
    """Vertical bars, one per (label, value); every ``every``-th label is written under its bar. ``width`` in
    viewBox units against a height of 220 (a wider chart is flatter)."""
    height, left, bottom, top = 220, 36, 28, 12
    peak = max((v for _, v in bars), default=0) or 1
    step = (width - left) / max(len(bars), 1)
    parts = [
        format_html('<text class="axis" x="{}" y="{}" text-anchor="end">{}</text>', left - 4, top + 4, peak),
        format_html('<text class="axis" x="{}" y="{}" text-anchor="end">0</text>', left - 4, height - bottom),
        format_html('<line class="baseline" x1="{}" y1="{}" x2="{}" y2="{}"/>', left, height - bottom, width, height - bottom),
    ]
    for n, (name, value) in enumerate(bars):
        h = (height - bottom - top) * value / peak
        x = left + n * step
        parts.append(
            format_html(
                '<rect class="bar" x="{}" y="{}" width="{}" height="{}"><title>{}: {}</title></rect>',
                _n(x + step * 0.1), _n(height - bottom - h), _n(step * 0.8), _n(h), name, value,
            )
        )
        if n % every == 0:
            parts.append(
                format_html('<text class="axis" x="{}" y="{}" text-anchor="middle">{}</text>', _n(x + step / 2), height - 8, name)
            )
    return _svg(width, height, label, mark_safe("".join(parts)), "bars")  # noqa: S308 - each part is format_html's


def funnel_chart(steps, *, label: str) -> SafeString:
    """Horizontal bars, one per funnel step (objects with ``label``, ``count`` and ``conversion``), widest first."""
    row, width, left = 34, 640, 150
    peak = max((s.count for s in steps), default=0) or 1
    parts = []
    for n, step in enumerate(steps):
        w = (width - left - 110) * step.count / peak
        y = n * row
        conversion = "" if step.conversion is None else f" ({step.conversion:.0%})"
        parts.append(
            format_html(
                '<text class="axis" x="{}" y="{}" text-anchor="end">{}</text>'
                '<rect class="bar step-{}" x="{}" y="{}" width="{}" height="{}"/>'
                '<text class="value" x="{}" y="{}">{}{}</text>',
                left - 8, y + 21, step.label, n, left, y + 6, _n(max(w, 1)), row - 10, _n(left + max(w, 1) + 6), y + 21,
                step.count, conversion,
            )
        )
    return _svg(width, row * len(steps) + 4, label, mark_safe("".join(parts)), "funnel")  # noqa: S308


def pavs_grid_chart(cells: dict[tuple[int, int], int], *, bins: int, bin_minutes: int, label: str) -> SafeString:
    """A binned scatter: PAVS baseline (x) against latest (y), each cell shaded by its share of the patients;
    the diagonal is "no change", so cells above it gained."""
    size, left, bottom, top = 24, 44, 36, 8
    n = bins + 1
    width, height = left + n * size + 8, top + n * size + bottom
    peak = max(cells.values(), default=0) or 1
    parts = [
        format_html(
            '<line class="diagonal" x1="{}" y1="{}" x2="{}" y2="{}"/>', left, top + n * size, left + n * size, top
        )
    ]
    for (b, latest), count in sorted(cells.items()):
        level = min(4, 1 + int(4 * count / peak))  # five shades, in console.css
        parts.append(
            format_html(
                '<rect class="cell level-{}" x="{}" y="{}" width="{}" height="{}">'
                "<title>baseline {}, latest {}: {} patient(s)</title></rect>",
                level, left + b * size, top + (n - 1 - latest) * size, size - 1, size - 1,
                _bin_label(b, bins, bin_minutes), _bin_label(latest, bins, bin_minutes), count,
            )
        )
    for k in range(0, n, 2):
        parts.append(
            format_html(
                '<text class="axis" x="{}" y="{}" text-anchor="middle">{}</text>'
                '<text class="axis" x="{}" y="{}" text-anchor="end">{}</text>',
                _n(left + k * size + size / 2), top + n * size + 14, k * bin_minutes,
                left - 4, _n(top + (n - 1 - k) * size + size / 2 + 4), k * bin_minutes,
            )
        )
    parts.append(
        format_html(
            '<text class="axis" x="{}" y="{}" text-anchor="middle">baseline min/wk</text>',
            _n(left + n * size / 2), height - 4,
        )
    )
    return _svg(width, height, label, mark_safe("".join(parts)), "grid")  # noqa: S308


def _n(value: float) -> str:
    """A coordinate with one decimal (format_html escapes its arguments first, so no format spec there)."""
    return f"{value:.1f}"


def _bin_label(k: int, bins: int, bin_minutes: int) -> str:
    return f"{k * bin_minutes}+" if k >= bins else f"{k * bin_minutes}-{(k + 1) * bin_minutes - 1}"


def week_label(day: dt.date) -> str:
    return day.strftime("%d %b")

