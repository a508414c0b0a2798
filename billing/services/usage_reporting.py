"""
Report metered usage to Stripe exactly once.

Stripe no longer has `action=set`, so the guarantee is ours. For each metered
subscription item and window-aligned billing period, a run:

1. reads the period-to-date total from the usage source (one batched query per meter);
2. in one transaction, compares it with what the ledger says was sent and writes a
   `pending` UsageReport for the difference, numbered by `sequence` (the database
   refuses a second row with that number, or a second row in flight);
3. sends the difference as one meter event whose `identifier` (and Idempotency-Key)
   is derived from the row, so a retry within Stripe's 24-hour dedupe window cannot
   count twice;
4. marks the row `sent`, or `failed` when Stripe refused it for certain.

A run that dies between 2 and 4 leaves a `pending` row; the next run resends that very
event (same identifier) instead of computing a new one. Outcomes that are not certain
(timeouts, 5xx, 429 after retries) also stay `pending` and are resent the same way.
"""

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from hashlib import sha256

import stripe
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from .. import selectors, stripe_api
from ..models import UsageReport
from ..selectors import ReportTarget
from ..usage_sources import UsageRequest, UsageSourceError, get_usage_source
from . import stripe_sync
from .meter_event_sender import MeterEventCall, MeterEventSender, MeterEventStreamSender
from .periods import timestamp_rejection

logger = logging.getLogger(__name__)

Status = UsageReport.Status
# Outcomes that leave no row of their own.
DRY_RUN = "dry-run"
IN_FLIGHT = "in-flight"
STRIPE_DEDUPE_WINDOW = timedelta(hours=24)
# Resend a pending event only well inside Stripe's dedupe window.
SAFE_RESEND_AGE = STRIPE_DEDUPE_WINDOW - timedelta(hours=1)
IDENTIFIER_MAX_LENGTH = 100


@dataclass
class ReportOutcome:
    """What one run did for one item and period; printed one line each."""

    target: ReportTarget
    usage_until: datetime
    usage_total: Decimal | None
    value: Decimal
    status: str
    error: str = ""
    report: UsageReport | None = None

    def settled(self) -> "ReportOutcome":
        """This outcome with its row's final status, once the row was sent."""
        if self.report is None or self.status not in (Status.PENDING,):
            return self
        report = self.report
        return ReportOutcome(self.target, self.usage_until, self.usage_total, report.value_sent, report.status, report.error, report)

    def line(self) -> str:
        total = "unknown" if self.usage_total is None else f"{self.usage_total:.6f}"
        text = (
            f"stripe_customer: {self.target.customer_id}, stripe_price: {self.target.price_id}, "
            f"meter: {self.target.meter.source_meter_slug}, total_usage: {total}, "
            f"from: {_go_time(self.target.period.start)}, to: {_go_time(self.usage_until)}, "
            f"value: {self.value.to_integral_value():+}, status: {self.status}"
        )
        return f"{text}, error: {self.error}" if self.error else text


@dataclass
class RunResult:
    outcomes: list[ReportOutcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for outcome in self.outcomes if outcome.status == status)

    @property
    def failed(self) -> list[ReportOutcome]:
        """Refused by Stripe or the source, or sent with an outcome still unknown."""
        return [o for o in self.outcomes if o.status in (Status.FAILED, Status.PENDING)]

    def summary(self) -> str:
        counts = defaultdict(int)
        for outcome in self.outcomes:
            counts[outcome.status] += 1
        parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing to report"
        units = sum((o.value for o in self.outcomes if o.status == Status.SENT), Decimal(0))
        return f"{len(self.outcomes)} report(s): {parts}; {units.to_integral_value():+} unit(s) sent to Stripe."


