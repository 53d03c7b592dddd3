"""Inline SVG charts for the HTML pages (no external assets, no JavaScript): horizontal bars with optional
confidence-interval whiskers, and a diverging chart of differences between two runs.

Hand-written rather than a plotting library: two chart shapes, each a few dozen lines, render the same in every
browser and in a file opened from disk, and keep the report free of assets to ship.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

ROW_HEIGHT = 22
LABEL_WIDTH = 260
BAR_WIDTH = 360
VALUE_WIDTH = 190
WHISKER = "#222"


@dataclass(frozen=True)
class Bar:
    """One bar: its ``label``, ``value`` (None: drawn empty), sample count ``n`` and optional interval
    ``[low, high]`` (drawn as a whisker when both are set)."""

    label: str
    value: float | None
    n: int | None = None
    low: float | None = None
    high: float | None = None

    @property
    def has_ci(self) -> bool:
        return self.low is not None and self.high is not None


def _num(value: float, unit: str = "", signed: bool = False) -> str:
    return f"{value:+.2f}{unit}" if signed else f"{value:.2f}{unit}"


def _frame(title: str, rows: int) -> tuple[list[str], int]:
    height = ROW_HEIGHT * rows + 30
    width = LABEL_WIDTH + BAR_WIDTH + VALUE_WIDTH
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
            f'aria-label="{escape(title)}">',
            f'<text x="0" y="16" font-size="13" font-weight="bold">{escape(title)}</text>'], height


def _label(parts: list[str], y: int, label: str) -> None:
    shown = label if len(label) <= 38 else label[:36] + "…"
    parts.append(f'<text x="{LABEL_WIDTH - 6}" y="{y + 14}" font-size="11" text-anchor="end">'
                 f'<title>{escape(label)}</title>{escape(shown)}</text>')


def _whisker(parts: list[str], x_low: float, x_high: float, y: int) -> None:
    mid = y + ROW_HEIGHT / 2
    parts.append(f'<path class="ci" d="M{x_low:.1f} {mid:.1f}H{x_high:.1f}M{x_low:.1f} {mid - 5:.1f}V{mid + 5:.1f}'
                 f'M{x_high:.1f} {mid - 5:.1f}V{mid + 5:.1f}" stroke="{WHISKER}" stroke-width="1.2" fill="none"/>')


def bar_chart(title: str, bars: list[Bar], max_value: float | None = None, unit: str = "",
              colour: str = "#4C72B0") -> str:
    """Horizontal bars from 0 to ``max_value`` (default: the largest value or interval end)."""
    ends = [v for b in bars for v in (b.value, b.high) if v is not None]
    top = max_value if max_value is not None else (max(ends) if ends else 1.0)
    top = top or 1.0
    x = lambda v: LABEL_WIDTH + max(0.0, min(1.0, v / top)) * BAR_WIDTH  # noqa: E731
    parts, _ = _frame(title, len(bars))
    for i, bar in enumerate(bars):
        y = 26 + i * ROW_HEIGHT
        _label(parts, y, bar.label)
        parts.append(f'<rect x="{LABEL_WIDTH}" y="{y + 3}" width="{BAR_WIDTH}" height="{ROW_HEIGHT - 6}" fill="#eee"/>')
        if bar.value is not None:
            parts.append(f'<rect class="bar" x="{LABEL_WIDTH}" y="{y + 3}" width="{x(bar.value) - LABEL_WIDTH:.1f}" '
                         f'height="{ROW_HEIGHT - 6}" fill="{colour}"/>')
        if bar.has_ci:
            _whisker(parts, x(bar.low), x(bar.high), y)
        text = "n/a" if bar.value is None else _num(bar.value, unit)
        if bar.has_ci:
            text += f" [{_num(bar.low, unit)}, {_num(bar.high, unit)}]"
        if bar.n is not None:
            text += f" (n={bar.n})"
        parts.append(f'<text x="{LABEL_WIDTH + BAR_WIDTH + 6}" y="{y + 14}" font-size="11">{escape(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def diff_chart(title: str, bars: list[Bar], unit: str = "", notes: list[str] | None = None) -> str:
    """Differences (B − A) as bars left or right of a zero line, symmetric scale, with interval whiskers;
    ``notes[i]`` (e.g. a p-value) is printed after bar ``i``'s value."""
    ends = [abs(v) for b in bars for v in (b.value, b.low, b.high) if v is not None]
    span = max(ends) if ends and max(ends) > 0 else 1.0
    zero = LABEL_WIDTH + BAR_WIDTH / 2
    x = lambda v: zero + max(-1.0, min(1.0, v / span)) * BAR_WIDTH / 2  # noqa: E731
    parts, height = _frame(title, len(bars))
    parts.append(f'<path d="M{zero:.1f} 22V{height - 4}" stroke="#888" stroke-width="1"/>')
    for i, bar in enumerate(bars):
        y = 26 + i * ROW_HEIGHT
        _label(parts, y, bar.label)
        if bar.value is not None:
            left, right = sorted((zero, x(bar.value)))
            colour = "#55A868" if bar.value >= 0 else "#C44E52"
            parts.append(f'<rect class="bar" x="{left:.1f}" y="{y + 4}" width="{right - left:.1f}" '
                         f'height="{ROW_HEIGHT - 8}" fill="{colour}"/>')
        if bar.has_ci:
            _whisker(parts, x(bar.low), x(bar.high), y)
        text = "n/a" if bar.value is None else _num(bar.value, unit, signed=True)
        if bar.has_ci:
            text += f" [{_num(bar.low, unit, True)}, {_num(bar.high, unit, True)}]"
        if notes and notes[i]:
            text += f" {notes[i]}"
        parts.append(f'<text x="{LABEL_WIDTH + BAR_WIDTH + 6}" y="{y + 14}" font-size="11">{escape(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)
