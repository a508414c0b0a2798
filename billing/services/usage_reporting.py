"""
Report metered usage to Stripe exactly once: the reporting run, as a pipeline.

Stripe no longer has `action=set`, so the guarantee is ours. A run:

1. **targets** (targets.py): which (meter, customer) billing periods are owed: each
   customer's one live item per meter in its current period, final periods of ended
   service, unfinished ledger periods; two live items on one meter are a conflict;
2. **totals** (totals.py): the period-to-date total of each, one batched source query
   per meter and window size;
3. **ledger** (ledger.py): in one transaction, a `pending` row per period for what its
   whole units add (with the fraction earlier periods left over), numbered by
   `sequence` (the database refuses a second row with that number, or in flight);
4. **send** (send.py): one meter event per row, whose `identifier` is derived from the
   row, so a retry within Stripe's 24-hour dedupe window cannot count twice;
5. **settle** (ledger.settle): each row `sent`, or `failed` when Stripe refused it for
   certain; uncertain outcomes (timeouts, 5xx, 429 after retries) stay `pending`.

A run that dies between 3 and 5 leaves `pending` rows; the next run resends those very
events (same identifiers) instead of computing new ones.
"""

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import stripe
from django.utils import timezone

from .. import selectors, stripe_api, webhooks
from ..conf import conf
from ..models import OutcomeStatus, UsageReport
from ..usage_sources import get_usage_source
from . import invoices, ledger, stripe_sync, targets as targets_step
from .ledger import InFlight
from . import send
from .send import send_reports
from .targets import ReportTarget
from .totals import fetch_totals, invalid_total

logger = logging.getLogger(__name__)
reports_logger = logging.getLogger("billing.reports")

Status = UsageReport.Status
# Outcomes that leave no row of their own (OutcomeStatus has every outcome).
DRY_RUN = OutcomeStatus.DRY_RUN
IN_FLIGHT = OutcomeStatus.IN_FLIGHT


@dataclass
class ReportOutcome:
    """What one run did for one customer, meter and period; printed one line each."""

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
            f"meter: {self.target.source_meter_slug or self.target.meter.source_meter_slug}, total_usage: {total}, "
            f"from: {_go_time(self.target.period.start)}, to: {_go_time(self.usage_until)}, "
            f"value: {self.value.to_integral_value():+}, status: {self.status}"
        )
        return f"{text}, error: {self.error}" if self.error else text


@dataclass
class RunResult:
    """
    What a run did: counts by status and the units sent, every outcome that did not
    reach Stripe, and (unless `keep` is off, as for large scheduled runs, whose memory
    must not grow with the number of customers) every outcome; `on_outcome` sees each
    one as it is settled (the command prints them as the run goes).
    """

    keep: bool = True
    on_outcome: Callable[["ReportOutcome"], None] | None = None
    outcomes: list[ReportOutcome] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    units_sent: Decimal = Decimal(0)
    # Refused by Stripe or the source, or sent with an outcome still unknown.
    failed: list[ReportOutcome] = field(default_factory=list)

    def add(self, outcomes) -> None:
        for outcome in outcomes:
            self.counts[outcome.status] += 1
            if outcome.status == Status.SENT:
                self.units_sent += outcome.value
            if outcome.status in (Status.FAILED, Status.PENDING):
                self.failed.append(outcome)
            if self.keep:
                self.outcomes.append(outcome)
            if self.on_outcome is not None:
                self.on_outcome(outcome)

    def count(self, status: str) -> int:
        return self.counts[status]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        parts = ", ".join(f"{n} {status}" for status, n in sorted(self.counts.items()) if n) or "nothing to report"
        return f"{self.total} report(s): {parts}; {self.units_sent.to_integral_value():+} unit(s) sent to Stripe."


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
    shard: targets_step.Shard | None = None,
    keep_outcomes: bool = True,
    on_outcome: Callable[[ReportOutcome], None] | None = None,
) -> RunResult:
    """
    Report every customer's metered usage, or that of some customers or subscriptions,
    or of one shard of the customers (a fanned-out run, tasks.py).
    """
    source = source or get_usage_source()
    client = client or (None if dry_run else stripe_api.get_client())
    if subscription_ids is not None:
        customer_ids = targets_step.customers_of(subscription_ids, customer_ids)
    result = RunResult(keep=keep_outcomes, on_outcome=on_outcome)
    if not dry_run:
        result.add(resend_orphaned_reports(client, customer_ids=customer_ids, shard=shard))
    customers = targets_step.customers_to_report(customer_ids=customer_ids, shard=shard)
    size = conf.REPORT_BATCH_SIZE
    sending, written = None, 0
    try:
        for start in range(0, len(customers), size):
            # One batch of customers at a time: read, totalled and claimed (its rows
            # committed) while the batch before it is on its way to Stripe; that one is
            # settled before this one is sent. At most two batches in memory, one call in
            # flight per customer and meter (batches share no customer).
            claimed = _claim_customers(customers[start:start + size], as_of=as_of, trigger=trigger, source=source,
                                       client=client, dry_run=dry_run)
            if not dry_run:
                written += sum(o.report is not None for o in claimed)
                ledger.keep_statistics(rows_written=written)
            if sending is not None:
                finishing, sending = sending, None
                result.add(finishing.finish())
            sending = _Sending(claimed, client=client, trigger=trigger)
        if sending is not None:
            finishing, sending = sending, None
            result.add(finishing.finish())
    finally:
        if sending is not None:  # a batch could not be claimed while this one was on its way
            sending.finish()
    return result