@dataclass
class RunClock:
    """
    "Now" for each customer during one run: its Stripe test clock's time when it lives
    on one (Stripe bills and checks its meter events by that time), else this machine's.
    An explicit as-of time (back-fills, closed periods) replaces "now" for the usage span.
    """

    real_now: datetime
    fixed_as_of: datetime | None = None
    test_clocks: dict[str, datetime] = field(default_factory=dict)

    @classmethod
    def for_targets(cls, targets, client, *, as_of=None) -> "RunClock":
        times = {}
        for clock_id in sorted({t.test_clock for t in targets if t.test_clock}):
            if client is None:  # a dry run asks Stripe nothing
                continue
            try:
                frozen = client.v1.test_helpers.test_clocks.retrieve(clock_id).frozen_time
            except stripe.StripeError as exc:
                logger.warning("could not read test clock %s: %s", clock_id, exc)
                continue
            times[clock_id] = datetime.fromtimestamp(frozen, UTC)
        return cls(timezone.now(), as_of, times)

    def now(self, target: ReportTarget) -> datetime:
        return self.test_clocks.get(target.test_clock, self.real_now)

    def as_of(self, target: ReportTarget) -> datetime:
        return self.fixed_as_of or self.now(target)


def report_usage(
    *,
    trigger: str,
    as_of: datetime | None = None,
    customer_ids: list[str] | None = None,
    subscription_ids: list[str] | None = None,
    dry_run: bool = False,
    source=None,
    client=None,
) -> RunResult:
    """Report every metered subscription item, or those of some customers or subscriptions."""
    source = source or get_usage_source()
    client = client or (None if dry_run else stripe_api.get_client())
    result = RunResult()
    if not dry_run:
        result.outcomes += resend_orphaned_reports(
            client, customer_ids=customer_ids, subscription_ids=subscription_ids
        )

    targets = selectors.current_targets(customer_ids=customer_ids, subscription_ids=subscription_ids)
    clock = RunClock.for_targets(targets, client, as_of=as_of)
    if not dry_run:
        targets += _roll_ended_periods(client, targets, clock)
    targets = _unique(targets + selectors.unfinished_past_targets(targets))
    result.outcomes += report_targets(
        targets, clock=clock, trigger=trigger, source=source, client=client, dry_run=dry_run
    )
    return result


def report_closed_periods(closed, *, trigger: str, source=None, client=None) -> RunResult:
    """
    Report billing periods that have just ended up to their aligned end, given as
    (subscription item id, period start, period end): what a webhook says closed.
    The ledger makes a replayed webhook, or a period already reported, send nothing.
    """
    targets = selectors.closed_period_targets(closed)
    result = RunResult()
    if not targets:
        return result
    client = client or stripe_api.get_client()
    clock = RunClock.for_targets(targets, client, as_of=max(t.period.billing_end for t in targets))
    result.outcomes += report_targets(
        targets, clock=clock, trigger=trigger, source=source or get_usage_source(), client=client
    )
    return result


def report_targets(targets, *, clock, trigger, source, client, dry_run=False) -> list[ReportOutcome]:
    """
    Report each target up to the last whole window before its as-of time: write every
    ledger row first, then send the pending ones together, at the rate Stripe allows.
    """
    totals, source_errors = _fetch_totals(source, targets, clock)
    outcomes = []
    # One commit for all the rows (each target in its own savepoint): committed before
    # anything is sent, as crash safety needs, without a disk sync per row.
    with transaction.atomic():
        for target in sorted(targets, key=_lock_order):
            usage_until = target.period.usage_until(clock.as_of(target))
            if usage_until <= target.period.start:
                continue  # no whole window of this period has passed yet
            error = target.subject_error or source_errors.get(target.meter.id)
            total = None if error else totals.get((target.meter.id, _request_for(target, usage_until)))
            outcomes.append(
                prepare_report(
                    target, usage_until, total, error=error, trigger=trigger, now=clock.now(target), dry_run=dry_run
                )
            )
    send_reports([o.report for o in outcomes if o.report and o.report.status == Status.PENDING], client)
    return [o.settled() for o in outcomes]


