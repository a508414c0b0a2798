"""
What Stripe itself holds, for the admin's pages: its meter event summary of a
customer's period ("At Stripe"), its preview of the upcoming invoice, and the
customer's invoices with each one's metered quantity against the ledger.

Read-only, and Stripe's own numbers, never the ledger's copy of them: an operator
compares the two. Stripe limits reads (meter event summaries especially), so each
figure is kept in Django's cache for STRIPE_READ_TTL and shown with its age; a page
asks again only when the operator asks for fresh figures. The meter summary is read
by reconciliation's reader (`stripe_units_between`), the one place that knows how
Stripe sums a customer's events on its own clock.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.core.cache import cache
from django.db.models import Q, Sum
from django.utils import timezone
from djstripe.models import Invoice, Price

from .. import stripe_api, webhooks
from ..errors import OPERATOR_ERRORS, operator_message
from ..models import UsageReport
from ..services.reconciliation import stripe_units_between

# How long a figure read from Stripe is shown before it is read again.
STRIPE_READ_TTL = timedelta(minutes=2)
INVOICES_SHOWN = 12


@dataclass
class StripeFigure:
    """Stripe's meter total of one customer's billing period, as read at `fetched_at`."""

    units: Decimal | None
    fetched_at: datetime
    error: str = ""

    def age(self, now=None) -> timedelta:
        return (now or timezone.now()) - self.fetched_at


@dataclass
class PreviewLine:
    description: str
    quantity: Decimal | None
    amount: int
    period_start: datetime | None
    period_end: datetime | None


@dataclass
class InvoicePreview:
    """Stripe's preview of a subscription's upcoming invoice (amounts in cents)."""

    subscription_id: str
    fetched_at: datetime
    lines: list[PreviewLine] = field(default_factory=list)
    subtotal: int = 0
    tax: int = 0
    total: int = 0
    currency: str = ""
    period_end: datetime | None = None
    error: str = ""


@dataclass
class InvoiceRow:
    """One of a customer's invoices: its metered quantity against what the ledger sent for its period."""

    invoice_id: str
    number: str
    status: str
    created: datetime
    total: int
    currency: str
    period_start: datetime | None
    period_end: datetime | None
    invoiced_units: Decimal | None
    ledger_units: Decimal | None
    livemode: bool

    @property
    def difference(self) -> Decimal | None:
        if self.invoiced_units is None or self.ledger_units is None:
            return None
        return self.invoiced_units - self.ledger_units


def _cached(key: str, read, *, refresh: bool):
    """`read()`'s value from the cache, read again when absent, expired or asked for."""
    value = None if refresh else cache.get(key)
    if value is None:
        value = read()
        cache.set(key, value, STRIPE_READ_TTL.total_seconds())
    return value


# --- "At Stripe": the meter event summary of the current period ----------------


def add_stripe_figures(usages, *, refresh: bool = False) -> None:
    """Set `usage.stripe` on each item usage: Stripe's total of its billing period so far."""
    client = None
    for usage in usages:
        target = usage.target
        key = f"epsilon:stripe-units:{target.meter.id}:{target.customer_id}:{target.period.billing_start:%s}"

        def read(target=target):
            nonlocal client
            try:
                client = client or stripe_api.get_client()
                # The aligned period, as reconciliation reads it: minute-exact (Stripe refuses
                # other bounds) and holding every event reported for the period.
                units = stripe_units_between(client, target.meter, target.customer_id, target.period.start, target.period.end)
                return StripeFigure(units, timezone.now())
            except OPERATOR_ERRORS as exc:  # shown on the page, never raised out of it
                return StripeFigure(None, timezone.now(), f"Stripe's meter summary could not be read: {operator_message(exc)}")

        usage.stripe = _cached(key, read, refresh=refresh)


# --- the upcoming invoice -------------------------------------------------------


def invoice_previews(targets, *, refresh: bool = False) -> dict[str, InvoicePreview]:
    """Stripe's preview of the upcoming invoice of each live subscription among these targets."""
    previews, client = {}, None
    for customer_id, subscription_id in sorted({(t.customer_id, t.subscription_id) for t in targets if t.live}):

        def read(customer_id=customer_id, subscription_id=subscription_id):
            nonlocal client
            try:
                client = client or stripe_api.get_client()
                invoice = client.v1.invoices.create_preview(
                    params={"customer": customer_id, "subscription": subscription_id}
                )
                return _preview(subscription_id, invoice)
            except OPERATOR_ERRORS as exc:  # shown on the page, never raised out of it
                return InvoicePreview(subscription_id, timezone.now(), error=f"Stripe's invoice preview: {operator_message(exc)}")

        previews[subscription_id] = _cached(f"epsilon:invoice-preview:{subscription_id}", read, refresh=refresh)
    return previews