def _claim_customers(customer_ids, *, as_of, trigger, source, client, dry_run) -> list[ReportOutcome]:
    owed = targets_step.current_targets(customer_ids=customer_ids)
    clock = RunClock.for_targets(owed, client, as_of=as_of)
    if not dry_run:
        owed = _roll_ended_periods(client, owed, clock)
        owed = _with_finalized_invoices(client, owed, clock)
    return claim_targets(owed, clock=clock, trigger=trigger, source=source, dry_run=dry_run)


class _Sending:
    """A batch's claimed outcomes with their pending rows on the way to Stripe (send.start)."""

    def __init__(self, outcomes: list[ReportOutcome], *, client, trigger: str):
        self.outcomes, self.trigger = outcomes, trigger
        self.send = send.start([o.report for o in outcomes if o.report and o.report.status == Status.PENDING], client)

    def finish(self) -> list[ReportOutcome]:
        self.send.settle()
        return _settled_outcomes(self.outcomes, trigger=self.trigger)


def report_closed_periods(closed, *, trigger: str, source=None, client=None) -> RunResult:
    """
    Report billing periods that have just ended up to their end, given as
    (subscription item id, period start, period end): what a webhook says closed,
    with everything else those customers owe. The ledger makes a replayed webhook, or
    a period already reported, send nothing.
    """
    owed = targets_step.closed_period_targets(closed)
    result = RunResult()
    if not owed:
        return result
    client = client or stripe_api.get_client()
    clock = RunClock.for_targets(owed, client)
    result.add(report_targets(owed, clock=clock, trigger=trigger, source=source or get_usage_source(), client=client))
    return result


def report_targets(owed, *, clock, trigger, source, client, dry_run=False) -> list[ReportOutcome]:
    """
    Report each target up to the last whole window before its as-of time: write every
    ledger row first, then send the pending ones together, at the rate Stripe allows.
    """
    outcomes = claim_targets(owed, clock=clock, trigger=trigger, source=source, dry_run=dry_run)
    send_reports([o.report for o in outcomes if o.report and o.report.status == Status.PENDING], client)
    return _settled_outcomes(outcomes, trigger=trigger)


