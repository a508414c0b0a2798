"""Small HTML pieces the billing admin shows everywhere: Stripe links, status badges, money."""

from django.conf import settings
from django.utils.html import format_html

from .. import stripe_dashboard
from .selectors import money

__all__ = ["money", "status_badge", "stripe_link", "stripe_url"]

# Status -> (colour class, symbol): the text says it too, colour is never the only cue.
BADGES = {
    "sent": ("ok", "✓"),
    "ok": ("ok", "✓"),
    "corrected": ("ok", "✓"),
    "skipped": ("muted", "–"),
    "carried": ("muted", "→"),
    "late": ("warn", "!"),
    "pending": ("warn", "…"),
    "unreported": ("warn", "≠"),
    "invoice": ("warn", "≠"),
    "rejected": ("error", "✗"),
    "drift": ("warn", "≠"),
    "unknown": ("warn", "?"),
    "failed": ("error", "✗"),
}


def stripe_url(stripe_id: str, livemode: bool | None) -> str:
    # dj-stripe leaves livemode empty on some nested objects: the key's mode decides.
    return stripe_dashboard.url_for(stripe_id, settings.STRIPE_LIVE_MODE if livemode is None else livemode)


def stripe_link(stripe_id: str, livemode: bool | None, label: str | None = None):
    url = stripe_url(stripe_id, livemode)
    if not url:
        return stripe_id or "-"
    return format_html('<a href="{}" target="_blank" rel="noopener">{} ↗</a>', url, label or stripe_id)


def status_badge(status: str, label: str | None = None, title: str = ""):
    tone, symbol = BADGES.get(status, ("muted", "•"))
    return format_html(
        '<span class="epsilon-badge epsilon-badge-{}" data-status="{}" title="{}">'
        '<span aria-hidden="true">{}</span> {}</span>',
        tone, status, title or label or status, symbol, label or status.capitalize(),
    )
