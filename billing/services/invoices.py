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
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import stripe
from django.db.models import F
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
        starts.add((_time(start), _time(end)))
    if starts:
        account_rows(UsageReport.objects.filter(
            customer_id=customer_id, billing_start__gte=min(start for start, _end in starts),
            billing_start__lt=max(end for _start, end in starts),
        ).only("meter_id", "customer_id", "billing_start"))
    return new


def account_unbilled(keys) -> None:
    """
    For each ledger period (meter, customer, billing start) whose invoice is final:
    the units Stripe's meter took beyond what the invoice billed are carried on
    (ledger.account_unbilled). Called when an invoice is recorded final and whenever a
    row of a period changes what Stripe's meter holds (sent, decided, rejected).
    """
    billed = invoiced_units_by_period(set(keys))
    for key in sorted(billed, key=ledger.lock_order):
        ledger.account_unbilled(key, billed[key])


def account_rows(rows) -> None:
    """account_unbilled for the periods of these ledger rows."""
    account_unbilled({ledger.key_of(row) for row in rows})


def invoiced_units_by_period(keys) -> dict[tuple, Decimal]:
    """
    What finalized invoices billed for each ledger period that has one: the quantity of
    the lines of the period's own subscription items whose period holds its start and
    that bill usage in arrears (their period ended by the invoice's finalization; an
    item billed in advance is never the ledger's).
    """
    if not keys:
        return {}
    starts = [start for _m, _c, start in keys]
    # The lines first (few: only ended periods have them; by customer and period end,
    # an index): most runs' periods are current ones, and then nothing more is read.
    lines = list(FinalizedInvoiceLine.objects.filter(
        customer_id__any_of={customer for _m, customer, _s in keys}, period_end__gt=min(starts),
        period_start__lte=max(starts), quantity__isnull=False, period_end__lte=F("finalized_at"),
    ).values_list("subscription_item_id", "period_start", "period_end", "quantity"))
    if not lines:
        return {}
    periods_of_item = defaultdict(set)
    rows = UsageReport.objects.filter(
        customer_id__any_of={customer for _m, customer, _s in keys}, billing_start__any_of=set(starts),
        subscription_item_id__any_of={item_id for item_id, *_ in lines},
    ).values_list("meter_id", "customer_id", "billing_start", "subscription_item_id").distinct()
    for meter_id, customer_id, billing_start, item_id in rows:
        if (meter_id, customer_id, billing_start) in keys:
            periods_of_item[item_id].add((meter_id, customer_id, billing_start))
    billed: dict[tuple, Decimal] = {}
    for item_id, start, end, quantity in lines:
        for key in periods_of_item.get(item_id, ()):
            if start <= key[2] < end:
                billed[key] = billed.get(key, Decimal(0)) + quantity
    return billed


def invoiced_units(key: tuple) -> Decimal | None:
    """What the finalized invoice of one ledger period billed, if the app knows it."""
    return invoiced_units_by_period({key}).get(key)


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
    """
    (subscription item, period end) of every finalized item period of these customers
    billed in arrears (as invoiced_units_by_period: a line finalized before its period
    ended bills it in advance and says nothing of its usage).
    """
    return set(
        FinalizedInvoiceLine.objects.filter(customer_id__any_of=customer_ids, period_end__lte=F("finalized_at"))
        .values_list("subscription_item_id", "period_end")
    )


def _time(value) -> datetime:
    return datetime.fromtimestamp(int(value), UTC)
