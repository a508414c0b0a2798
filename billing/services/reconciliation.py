"""
Compare, per customer, meter and period, the usage source, the ledger and Stripe.

Stripe's meter event summaries are eventually consistent and its read allocation is
limited, so only periods whose last report settled a while ago are checked, with one
summary request each. Drift (Stripe minus the ledger) can be corrected with a
compensating meter event, sent through the same ledger-first path as every report.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import stripe
from django.db.models import Max, Min, Q, Sum
from django.utils import timezone
from djstripe.models import Customer

from .. import stripe_api
from ..models import FinalizedInvoiceLine, Meter, PeriodReconciliation, UsageReport
from ..units import whole_units
from ..usage_sources import UsageRequest, get_usage_source
from . import invoices, ledger, targets
from .periods import STRIPE_TIMESTAMP_MAX_AGE
from .send import send_reports
from .totals import totals_by_meter

Status = PeriodReconciliation.Status
# Stripe's summaries lag behind the meter events they count.
DEFAULT_SETTLE_DELAY = timedelta(minutes=30)


@dataclass(frozen=True)
class LedgerPeriod:
    customer_id: str
    meter: Meter
    period_start: object
    period_end: object
    usage_until: object
    ledger_units: Decimal
    billing_start: object = None
    # The source's total the ledger last counted for the period (sent, skipped or carried).
    counted_total: Decimal | None = None
    # Units the ledger sent that Stripe took after the invoice was final, carried on.
    unbilled: Decimal = Decimal(0)


def reconcile(
    *, customer_ids=None, correct=False, settle_delay=DEFAULT_SETTLE_DELAY, source=None, client=None
) -> list[PeriodReconciliation]:
    now = timezone.now()
    client = client or stripe_api.get_client()
    periods = ledger_periods(customer_ids=customer_ids, settled_before=now - settle_delay, since=now - STRIPE_TIMESTAMP_MAX_AGE)
    source_totals, source_errors = _source_totals(source or get_usage_source(), periods)
    results = []
    for period in periods:
        result = _check(period, client, source_totals.get(period), source_errors.get(period.meter.id))
        if correct and result.status == Status.DRIFT:
            _correct(result, period, client)
        elif correct and result.status == Status.UNREPORTED and _past_its_invoice(period, client):
            _carry_unreported(result, period)
        results.append(result)
    return results


def ledger_periods(*, customer_ids=None, settled_before, since) -> list[LedgerPeriod]:
    """Periods the ledger has sent usage for, with no report in flight or just sent."""
    rows = UsageReport.objects.filter(period_end__gt=since)
    if customer_ids is not None:
        rows = rows.filter(customer_id__in=customer_ids)
    grouped = (
        rows.values("customer_id", "meter_id", "billing_start")
        .annotate(
            first_start=Min("period_start"),
            first_end=Min("period_end"),
            ledger_units=Sum("value_sent", filter=UsageReport.COUNTS_TOWARD_TOTAL, default=Decimal(0)),
            usage_until=Max("usage_until"),
            last_change=Max("updated"),
            in_flight=Max("id", filter=Q(status=UsageReport.Status.PENDING)),
            unbilled=Sum("unbilled", filter=Q(status=UsageReport.Status.SENT), default=Decimal(0)),
        )
        .filter(last_change__lt=settled_before, in_flight__isnull=True)
        .order_by("customer_id", "meter_id", "period_start")
    )
    meters = {m.id: m for m in Meter.objects.all()}
    grouped = list(grouped)
    counted = _counted_totals(grouped)
    return [
        LedgerPeriod(
            row["customer_id"], meters[row["meter_id"]], row["first_start"], row["first_end"],
            row["usage_until"], row["ledger_units"], row["billing_start"],
            counted.get((row["customer_id"], row["meter_id"], row["billing_start"])), row["unbilled"],
        )
        for row in grouped
    ]


def _counted_totals(grouped) -> dict[tuple, Decimal]:
    """
    The usage total of each period's latest report that recorded the source's total
    (sent, skipped, carried, or late: recorded only, by the operator's setting).
    """
    latest = {}
    rows = (
        UsageReport.objects.filter(
            status__in=(*ledger.SETTLED_COUNTED, UsageReport.Status.LATE), customer_id__in={r["customer_id"] for r in grouped},
            billing_start__in={r["billing_start"] for r in grouped}, usage_total__isnull=False,
        )
        .exclude(Q(trigger=UsageReport.Trigger.RECONCILE) & ~Q(status=UsageReport.Status.CARRIED))
        .order_by("sequence")
        .values_list("customer_id", "meter_id", "billing_start", "usage_total")
    )
    for customer_id, meter_id, billing_start, total in rows:
        latest[(customer_id, meter_id, billing_start)] = total
    return latest


def _source_totals(source, periods):
    """One batched source query per meter, as the reporting run makes."""
    subjects = _subjects({p.customer_id for p in periods})
    requests = defaultdict(dict)
    for period in periods:
        if subjects.get(period.customer_id):
            request = UsageRequest(subjects[period.customer_id], period.period_start, period.usage_until)
            requests[period.meter][period] = request
    answers, errors = totals_by_meter(source, {meter: set(by_period.values()) for meter, by_period in requests.items()})
    totals = {
        period: answers.get((meter.id, request))
        for meter, by_period in requests.items() if meter.id not in errors
        for period, request in by_period.items()
    }
    return totals, errors


def _subjects(customer_ids) -> dict[str, str | None]:
    metadata = dict(Customer.objects.filter(id__in=customer_ids).values_list("id", "stripe_data__metadata"))
    subjects = {}
    for customer_id in customer_ids:
        try:
            subjects[customer_id] = targets.subject_for(customer_id, metadata.get(customer_id))
        except targets.SubjectMappingError:
            subjects[customer_id] = None
    return subjects


def _check(period: LedgerPeriod, client, source_total, source_error) -> PeriodReconciliation:
    fields = {
        "livemode": period.meter.livemode,
        "period_end": period.period_end,
        "usage_until": period.usage_until,
        "ledger_units": period.ledger_units,
        "source_total": source_total,
        "correction": None,
    }
    try:
        stripe_units = stripe_summary_total(client, period)
    except stripe.StripeError as exc:
        fields.update(stripe_units=None, drift=None, status=Status.UNKNOWN,
                      error=f"Stripe's meter event summary: {exc.user_message or exc}")
    else:
        drift = stripe_units - period.ledger_units
        status, error = (Status.DRIFT if drift else Status.OK), source_error or ""
        late = unreported_late_usage(period, source_total)
        if status == Status.OK and late:
            status, error = Status.UNREPORTED, (
                f"the source has {late.normalize():+f} usage for this finished period that no report counted "
                "(it arrived after the period was reported): report_usage sends it while Stripe's invoice "
                "is a draft and carries it to the customer's next period after that"
            )
        billed = invoices.invoiced_units((period.meter.id, period.customer_id, period.billing_start)) if period.billing_start else None
        on_invoice = period.ledger_units - period.unbilled  # what the ledger holds billed by the invoice
        if status == Status.OK and billed is not None and billed != max(on_invoice, Decimal(0)):
            status, error = Status.INVOICE, (
                f"Stripe's finalized invoice billed {billed.normalize():f} unit(s) for this period, the ledger "
                f"sent {period.ledger_units.normalize():f} and carried {period.unbilled.normalize():f} on: the "
                "difference reached Stripe's meter after the invoice was final and is on no invoice"
            )
        if status == Status.OK and period.unbilled and not _later_period_reported(period):
            status, error = Status.INVOICE, (
                f"{period.unbilled.normalize():f} unit(s) that Stripe took after this period's invoice was final "
                "are carried on, and no later period of the customer has been reported to bill them yet "
                "(a customer with no later period, such as a cancelled one, must be billed for them by hand)"
            )
        fields.update(stripe_units=stripe_units, drift=drift, status=status, error=error)
    result, _ = PeriodReconciliation.objects.update_or_create(
        customer_id=period.customer_id, meter=period.meter, period_start=period.period_start, defaults=fields
    )
    return result


def _later_period_reported(period: LedgerPeriod) -> bool:
    """Whether a later period of the customer on the meter has a report that counts (it takes the carry)."""
    return UsageReport.objects.filter(
        ledger.COUNTED, customer_id=period.customer_id, meter=period.meter, billing_start__gt=period.billing_start
    ).exists()


def unreported_late_usage(period: LedgerPeriod, source_total) -> Decimal | None:
    """Usage the source has for a period reported up to its end, beyond what was counted."""
    if source_total is None or period.counted_total is None or period.usage_until < period.period_end:
        return None
    return (source_total - period.counted_total) or None


def stripe_summary_total(client, period: LedgerPeriod) -> Decimal:
    """Stripe's total of the customer's events stamped inside the aligned period."""
    return stripe_units_between(client, period.meter, period.customer_id, period.period_start, period.period_end)


def stripe_units_between(client, meter, customer_id: str, start, end) -> Decimal:
    """
    Stripe's total of a customer's events stamped in [start, end), up to the customer's
    now: its test clock's time when it lives on one (Stripe stamps and sums its events
    by that time), else this machine's.
    """
    end = min(end, _next_minute(customer_now(client, customer_id)))
    summaries = client.v1.billing.meters.event_summaries.list(
        meter.id,
        {"customer": customer_id, "start_time": int(start.timestamp()), "end_time": int(end.timestamp()), "limit": 100},
    )
    return sum((Decimal(str(s.aggregated_value)) for s in summaries.auto_paging_iter()), Decimal(0))


def customer_now(client, customer_id: str):
    clock_id = Customer.objects.filter(id=customer_id).values_list("stripe_data__test_clock", flat=True).first()
    if clock_id:
        try:
            return datetime.fromtimestamp(client.v1.test_helpers.test_clocks.retrieve(clock_id).frozen_time, UTC)
        except stripe.StripeError:
            pass
    return timezone.now()


def _next_minute(moment):
    return moment.replace(second=0, microsecond=0) + timedelta(minutes=1)


def _past_its_invoice(period: LedgerPeriod, client) -> bool:
    """Whether Stripe's invoice of the period can no longer take late usage (asks Stripe if unknown)."""
    lines = FinalizedInvoiceLine.objects.filter(
        customer_id=period.customer_id, period_end__gte=period.period_end, period_start__lte=period.period_start
    )
    if period.period_end < customer_now(client, period.customer_id) - invoices.MAX_GRACE or lines.exists():
        return True
    invoices.refresh_finalized(client, [period.customer_id], since=period.period_end - timedelta(hours=1))
    return lines.exists()


