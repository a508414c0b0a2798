"""
Stripe webhooks that close a billing period: report its usage before Stripe invoices it.

dj-stripe verifies the signature, records each delivery and calls these handlers inside
the event's database transaction, so they only work out which periods closed and queue
the reporting with django-q2 once that transaction has committed. Replaying an event
reports nothing twice: the ledger already holds what was sent.
"""

import logging
import time
from datetime import UTC, datetime

from django.db import transaction
from django_q.tasks import async_task
from djstripe.event_handlers import djstripe_receiver

from .services import stripe_sync

logger = logging.getLogger(__name__)

# Draft invoices that bill a period of metered usage.
PERIOD_INVOICE_REASONS = {"subscription_cycle", "subscription_update", "subscription_cancel"}


@djstripe_receiver("customer.subscription.updated")
def report_period_closed_by_renewal(sender, event, **kwargs):
    closed = periods_closed_by_subscription_update(event.data) + spans_closed_by_item_changes(event)
    if closed:
        enqueue_closed_period_report(closed, event_id=event.id)


@djstripe_receiver("customer.subscription.deleted")
def report_final_period(sender, event, **kwargs):
    """The subscription ended: its last period is owed up to the end of service."""
    subscription = event.data.get("object") or {}
    ended = subscription.get("ended_at") or subscription.get("canceled_at") or event_time(event)
    closed = [
        (item["id"], item["current_period_start"], min(ended, item["current_period_end"]))
        for item in (subscription.get("items") or {}).get("data", [])
        if item.get("current_period_start") is not None and ended > item["current_period_start"]
    ]
    if closed:
        enqueue_closed_period_report(closed, event_id=event.id)


def spans_closed_by_item_changes(event) -> list[tuple[str, int, int]]:
    """
    Items this update removed or re-priced, recorded at the event's time (dj-stripe's
    mirror keeps removed items and shows only the new price); their usage up to the
    change is owed to the span that closed.
    """
    subscription = event.data.get("object") or {}
    previous = (event.data.get("previous_attributes") or {}).get("items")
    if not previous:
        return []
    old_items = {i["id"]: i for i in previous.get("data", [])}
    before = {item_id: stripe_sync.price_id_of(item) for item_id, item in old_items.items()}
    at = from_timestamp(event_time(event))
    changes = stripe_sync.record_item_changes(subscription, before, at=at)
    return [
        (c.item_id, old_items[c.item_id]["current_period_start"], event_time(event))
        for c in changes
        if old_items[c.item_id].get("current_period_start") is not None
        and old_items[c.item_id]["current_period_start"] < event_time(event)
    ]


@djstripe_receiver("invoice.finalized")
def remember_finalized_invoice(sender, event, **kwargs):
    """Stripe never changes a finalized invoice: later usage of its periods is carried on."""
    from .services import invoices

    invoices.record_finalized(event.data.get("object") or {})


@djstripe_receiver("invoice.created")
def flush_usage_before_invoice_finalizes(sender, event, **kwargs):
    closed = periods_billed_by_draft_invoice(event.data.get("object") or {})
    if closed:
        enqueue_closed_period_report(closed, event_id=event.id)


def periods_closed_by_subscription_update(data: dict) -> list[tuple[str, int, int]]:
    """
    (item id, start, end) of each period that this update closed: the previous
    attributes show the item's old period, and the new one starts where it ended.
    """
    subscription = data.get("object") or {}
    previous = data.get("previous_attributes") or {}
    current_items = {i["id"]: i for i in (subscription.get("items") or {}).get("data", [])}
    closed = []
    for old in (previous.get("items") or {}).get("data", []):
        new = current_items.get(old.get("id"))
        if new and _rolled_over(old, new):
            closed.append((old["id"], old["current_period_start"], old["current_period_end"]))
    if not closed and "current_period_end" in previous:
        # API versions before 2025-03-31 kept the period on the subscription.
        for item_id, new in current_items.items():
            if previous["current_period_end"] <= new.get("current_period_start", 0):
                closed.append((item_id, previous["current_period_start"], previous["current_period_end"]))
    return closed


def _rolled_over(old: dict, new: dict) -> bool:
    end = old.get("current_period_end")
    return end is not None and old.get("current_period_start") is not None and end <= new.get("current_period_start", 0)


def periods_billed_by_draft_invoice(invoice: dict) -> list[tuple[str, int, int]]:
    """(item id, start, end) of the subscription item periods a draft invoice bills."""
    if invoice.get("status") != "draft":
        return []
    return periods_billed_by_invoice(invoice)


def periods_billed_by_invoice(invoice) -> list[tuple[str, int, int]]:
    """(item id, start, end) of the subscription item periods an invoice bills."""
    return [(item_id, start, end) for item_id, start, end, _quantity in lines_billed_by_invoice(invoice)]


def lines_billed_by_invoice(invoice) -> list[tuple[str, int, int, object]]:
    """(item id, start, end, quantity) of the subscription item periods an invoice bills."""
    if invoice.get("billing_reason") not in PERIOD_INVOICE_REASONS:
        return []
    billed = []
    for line in (invoice.get("lines") or {}).get("data", []):
        item_id = _line_subscription_item(line)
        period = line.get("period") or {}
        if item_id and period.get("end", 0) > period.get("start", 0):
            billed.append((item_id, period["start"], period["end"], line.get("quantity")))
    return billed


def _line_subscription_item(line: dict) -> str | None:
    details = (line.get("parent") or {}).get("subscription_item_details") or {}
    return details.get("subscription_item") or line.get("subscription_item")


def enqueue_closed_period_report(closed, *, event_id: str) -> None:
    logger.info("event %s closed %d period(s); reporting them after commit", event_id, len(closed))
    transaction.on_commit(
        lambda: async_task(
            "billing.tasks.report_closed_periods",
            [list(c) for c in closed],
            task_name=f"report usage for {event_id}",
        )
    )


def event_time(event) -> int:
    """When Stripe made the change (a test clock's time for its customers), as a timestamp."""
    created = (event.stripe_data or {}).get("created") if hasattr(event, "stripe_data") else None
    if created:
        return int(created)
    return int(event.created.timestamp()) if getattr(event, "created", None) else int(time.time())


def from_timestamp(value: int) -> datetime:
    return datetime.fromtimestamp(int(value), tz=UTC)