def prepare_report(target, usage_until, total, *, error, trigger, now, dry_run=False) -> ReportOutcome:
    """Record what one item owes for one period up to `usage_until`; send nothing yet."""
    if not error:
        error = _invalid_total(total)
    if error:  # the total is unknown or unusable; the error says which
        return _record_without_sending(target, usage_until, None, Status.FAILED, error, trigger, dry_run)

    reportable = total.to_integral_value(rounding=ROUND_DOWN)  # Stripe takes whole units
    if dry_run:
        value = reportable - selectors.sent_total(target)
        return ReportOutcome(target, usage_until, total, value, DRY_RUN if value else Status.SKIPPED)
    try:
        report = _claim(target, usage_until, total, reportable, trigger, now)
    except IntegrityError:  # a concurrent run wrote this period's next row first
        report = None
    if report is None:
        return ReportOutcome(
            target, usage_until, total, Decimal(0), IN_FLIGHT,
            "another report of this period is in flight; it will be settled first",
        )
    return ReportOutcome(target, usage_until, total, report.value_sent, report.status, report.error, report)


def _claim(target, usage_until, total, reportable, trigger, now):
    """
    Write the period's next ledger row in one transaction: a pending row to send, a
    skipped row when nothing is new, or None when a report of this period is pending.
    """
    with transaction.atomic():
        rows = list(selectors.ledger_rows(target).select_for_update().order_by("sequence"))
        if any(row.status == Status.PENDING for row in rows):
            return None
        sent = sum((row.value_sent for row in rows if row.counts_toward_total), Decimal(0))
        value = reportable - sent
        last = rows[-1] if rows else None
        if value == 0:
            return _skip(target, usage_until, total, last, trigger)
        timestamp = target.period.event_timestamp(usage_until)
        rejection = timestamp_rejection(timestamp, now)
        status = Status.FAILED if rejection else Status.PENDING
        report = new_report_row(target, usage_until, total, value, status, trigger, next_sequence=_next(last))
        report.event_timestamp = timestamp
        report.error = rejection or ""
        report.save()
        return report


def _skip(target, usage_until, total, last, trigger) -> UsageReport:
    """Nothing new: say so once, and keep that one row up to date on later runs."""
    if last and last.status == Status.SKIPPED:
        last.usage_until, last.usage_total, last.trigger = usage_until, total, trigger
        last.save(update_fields=["usage_until", "usage_total", "trigger", "updated"])
        return last
    report = new_report_row(target, usage_until, total, Decimal(0), Status.SKIPPED, trigger, _next(last))
    report.save()
    return report


def _record_without_sending(target, usage_until, total, status, error, trigger, dry_run) -> ReportOutcome:
    """A report that cannot be made (no subject, source down, bad total): leave a row."""
    if dry_run:
        return ReportOutcome(target, usage_until, total, Decimal(0), status, error)
    with transaction.atomic():
        last = selectors.ledger_rows(target).select_for_update().order_by("sequence").last()
        if last and last.status == status and last.error == error:
            last.usage_until, last.usage_total, last.trigger = usage_until, total, trigger
            last.attempts += 1
            last.save(update_fields=["usage_until", "usage_total", "trigger", "attempts", "updated"])
            report = last
        else:
            report = new_report_row(target, usage_until, total, Decimal(0), status, trigger, _next(last))
            report.error, report.attempts = error, 1
            report.save()
    return ReportOutcome(target, usage_until, total, Decimal(0), status, error, report)


def new_report_row(target, usage_until, total, value, status, trigger, next_sequence) -> UsageReport:
    return UsageReport(
        customer_id=target.customer_id,
        subscription_id=target.subscription_id,
        subscription_item_id=target.subscription_item_id,
        price_id=target.price_id,
        meter=target.meter,
        livemode=target.livemode,
        source_meter_slug=target.meter.source_meter_slug,
        window_size=target.period.window_size,
        period_start=target.period.start,
        period_end=target.period.end,
        usage_until=usage_until,
        sequence=next_sequence,
        usage_total=total,
        value_sent=value,
        identifier=meter_event_identifier(target, next_sequence),
        status=status,
        trigger=trigger,
    )


def _next(last: UsageReport | None) -> int:
    return last.sequence + 1 if last else 1