def claim_targets(owed, *, clock, trigger, source, dry_run=False) -> list[ReportOutcome]:
    """Each target's total up to its last whole window, and its ledger row, committed; nothing sent."""
    owed = [t for t in owed if targets_step.watching_late_usage(t, clock.now(t))]
    spans = [(t, t.period.usage_until(clock.as_of(t))) for t in owed]
    spans = [(t, until) for t, until in spans if until > t.period.start or t.error]
    totals, source_errors = fetch_totals(source, [(t, u) for t, u in spans if not t.error])
    claims = []
    for target, usage_until in sorted(spans, key=lambda span: ledger.lock_order(span[0])):
        error = target.error or source_errors.get(target.key)
        total = None if error else totals.get((target.key, usage_until))
        error = error or invalid_total(total)
        claims.append(ledger.Claim(target, usage_until, None if error else total, error=error, now=clock.now(target)))
    if dry_run:
        outcomes = [dry_run_outcome(c) for c in claims]
    else:
        # One commit for all the rows, written in bulk: committed before anything is
        # sent, as crash safety needs, in a few statements whatever their number.
        outcomes = [_claimed(c, result) for c, result in ledger.claim_all(claims, trigger=trigger)]
    return outcomes


def _settled_outcomes(outcomes, *, trigger) -> list[ReportOutcome]:
    settled = [o.settled() for o in outcomes]
    for outcome in settled:
        log_outcome(outcome, trigger=trigger)
    return settled


def log_outcome(outcome: ReportOutcome, *, trigger: str) -> None:
    """One structured log line per report (LOG_FORMAT=json makes its fields JSON keys)."""
    level = logging.WARNING if outcome.status in (Status.FAILED, Status.PENDING, Status.REJECTED) else logging.INFO
    if not reports_logger.isEnabledFor(level):  # a large run formats no line nobody reads
        return
    target, report = outcome.target, outcome.report
    fields = {
        "customer": target.customer_id, "meter": target.meter.id, "trigger": trigger,
        "period_start": target.period.billing_start.isoformat(), "period_end": target.period.billing_end.isoformat(),
        "usage_until": outcome.usage_until.isoformat(), "value": str(outcome.value.to_integral_value()),
        "status": outcome.status, "identifier": report.identifier if report else "", "error": outcome.error,
    }
    reports_logger.log(level, "usage report %s: %s %s", fields["identifier"] or target.customer_id, outcome.status,
                       fields["value"], extra=fields)


def _claimed(c: ledger.Claim, result) -> ReportOutcome:
    """The outcome of one period's claim: its row (pending, skipped, failed), or in flight."""
    if isinstance(result, InFlight):
        return ReportOutcome(c.target, c.usage_until, c.total, Decimal(0), IN_FLIGHT, str(result))
    total = None if c.error else c.total
    return ReportOutcome(c.target, c.usage_until, total, result.value_sent, result.status, result.error, result)


def dry_run_outcome(c: ledger.Claim) -> ReportOutcome:
    """What a claim would send, written nowhere."""
    if c.error:
        return ReportOutcome(c.target, c.usage_until, None, Decimal(0), Status.FAILED, c.error)
    _carry, units = ledger.owed(c.target, c.total)
    value = units - selectors.sent_total(c.target)
    return ReportOutcome(c.target, c.usage_until, c.total, value, DRY_RUN if value else Status.SKIPPED)


def resend_orphaned_reports(client, *, customer_ids=None, shard=None) -> list[ReportOutcome]:
    """
    Pending rows whose run died (or whose outcome was uncertain) are sent again with
    the same identifier, which Stripe deduplicates within 24 hours.
    """
    lease = conf.pending_lease
    resend, too_old = ledger.claim_orphans(lease=lease, customer_ids=customer_ids, shard=shard)
    send_reports(resend, client)
    resolved = [_resolved_or_left(report, client) for report in too_old]
    return [_outcome_of(report) for report in resend + resolved]


def _resolved_or_left(report: UsageReport, client) -> UsageReport:
    try:
        return resolve_by_meter_summary(report, client)
    except stripe.StripeError as exc:
        logger.warning("could not read Stripe's meter summary for %s: %s", report.identifier, exc)
        return report


