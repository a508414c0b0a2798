"""Template tags of the billing admin: usage charts drawn as server-side SVG, badges, money."""

from datetime import timedelta
from decimal import Decimal
from itertools import count

from django import template

from ..admin import display as admin_display

register = template.Library()

WIDTH, HEIGHT = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 12, 40
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
MAX_X_LABELS = 8
_chart_ids = count(1)


@register.simple_tag
def status_badge(status, label=None, title=""):
    return admin_display.status_badge(status, label, title)


@register.simple_tag
def money(cents, currency):
    return admin_display.money(cents, currency)


@register.simple_tag
def stripe_link(stripe_id, livemode=None, label=None):
    return admin_display.stripe_link(stripe_id, livemode, label)


@register.simple_tag
def unit_help():
    return admin_display.UNIT_HELP


@register.filter
def units(value):
    """A usage figure without trailing zeros, with thousands separators: 1128.000000 -> 1,128."""
    return admin_display.number(value)


@register.filter
def signed(value):
    """A difference with its sign: +25, -3."""
    return admin_display.signed(value)


@register.filter
def unit_count(value):
    """A quantity named: "1,128 units", "1 unit"."""
    return admin_display.units(value)


@register.inclusion_tag("admin/billing/includes/usage_chart.html")
def usage_chart(chart):
    """Bars per bucket over the whole period, so the chart shows how far into it we are."""
    top = nice_ceiling(max((bar.value for bar in chart.bars), default=Decimal(0)))
    slot = PLOT_W / chart.slots
    bars = []
    for bar in chart.bars:
        index = (bar.start - chart.period.start) // chart.bucket
        height = 0.0 if not top else float(bar.value / top) * PLOT_H
        bars.append({
            "x": round(LEFT + index * slot + slot * 0.1, 2),
            "y": round(TOP + PLOT_H - height, 2),
            "width": round(max(slot * 0.8, 1.0), 2),
            "height": round(height, 2),
            "value": bar.value,
            "label": f"{_when(bar.start, chart.bucket)} – {_when(bar.end, chart.bucket)} UTC: {units(bar.value)} units",
        })
    step = max(1, -(-chart.slots // MAX_X_LABELS))
    x_labels = [
        {"x": round(LEFT + i * slot + slot / 2, 2), "text": _when(chart.period.start + i * chart.bucket, chart.bucket, short=True)}
        for i in range(0, chart.slots, step)
    ]
    y_labels = [
        {"y": round(TOP + PLOT_H - PLOT_H * fraction, 2), "text": units(top * Decimal(str(fraction)))}
        for fraction in (0, 0.5, 1)
    ] if top else [{"y": TOP + PLOT_H, "text": "0"}]
    return {
        "chart": chart,
        "id": f"usage-chart-{next(_chart_ids)}",
        "bucket": _bucket_name(chart.bucket),
        "bars": bars,
        "x_labels": x_labels,
        "y_labels": y_labels,
        "width": WIDTH, "height": HEIGHT, "left": LEFT, "top": TOP,
        "axis_y": TOP + PLOT_H, "axis_right": LEFT + PLOT_W, "label_y": TOP + PLOT_H + 16,
    }


def nice_ceiling(value: Decimal) -> Decimal:
    """The smallest 1, 2 or 5 times a power of ten at or above `value`: round axis labels."""
    if value <= 0:
        return Decimal(0)
    magnitude = Decimal(10) ** (value.adjusted())
    for factor in (1, 2, 5, 10):
        if factor * magnitude >= value:
            return factor * magnitude
    return 10 * magnitude


def _bucket_name(bucket: timedelta) -> str:
    names = {timedelta(minutes=1): "minute", timedelta(hours=1): "hour", timedelta(days=1): "day", timedelta(days=7): "week"}
    return names.get(bucket, f"{int(bucket.total_seconds() // 60)} minutes")


def _when(moment, bucket: timedelta, short=False) -> str:
    if bucket >= timedelta(days=1):
        return moment.strftime("%b %d" if short else "%Y-%m-%d %H:%M")
    return moment.strftime("%d %H:%M" if short else "%Y-%m-%d %H:%M")
