"""
Invoices: which billing periods Stripe has finalized, so nothing is "sent" into them.

At a period's end Stripe drafts the invoice and finalizes it after a grace period (an
hour by default, up to 72 hours); usage of the period reported during the grace period
is billed on it. After finalization the invoice never changes. The ledger keeps sending
a closed period's late usage while its invoice is a draft, and carries what comes after
to the customer's next period. Finalization is learnt from `invoice.finalized` webhooks
and, for runs that did not get them, from Stripe's invoice list.
"""

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import stripe
from django.utils import timezone

from .. import webhooks
from ..models import FinalizedInvoiceLine, UsageReport
from . import ledger

logger = logging.getLogger(__name__)

# Stripe's longest grace period: a closed period's late usage is looked at this long.
MAX_GRACE = timedelta(hours=72)


def record_finalized(invoice) -> int:
    """
    Record the item periods of a finalized invoice, and account for what the ledger sent
    into them beyond what the invoice billed; how many periods were new.
    """
    if invoice.get("status") in (None, "draft"):
        return 0
    finalized = (invoice.get("status_transitions") or {}).get("finalized_at") or invoice.get("created")
    customer_id = invoice.get("customer") or ""
    new, starts = 0, set()
    for item_id, start, end, quantity in webhooks.lines_billed_by_invoice(invoice):
        _line, created = FinalizedInvoiceLine.objects.get_or_create(
            invoice_id=invoice["id"], subscription_item_id=item_id, period_start=_time(start),
            defaults={"customer_id": customer_id, "period_end": _time(end),
                      "quantity": None if quantity is None else Decimal(str(quantity)),
                      "finalized_at": _time(finalized) if finalized else timezone.now()},
        )
        new += created
        starts.add(_time(start))
    keys = UsageReport.objects.filter(customer_id=customer_id, billing_start__in=starts).values_list(
        "meter_id", "customer_id", "billing_start"
    )
    account_unbilled(set(keys))
    return new


def account_unbilled(keys) -> None:
    """
    For each ledger period (meter, customer, billing start) whose invoice is final:
    the units Stripe's meter took beyond what the invoice billed are carried on
    (ledger.account_unbilled). Called when an invoice is recorded final and when a
    closing report settles, whichever comes last.
    """
    keys = set(keys)
    if not keys:
        return
    billed = invoiced_units_of({customer for _m, customer, _s in keys}, {start for _m, _c, start in keys})
    for key in sorted(keys):
        _meter_id, customer_id, billing_start = key
        if (customer_id, billing_start) in billed:
            ledger.account_unbilled(key, billed[(customer_id, billing_start)])


def invoiced_units_of(customer_ids, starts) -> dict[tuple[str, datetime], Decimal]:
    """The metered quantity finalized invoices billed, by (customer, item period start)."""
    billed: dict[tuple[str, datetime], Decimal] = {}
    lines = FinalizedInvoiceLine.objects.filter(
        customer_id__in=customer_ids, period_start__in=starts, quantity__isnull=False
    ).values_list("customer_id", "period_start", "quantity")
    for customer_id, start, quantity in lines:
        billed[(customer_id, start)] = billed.get((customer_id, start), Decimal(0)) + quantity
    return billed


def invoiced_units(customer_id: str, billing_start: datetime) -> Decimal | None:
    """What the period's finalized invoice billed, if the app knows it."""
    return invoiced_units_of([customer_id], [billing_start]).get((customer_id, billing_start))


def refresh_finalized(client, customer_ids, *, since: datetime) -> None:
    """Read the recent invoices of these customers from Stripe (runs without webhooks)."""
    for customer_id in sorted(customer_ids):
        try:
            page = client.v1.invoices.list({"customer": customer_id, "created": {"gte": int(since.timestamp())}, "limit": 100})
            for invoice in page.auto_paging_iter():
                record_finalized(invoice)
        except stripe.StripeError as exc:
            logger.warning("could not read the invoices of %s: %s", customer_id, exc)


def finalized_ends(customer_ids) -> set[tuple[str, datetime]]:
    """(subscription item, period end) of every finalized item period of these customers."""
    return set(
        FinalizedInvoiceLine.objects.filter(customer_id__in=customer_ids).values_list("subscription_item_id", "period_end")
    )


def _time(value) -> datetime:
    return datetime.fromtimestamp(int(value), UTC)
