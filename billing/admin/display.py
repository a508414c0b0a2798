"""
Small HTML pieces the billing admin shows everywhere: Stripe links, status badges,
money and numbers. One formatting rule each, so every page writes "1,128 units",
"+138" and "$112.80" the same way, never `1128.000000`.

A unit is one billed second of execution (each execution rounded up to the second):
`UNIT_HELP` says so wherever a page shows units.
"""

from decimal import Decimal

from django.conf import settings
from django.utils.html import format_html

from .. import stripe_api, stripe_dashboard
from .selectors import money

__all__ = ["UNIT_HELP", "money", "number", "signed", "status_badge", "stripe_link", "stripe_url", "units"]

UNIT_HELP = "1 unit = 1 billed second of execution (each execution rounded up to the second)"

# Status -> (colour class, symbol): the text says it too, colour is never the only cue.
BADGES = {
    "sent": ("ok", "✓"),
    "ok": ("ok", "✓"),
    "corrected": ("ok", "✓"),
    "resolved": ("ok", "✓"),
    "skipped": ("muted", "–"),
    "carried": ("muted", "→"),
    "late": ("warn", "!"),
    "pending": ("warn", "…"),
    "overdue": ("warn", "!"),
    "unreported": ("warn", "≠"),
    "invoice": ("warn", "≠"),
    "rejected": ("error", "✗"),
    "drift": ("warn", "≠"),
    "unknown": ("warn", "?"),
    "failed": ("error", "✗"),
}


def number(value) -> str:
    """A decimal without trailing zeros, with thousands separators: 1128.000000 -> 1,128; 10.500000 -> 10.5."""
    if value is None:
        return "-"
    value = Decimal(value)
    return f"{value.quantize(Decimal(1)) if value == value.to_integral() else value.normalize():,f}"


def signed(value) -> str:
    """A difference, with its sign: +138, -25, 0."""
    if value is None:
        return "-"
    text = number(value)
    return text if Decimal(value) <= 0 else f"+{text}"


def units(value) -> str:
    """A quantity of units, named: "1,128 units", "1 unit"."""
    if value is None:
        return "unknown"
    return f"{number(value)} unit{'' if Decimal(value) == 1 else 's'}"


def stripe_url(stripe_id: str, livemode: bool | None) -> str:
    # dj-stripe leaves livemode empty on some nested objects: the key's mode decides.
    return stripe_dashboard.url_for(stripe_id, settings.STRIPE_LIVE_MODE if livemode is None else livemode)


def stripe_link(stripe_id: str, livemode: bool | None, label: str | None = None):
    url = stripe_url(stripe_id, livemode)
    if not url:
        return stripe_id or "-"
    if stripe_api.uses_emulator():
        # The emulator's objects are not on dashboard.stripe.com: the link says so.
        return format_html(
            '<a href="{}" target="_blank" rel="noopener" class="epsilon-emulated" '
            'title="Points at dashboard.stripe.com, where the emulator\'s objects do not exist">{} ↗ (emulator)</a>',
            url, label or stripe_id,
        )
    return format_html('<a href="{}" target="_blank" rel="noopener">{} ↗</a>', url, label or stripe_id)


def status_badge(status: str, label: str | None = None, title: str = ""):
    tone, symbol = BADGES.get(status, ("muted", "•"))
    return format_html(
        '<span class="epsilon-badge epsilon-badge-{}" data-status="{}" title="{}">'
        '<span aria-hidden="true">{}</span> {}</span>',
        tone, status, title or label or status, symbol, label or status.capitalize(),
    )
