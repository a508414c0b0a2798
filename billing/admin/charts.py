"""
The admin's one SVG bar chart renderer, drawn on the server (no script, nothing
loaded from outside): a customer's usage per day or hour, and the overview's reports
per hour stacked by status, are both columns of segments in slots along a time axis.

`bar_chart` turns columns into geometry the template `includes/bar_chart.html` draws:
every bar, axis and label in SVG user units. The y axis tops out at a round number
(1, 2 or 5 times a power of ten) and names its unit, so a bar's height reads as a
quantity; the x axis spans only the slots that have begun (a chart of a period's
first days does not spend most of its width on days to come).
"""

from dataclasses import dataclass, field
from decimal import Decimal

from django.utils.html import format_html_join


@dataclass(frozen=True)
class Frame:
    """A chart's size and the margins its axis labels take."""

    width: int = 640
    height: int = 200
    left: int = 56
    right: int = 12
    top: int = 22
    bottom: int = 40

    @property
    def plot_width(self) -> int:
        return self.width - self.left - self.right

    @property
    def plot_height(self) -> int:
        return self.height - self.top - self.bottom


@dataclass
class Segment:
    """One bar, or one part of a stacked bar: its value, CSS class, tooltip and data attributes."""

    value: Decimal | int
    css: str
    title: str
    data: dict = field(default_factory=dict)


MAX_X_LABELS = 8


def nice_ceiling(value) -> Decimal:
    """The smallest 1, 2 or 5 times a power of ten at or above `value`: round axis labels."""
    value = Decimal(value)
    if value <= 0:
        return Decimal(0)
    magnitude = Decimal(10) ** value.adjusted()
    for factor in (1, 2, 5, 10):
        if factor * magnitude >= value:
            return factor * magnitude
    return 10 * magnitude


def bar_chart(*, columns: list[list[Segment]], slots: int, x_labels: list[str], unit: str,
              frame: Frame = Frame(), fill: float = 0.8, number=str) -> dict:
    """
    Geometry of `slots` columns (`columns[i]` stacked bottom to top in slot i; fewer
    columns than slots leave the rest empty), labelled with `x_labels[i]` (thinned to
    at most MAX_X_LABELS), and a y axis in `unit` formatted by `number`.
    """
    slots = max(1, slots, len(columns))
    top = nice_ceiling(max((sum((Decimal(s.value) for s in column), Decimal(0)) for column in columns), default=0))
    slot_width = frame.plot_width / slots
    axis_y = frame.top + frame.plot_height
    bars = []
    for index, column in enumerate(columns):
        y = axis_y
        for segment in column:
            height = 0.0 if not top else float(Decimal(segment.value) / top) * frame.plot_height
            y -= height
            bars.append({
                "x": round(frame.left + index * slot_width + slot_width * (1 - fill) / 2, 2),
                "y": round(y, 2),
                "width": round(max(slot_width * fill, 1.0), 2),
                "height": round(height, 2),
                "css": segment.css,
                "title": segment.title,
                "data": format_html_join(" ", 'data-{}="{}"', segment.data.items()),
            })
    step = max(1, -(-slots // MAX_X_LABELS))
    labels = [
        {"x": round(frame.left + i * slot_width + slot_width / 2, 2), "text": text}
        for i, text in enumerate(x_labels[:slots]) if i % step == 0
    ]
    y_labels = [
        {"y": round(axis_y - frame.plot_height * fraction, 2), "text": number(top * Decimal(str(fraction)))}
        for fraction in (0, 0.5, 1)
    ] if top else [{"y": axis_y, "text": "0"}]
    return {
        "bars": bars, "x_labels": labels, "y_labels": y_labels, "unit": unit, "top": top, "slots": slots,
        "width": frame.width, "height": frame.height, "left": frame.left, "top_y": frame.top,
        "axis_y": axis_y, "axis_right": frame.left + frame.plot_width, "label_y": axis_y + 16,
        "unit_x": frame.left - 6, "unit_y": frame.top - 8, "y_label_x": frame.left - 6,
    }