def resolve_by_meter_summary(report: UsageReport, client) -> UsageReport:
    """Settle a row in doubt by Stripe's meter summary of its period (ledger.resolve_beyond_dedupe)."""
    from .reconciliation import stripe_units_between

    units = stripe_units_between(client, report.meter, report.customer_id, report.period_start, report.period_end)
    report = ledger.resolve_beyond_dedupe(report, units)
    invoices.account_rows([report])  # landed, perhaps after its invoice was final
    return report


def _outcome_of(report: UsageReport) -> ReportOutcome:
    target = targets_step.ledger_target(report)
    return ReportOutcome(
        target, report.usage_until, report.usage_total, report.value_sent, report.status, report.error, report
    )


def _roll_ended_periods(client, owed, clock) -> list[ReportTarget]:
    """
    A live item whose mirrored period has ended is refreshed from Stripe, so its new
    period is reported too even if the webhook saying so has not arrived; the ended
    period, still in `owed`, is reported up to its end in the same run. Periods the
    mirror missed entirely in between (downtime longer than a period) are read from
    Stripe's invoices of the subscription, which bill each of them.
    """
    ended = {t.subscription_id: t for t in owed if t.live and t.period.billing_end <= clock.as_of(t)}
    refreshed, missed = [], []
    for subscription_id, target in sorted(ended.items()):
        try:
            subscription = client.v1.subscriptions.retrieve(subscription_id)
            stripe_sync.sync_subscription(subscription)
            refreshed.append(subscription_id)
            missed += _missed_periods(client, subscription, target)
        except stripe.StripeError as exc:
            logger.warning("could not refresh subscription %s: %s", subscription_id, exc)
    if not refreshed:
        return owed
    customers = sorted({ended[s].customer_id for s in refreshed})
    rolled = targets_step.closed_period_targets(missed) if missed else targets_step.current_targets(customer_ids=customers)
    # The old periods stay as they were owed (up to their end), the new ones join them.
    known = {t.key for t in owed}
    return owed + [t for t in rolled if t.key not in known]


def _with_finalized_invoices(client, owed, clock) -> list[ReportTarget]:
    """
    Ended periods whose invoice may have finalized without this app hearing of it (no
    webhook): Stripe's invoice list says, one call per such customer. That includes a
    live item's period that has ended as of the run while the mirror still shows it
    (its subscription just refreshed by _roll_ended_periods): sent into blindly, its
    usage landed on an invoice Stripe had finalized, which billed none of it, and the
    app never learnt it once the period was past Stripe's longest grace.
    """
    unknown = [
        t for t in owed
        if not t.invoice_final and (not t.live or t.period.billing_end <= clock.as_of(t))
        and targets_step.watching_late_usage(t, clock.now(t))
    ]
    if not unknown:
        return owed
    since = min(t.period.billing_end for t in unknown) - timedelta(hours=1)
    invoices.refresh_finalized(client, {t.customer_id for t in unknown}, since=since)
    return targets_step.with_invoice_state(owed, ended=unknown)


def _missed_periods(client, subscription, ended: ReportTarget) -> list[tuple]:
    """(item, start, end) of the item's periods between the mirrored one and Stripe's current one."""
    current = {i["id"]: i["current_period_start"] for i in subscription["items"]["data"]}
    gap_start, gap_end = int(ended.period.billing_end.timestamp()), current.get(ended.subscription_item_id)
    if gap_end is None or gap_end <= gap_start:
        return []
    invoices = client.v1.invoices.list({"subscription": subscription["id"], "created": {"gte": gap_start}, "limit": 100})
    missed = set()
    for invoice in invoices.auto_paging_iter():
        for item_id, start, end in webhooks.periods_billed_by_invoice(invoice):
            if item_id == ended.subscription_item_id and gap_start <= start and end <= gap_end:
                missed.add((item_id, datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)))
    return sorted(missed)


def _go_time(moment: datetime) -> str:
    """The original example's time format (Go's default), in UTC."""
    return moment.strftime("%Y-%m-%d %H:%M:%S +0000 UTC")
