"""
Read-only queries: what there is to report, and what the ledger says was reported.
"""

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal

from django.conf import settings
from django.db.models import F, Max, Sum
from djstripe.models import SubscriptionItem

from .models import Meter, UsageReport
from .services.periods import AlignedPeriod

# Subscriptions whose usage is billed: Stripe keeps invoicing these.
REPORTABLE_SUBSCRIPTION_STATUSES = ("active", "trialing", "past_due")


class SubjectMappingError(Exception):
    """A customer has no usage subject under the configured metadata key."""


@dataclass(frozen=True)
class ReportTarget:
    """One metered subscription item in one billing period: a unit of reporting."""

    customer_id: str
    subscription_id: str
    subscription_item_id: str
    price_id: str
    meter: Meter
    livemode: bool
    subject: str | None
    subject_error: str | None
    period: AlignedPeriod
    # A Stripe test clock the customer lives on: its time is the customer's "now".
    test_clock: str | None = None


def subject_for(customer_id: str, metadata: dict | None) -> str:
    """The usage-source subject of a Stripe customer: its id, or a metadata value."""
    key = settings.EPSILON["SUBJECT_METADATA_KEY"]
    if not key:
        return customer_id
    subject = (metadata or {}).get(key)
    if not subject:
        raise SubjectMappingError(
            f"customer {customer_id} has no usage subject: its metadata has no {key!r} "
            "(set it in Stripe, or unset EPSILON_SUBJECT_METADATA_KEY to use customer ids)"
        )
    return subject


def metered_subscription_items(*, customer_ids=None, subscription_ids=None):
    """Items of billable subscriptions on a metered price whose meter Epsilon knows."""
    meters = Meter.objects.filter(status=Meter.Status.ACTIVE, livemode=settings.STRIPE_LIVE_MODE)
    items = (
        # By the meter's mode: dj-stripe leaves livemode empty on nested items.
        SubscriptionItem.objects.filter(
            subscription__stripe_data__status__in=REPORTABLE_SUBSCRIPTION_STATUSES,
            price__stripe_data__recurring__usage_type="metered",
            price__stripe_data__recurring__meter__in=list(meters.values_list("id", flat=True)),
        )
        .select_related("subscription__customer", "price")
        .order_by("subscription__customer__id", "id")
    )
    if customer_ids is not None:
        items = items.filter(subscription__customer__id__in=customer_ids)
    if subscription_ids is not None:
        items = items.filter(subscription__id__in=subscription_ids)
    return items


def current_targets(*, customer_ids=None, subscription_ids=None) -> list[ReportTarget]:
    """
    Each metered item in its current billing period, as mirrored from Stripe; all of
    them, or those of the given customers or subscriptions.
    """
    meters = {m.id: m for m in Meter.objects.all()}
    targets = []
    items = metered_subscription_items(customer_ids=customer_ids, subscription_ids=subscription_ids)
    for item in items:
        meter = meters[item.price.stripe_data["recurring"]["meter"]]
        period = AlignedPeriod.of(
            _from_timestamp(item.stripe_data["current_period_start"]),
            _from_timestamp(item.stripe_data["current_period_end"]),
            meter.window_size,
        )
        targets.append(_target(item, meter, period))
    return targets


def closed_period_targets(closed) -> list[ReportTarget]:
    """
    Targets for explicit (subscription item id, period start, period end) triples,
    e.g. the period a webhook says has just closed; items not metered are left out.
    """
    periods = {item_id: (start, end) for item_id, start, end in closed}
    meters = {m.id: m for m in Meter.objects.all()}
    targets = []
    for item in metered_subscription_items().filter(id__in=periods):
        meter = meters[item.price.stripe_data["recurring"]["meter"]]
        start, end = periods[item.id]
        targets.append(_target(item, meter, AlignedPeriod.of(start, end, meter.window_size)))
    return targets


def _target(item, meter: Meter, period: AlignedPeriod) -> ReportTarget:
    customer = item.subscription.customer
    try:
        subject, subject_error = subject_for(customer.id, customer.stripe_data.get("metadata")), None
    except SubjectMappingError as exc:
        subject, subject_error = None, str(exc)
    return ReportTarget(
        customer_id=customer.id,
        subscription_id=item.subscription.id,
        subscription_item_id=item.id,
        price_id=item.price.id,
        meter=meter,
        livemode=meter.livemode,
        subject=subject,
        subject_error=subject_error,
        period=period,
        test_clock=customer.stripe_data.get("test_clock"),
    )


def unfinished_past_targets(current: list[ReportTarget]) -> list[ReportTarget]:
    """
    Earlier periods of the same items that the ledger has reported only part of:
    their tail (from the last report up to the period's aligned end) is still owed.
    This is how usage up to a period's end reaches Stripe after the period rolled over.
    """
    by_item = {t.subscription_item_id: t for t in current}
    unfinished = (
        UsageReport.objects.filter(subscription_item_id__in=by_item)
        .exclude(status=UsageReport.Status.PENDING)
        .values("subscription_item_id", "meter_id", "period_start", "period_end", "window_size")
        .annotate(reported_until=Max("usage_until"))
        .filter(reported_until__lt=F("period_end"))
    )
    targets = []
    for row in unfinished:
        current_target = by_item[row["subscription_item_id"]]
        if row["period_end"] > current_target.period.start or row["meter_id"] != current_target.meter.id:
            continue  # not a closed period of this item's current meter
        # The ledger keeps aligned bounds only; the tail's timestamp (end - 1s) is
        # inside Stripe's own period whatever its unaligned bounds were.
        period = AlignedPeriod.of(row["period_start"], row["period_end"], row["window_size"])
        targets.append(replace(current_target, period=period))
    return targets


def target_of_report(report: UsageReport) -> ReportTarget:
    """The target a ledger row was written for (to print or resend it)."""
    return ReportTarget(
        customer_id=report.customer_id,
        subscription_id=report.subscription_id,
        subscription_item_id=report.subscription_item_id,
        price_id=report.price_id,
        meter=report.meter,
        livemode=report.livemode,
        subject=None,
        subject_error=None,
        period=AlignedPeriod.of(report.period_start, report.period_end, report.window_size),
    )


def sent_total(target: ReportTarget) -> Decimal:
    """What this period's reports have sent toward the source's total (not corrections)."""
    return ledger_rows(target).filter(UsageReport.COUNTS_TOWARD_TOTAL).aggregate(
        total=Sum("value_sent")
    )["total"] or Decimal(0)


def ledger_rows(target: ReportTarget):
    return UsageReport.objects.filter(
        subscription_item_id=target.subscription_item_id,
        meter=target.meter,
        period_start=target.period.start,
    )


def _from_timestamp(value: int) -> datetime:
    return datetime.fromtimestamp(int(value), tz=UTC)