def meter_event_identifier(target: ReportTarget, sequence: int) -> str:
    """Deterministic per (item, meter, period, sequence); at most Stripe's 100 characters."""
    readable = (
        f"{target.subscription_item_id}:{target.meter.id}:"
        f"{target.period.start:%Y%m%dT%H%MZ}:{sequence}"
    )
    if len(readable) <= IDENTIFIER_MAX_LENGTH:
        return readable
    digest = sha256(readable.encode()).hexdigest()[:40]
    return f"eps:{digest}:{sequence}"


def send_reports(reports: list[UsageReport], client) -> None:
    """Send pending rows' meter events and record what Stripe said on each row."""
    if not reports:
        return
    # No lease refresh here: each row was written or claimed (updated = now) just before.
    results = _sender(client, len(reports)).send_all([_meter_event_call(r) for r in reports])
    with transaction.atomic():
        for report in sorted(reports, key=_lock_order):
            result = results[report.pk]
            _settle(report, result.status, result.error, result.attempts)


def send_report(report: UsageReport, client) -> None:
    send_reports([report], client)


def _meter_event_call(report: UsageReport) -> MeterEventCall:
    meter = report.meter
    return MeterEventCall(
        report_id=report.pk,
        key=(report.customer_id, meter.id),
        params={
            "event_name": meter.event_name,
            "payload": {
                meter.customer_payload_key: report.customer_id,
                meter.value_payload_key: str(int(report.value_sent)),
            },
            "identifier": report.identifier,
            "timestamp": int(report.event_timestamp.timestamp()),
        },
        identifier=report.identifier,
        attempts_before=report.attempts,
    )


def _sender(client, event_count: int):
    """v1 for everyday runs; Stripe's v2 stream for runs too large for v1's call rate."""
    config = settings.EPSILON
    options = {
        "workers": config["STRIPE_SEND_CONCURRENCY"],
        "max_attempts": config["STRIPE_MAX_ATTEMPTS"],
        "backoff_initial": config["STRIPE_BACKOFF_SECONDS"],
    }
    api = config["STRIPE_METER_EVENT_API"]
    if api == "v2" or (api == "auto" and event_count >= config["STRIPE_STREAM_THRESHOLD"]):
        per_second = config["STRIPE_STREAM_EVENTS_PER_SECOND"] or (10_000 if settings.STRIPE_LIVE_MODE else 25)
        return MeterEventStreamSender(
            client, stream_client_for=stripe_api.get_stream_client, per_second=per_second, **options
        )
    per_second = config["STRIPE_METER_EVENTS_PER_SECOND"] or (1000 if settings.STRIPE_LIVE_MODE else 25)
    return MeterEventSender(client, per_second=per_second, **options)


def _settle(report: UsageReport, status: str, error: str, attempts: int) -> None:
    now = timezone.now()
    fields = {"status": status, "error": error, "updated": now, "attempts": F("attempts") + attempts}
    if status == Status.SENT:
        fields["sent_at"] = now
    # Only a pending row settles: a concurrent resend may have settled it already.
    UsageReport.objects.filter(pk=report.pk, status=Status.PENDING).update(**fields)
    report.refresh_from_db()
    logger.info("usage report %s: %s %s", report.identifier, report.status, report.error)


def resend_orphaned_reports(client, *, customer_ids=None, subscription_ids=None) -> list[ReportOutcome]:
    """
    Pending rows whose run died (or whose outcome was uncertain) are sent again with
    the same identifier, which Stripe deduplicates within 24 hours. Each is claimed by
    a conditional update, so concurrent runs never resend the same row together.
    """
    now = timezone.now()
    lease = timedelta(seconds=settings.EPSILON["PENDING_LEASE_SECONDS"])
    orphans = UsageReport.objects.filter(status=Status.PENDING, updated__lt=now - lease)
    if customer_ids is not None:
        orphans = orphans.filter(customer_id__in=customer_ids)
    if subscription_ids is not None:
        orphans = orphans.filter(subscription_id__in=subscription_ids)
    claimed = []
    for report in orphans.select_related("meter"):
        if UsageReport.objects.filter(pk=report.pk, status=Status.PENDING, updated=report.updated).update(updated=now):
            claimed.append(report)
    too_old = [r for r in claimed if now - r.created > SAFE_RESEND_AGE]
    for report in too_old:
        _settle_uncertain_beyond_dedupe(report)
    send_reports([r for r in claimed if r not in too_old], client)
    return [_outcome_of(report) for report in claimed]