def _carry_unreported(result: PeriodReconciliation, period: LedgerPeriod) -> None:
    """Count the unreported usage in the ledger, billed with the customer's next period."""
    anchor = (
        UsageReport.objects.filter(customer_id=period.customer_id, meter=period.meter, billing_start=period.billing_start)
        .select_related("meter").order_by("-sequence").first()
    )
    try:
        carried = ledger.carry_unreported(anchor, result.source_total)
    except ledger.InFlight:
        return
    if carried is not None:
        result.correction, result.status = carried, Status.CORRECTED
        result.error = carried.error
        result.save(update_fields=["correction", "status", "error", "checked_at"])


def _correct(result: PeriodReconciliation, period: LedgerPeriod, client) -> None:
    """Send the compensating event: Stripe minus drift equals what the ledger sent."""
    anchor = (
        UsageReport.objects.filter(UsageReport.COUNTS_TOWARD_TOTAL, customer_id=period.customer_id,
                                   meter=period.meter, period_start=period.period_start)
        .select_related("meter").order_by("-sequence").first()
    )
    if anchor is None:
        return
    try:
        correction = ledger.correction(anchor, -whole_units(result.drift))
    except ledger.InFlight:
        return
    send_reports([correction], client)
    result.correction = correction
    if correction.status == UsageReport.Status.SENT:
        result.status = Status.CORRECTED
    else:
        result.error = f"the correction was not sent: {correction.error}"
    result.save(update_fields=["correction", "status", "error", "checked_at"])