def _preview(subscription_id: str, invoice) -> InvoicePreview:
    data = invoice.to_dict() if hasattr(invoice, "to_dict") else dict(invoice)
    lines = [
        PreviewLine(
            description=line.get("description") or "",
            quantity=None if line.get("quantity") is None else Decimal(str(line["quantity"])),
            amount=int(line.get("amount") or 0),
            period_start=_time((line.get("period") or {}).get("start")),
            period_end=_time((line.get("period") or {}).get("end")),
        )
        for line in (data.get("lines") or {}).get("data", [])
    ]
    return InvoicePreview(
        subscription_id=subscription_id,
        fetched_at=timezone.now(),
        lines=lines,
        subtotal=int(data.get("subtotal") or 0),
        tax=invoice_tax(data),
        total=int(data.get("total") or 0),
        currency=(data.get("currency") or "").lower(),
        period_end=_time(data.get("period_end")),
    )


def invoice_tax(data: dict) -> int:
    """An invoice's tax in cents: `total_taxes` in Stripe's current API, `tax` in older ones."""
    taxes = data.get("total_taxes")
    if taxes is not None:
        return sum(int(t.get("amount") or 0) for t in taxes)
    return int(data.get("tax") or 0)


# --- invoice history ------------------------------------------------------------


def invoice_history(customer_id: str, *, limit: int = INVOICES_SHOWN) -> list[InvoiceRow]:
    """
    The customer's invoices as dj-stripe mirrors them, newest first, each with the
    metered quantity it bills (its period lines) and what the ledger sent for that period.
    """
    invoices = list(Invoice.objects.filter(customer__id=customer_id).order_by("-created")[:limit])
    metered_prices = _metered_meter_of_prices(invoices)
    rows = []
    for invoice in invoices:
        data = invoice.stripe_data or {}
        billed = webhooks.lines_billed_by_invoice(data)
        metered = [
            (start, end, quantity) for _item, start, end, quantity in billed
            if _line_price(data, _item) in metered_prices
        ]
        start = _time(min((s for s, _e, _q in metered), default=None))
        end = _time(max((e for _s, e, _q in metered), default=None))
        invoiced = sum((Decimal(str(q)) for _s, _e, q in metered if q is not None), Decimal(0)) if metered else None
        rows.append(InvoiceRow(
            invoice_id=invoice.id,
            number=data.get("number") or "",
            status=data.get("status") or "",
            created=invoice.created,
            total=int(data.get("total") or 0),
            currency=(data.get("currency") or "").lower(),
            period_start=start,
            period_end=end,
            invoiced_units=invoiced,
            ledger_units=_ledger_units(customer_id, start) if start else None,
            livemode=bool(invoice.livemode),
        ))
    return rows


def _metered_meter_of_prices(invoices) -> set[str]:
    """The ids of the metered prices (on a Stripe meter) the invoices' lines bill."""
    price_ids = set()
    for invoice in invoices:
        for line in ((invoice.stripe_data or {}).get("lines") or {}).get("data", []):
            if price_id := _price_of(line):
                price_ids.add(price_id)
    return {
        p.id for p in Price.objects.filter(id__in=price_ids)
        if ((p.stripe_data or {}).get("recurring") or {}).get("meter")
    }


def _line_price(data: dict, item_id: str) -> str | None:
    for line in (data.get("lines") or {}).get("data", []):
        details = (line.get("parent") or {}).get("subscription_item_details") or {}
        if (details.get("subscription_item") or line.get("subscription_item")) == item_id:
            return _price_of(line)
    return None


def _price_of(line: dict) -> str | None:
    pricing = (line.get("pricing") or {}).get("price_details") or {}
    price = pricing.get("price") or line.get("price")
    return price.get("id") if isinstance(price, dict) else price


def _ledger_units(customer_id: str, billing_start: datetime) -> Decimal:
    """What the ledger sent for the customer's period beginning at `billing_start`."""
    return UsageReport.objects.filter(
        Q(customer_id=customer_id, billing_start=billing_start) & UsageReport.COUNTS_TOWARD_TOTAL
    ).aggregate(total=Sum("value_sent", default=Decimal(0)))["total"]


def _time(value) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(int(value), UTC)