def _settle_uncertain_beyond_dedupe(report: UsageReport) -> None:
    # Resending now could count twice and dropping it could lose usage: keep it
    # pending, blocking its period, until someone checks Stripe's meter summaries.
    message = (
        "outcome unknown and older than Stripe's 24-hour dedupe window: not resent. "
        "Check the customer's meter event summary in Stripe, then mark this row sent or failed."
    )
    UsageReport.objects.filter(pk=report.pk).update(error=message)
    report.error = message


def _outcome_of(report: UsageReport) -> ReportOutcome:
    target = selectors.target_of_report(report)
    return ReportOutcome(
        target, report.usage_until, report.usage_total, report.value_sent, report.status, report.error, report
    )


def _roll_ended_periods(client, targets, clock) -> list[ReportTarget]:
    """
    An item whose mirrored period has ended is reported up to that period's end (it is
    in `targets` already) and its subscription is refreshed from Stripe, so its new
    period is reported too even if the webhook saying so has not arrived.
    """
    ended = {t.subscription_id for t in targets if t.period.billing_end <= clock.as_of(t)}
    rolled = []
    for subscription_id in sorted(ended):
        try:
            stripe_sync.sync_subscription(client.v1.subscriptions.retrieve(subscription_id))
        except stripe.StripeError as exc:
            logger.warning("could not refresh subscription %s: %s", subscription_id, exc)
            continue
        rolled += [
            t for t in selectors.current_targets(subscription_ids=[subscription_id])
            if t.period.billing_end > clock.as_of(t)
        ]
    return rolled


def _lock_order(row) -> tuple:
    """
    Every transaction locks ledger rows in this order (targets and rows alike), so
    concurrent runs wait for each other instead of deadlocking.
    """
    meter_id = row.meter.id
    period_start = row.period.start if isinstance(row, ReportTarget) else row.period_start
    return (row.subscription_item_id, meter_id, period_start)


def _unique(targets: list[ReportTarget]) -> list[ReportTarget]:
    seen, unique = set(), []
    for target in targets:
        key = (target.subscription_item_id, target.meter.id, target.period.start)
        if key not in seen:
            seen.add(key)
            unique.append(target)
    return unique


def _request_for(target: ReportTarget, usage_until: datetime) -> UsageRequest:
    return UsageRequest(subject=target.subject, start=target.period.start, end=usage_until)


def _fetch_totals(source, targets, clock):
    """One batched source query per meter; a failing meter fails only its own items."""
    by_meter = defaultdict(list)
    for target in targets:
        usage_until = target.period.usage_until(clock.as_of(target))
        if target.subject and usage_until > target.period.start:
            by_meter[target.meter].append(_request_for(target, usage_until))
    totals, errors = {}, {}  # totals by (meter id, request): meters share subjects and periods
    for meter, requests in by_meter.items():
        try:
            answers = source.totals(meter.source_meter_slug, meter.window_size, list(set(requests)))
            totals.update({(meter.id, request): total for request, total in answers.items()})
        except UsageSourceError as exc:
            errors[meter.id] = f"usage source {source.name}: {exc}"
    return totals, errors


def _invalid_total(total) -> str | None:
    if total is None:
        return "the usage source returned no total"
    if not isinstance(total, Decimal) or not total.is_finite():
        return f"the usage source returned {total!r}, not a number"
    if total < 0:
        return f"the usage source returned a negative total ({total})"
    return None


def _go_time(moment: datetime) -> str:
    """The original example's time format (Go's default), in UTC."""
    return moment.strftime("%Y-%m-%d %H:%M:%S +0000 UTC")
