"""
Stripe webhooks that close a billing period: report its usage before Stripe invoices it.

dj-stripe verifies the signature, records each delivery and calls these handlers inside
the event's database transaction, so they only work out which periods closed and queue
the reporting with django-q2 once that transaction has committed. Replaying an event
reports nothing twice: the ledger already holds what was sent.
"""

import logging
from datetime import UTC, datetime

from django.db import transaction
from django_q.tasks import async_task
from djstripe.event_handlers import djstripe_receiver

logger = logging.getLogger(__name__)

# Draft invoices that bill a period of metered usage.
PERIOD_INVOICE_REASONS = {"subscription_cycle", "subscription_update", "subscription_cancel"}


@djstripe_receiver("customer.subscription.updated")
def report_period_closed_by_renewal(sender, event, **kwargs):
    closed = periods_closed_by_subscription_update(event.data)
    if closed:
        enqueue_closed_period_report(closed, event_id=event.id)


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
    if invoice.get("status") != "draft" or invoice.get("billing_reason") not in PERIOD_INVOICE_REASONS:
        return []
    closed = []
    for line in (invoice.get("lines") or {}).get("data", []):
        item_id = _line_subscription_item(line)
        period = line.get("period") or {}
        if item_id and period.get("end", 0) > period.get("start", 0):
            closed.append((item_id, period["start"], period["end"]))
    return closed


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


def from_timestamp(value: int) -> datetime:
    return datetime.fromtimestamp(int(value), tz=UTC)
