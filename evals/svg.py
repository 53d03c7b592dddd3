"""Inline SVG bar charts for the HTML report (no external assets, no JavaScript)."""

from __future__ import annotations

from html import escape

ROW_HEIGHT = 22
LABEL_WIDTH = 260
BAR_WIDTH = 360
VALUE_WIDTH = 110


def bar_chart(title: str, items: list[tuple[str, float | None, int]], max_value: float | None = None,
              unit: str = "", colour: str = "#4C72B0") -> str:
    """A horizontal bar chart: one ``(label, value, n)`` per bar; None values are drawn empty."""
    values = [v for _, v, _ in items if v is not None]
    top = max_value if max_value is not None else (max(values) if values else 1.0)
    top = top or 1.0
    height = ROW_HEIGHT * len(items) + 30
    width = LABEL_WIDTH + BAR_WIDTH + VALUE_WIDTH
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{escape(title)}">',
             f'<text x="0" y="16" font-size="13" font-weight="bold">{escape(title)}</text>']
    for i, (label, value, n) in enumerate(items):
        y = 26 + i * ROW_HEIGHT
        shown = label if len(label) <= 38 else label[:36] + "…"
        parts.append(f'<text x="{LABEL_WIDTH - 6}" y="{y + 14}" font-size="11" text-anchor="end">'
                     f'<title>{escape(label)}</title>{escape(shown)}</text>')
        parts.append(f'<rect x="{LABEL_WIDTH}" y="{y + 3}" width="{BAR_WIDTH}" height="{ROW_HEIGHT - 6}" fill="#eee"/>')
        if value is not None:
            length = max(0.0, min(1.0, value / top)) * BAR_WIDTH
            parts.append(f'<rect x="{LABEL_WIDTH}" y="{y + 3}" width="{length:.1f}" height="{ROW_HEIGHT - 6}" '
                         f'fill="{colour}"/>')
        text = "n/a" if value is None else f"{value:.2f}{unit}"
        parts.append(f'<text x="{LABEL_WIDTH + BAR_WIDTH + 6}" y="{y + 14}" font-size="11">'
                     f'{escape(text)} (n={n})</text>')
    parts.append("</svg>")
    return "".join(parts)
