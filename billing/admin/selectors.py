"""
What the admin shows about usage, the ledger and the schedule: plain read-only
functions, so the pages stay thin and the figures are tested without a browser.

Every page reads the usage source with one batched `totals()` call per meter, however
many customers or chart windows it shows.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from dateutil.relativedelta import relativedelta
from django.db.models import Count, Exists, Max, Min, OuterRef, Q, Sum
from django.db.models.functions import TruncHour
from django.utils import timezone
from django_q.models import Failure, Schedule, Task
from djstripe.models import Price, Subscription

from epsilon.timewindows import WINDOWS, floor_to_window

from ..models import PeriodReconciliation, UsageReport
from ..services import targets as selectors
from ..services.ledger import SAFE_RESEND_AGE
from ..services.reconciliation import DEFAULT_SETTLE_DELAY
from ..services.periods import AlignedPeriod
from ..services.schedules import SCHEDULE_FUNC, SCHEDULE_NAME
from ..services.targets import ReportTarget
from ..services.totals import totals_by_meter
from ..units import whole_units
from ..usage_sources import UsageRequest, UsageSourceError, get_usage_source

Status = UsageReport.Status
# A chart has at most this many bars: a monthly hourly period is drawn per day.
MAX_CHART_BARS = 72
CHART_BUCKETS = [WINDOWS["MINUTE"], WINDOWS["HOUR"], WINDOWS["DAY"], timedelta(days=7)]
# Rows that say how far the ledger has reported: sent, or "nothing new" up to then.
REPORTED = Q(status__in=[Status.SENT, Status.SKIPPED, Status.CARRIED]) & ~Q(trigger=UsageReport.Trigger.RECONCILE)
# A failed or rejected row stops being a problem once a later report of its period got through.
RESOLVABLE = [Status.FAILED, Status.REJECTED]
GOT_THROUGH = [Status.SENT, Status.SKIPPED, Status.CARRIED]
# A schedule whose next run is this far in the past is not being run.
SCHEDULE_GRACE = timedelta(minutes=10)


# --- usage per metered subscription item --------------------------------------


@dataclass
class LedgerSummary:
    """What the ledger says about one item's period."""

    sent_units: Decimal = Decimal(0)
    reported_until: datetime | None = None
    last_sent_at: datetime | None = None
    failed_rows: int = 0
    last_report: UsageReport | None = None


@dataclass
class ChartBar:
    start: datetime
    end: datetime
    value: Decimal


@dataclass
class UsageChart:
    """Usage per bucket (a whole number of the meter's windows) over one period."""

    title: str
    period: AlignedPeriod
    bucket: timedelta
    bars: list[ChartBar]
    error: str = ""

    @property
    def slots(self) -> int:
        """Buckets in the whole period, drawn or not yet."""
        return max(1, -(-(self.period.end - self.period.start) // self.bucket))

    @property
    def total(self) -> Decimal:
        return sum((bar.value for bar in self.bars), Decimal(0))


@dataclass
class WindowRow:
    """One window of the current period with usage, and the report that first counted it."""

    start: datetime
    end: datetime
    value: Decimal
    report: UsageReport | None


@dataclass
class ItemUsage:
    """One metered subscription item in its current period: source, ledger, price."""

    target: ReportTarget
    usage_until: datetime
    used: Decimal | None
    error: str
    ledger: LedgerSummary
    unit_amount_cents: Decimal | None
    currency: str
    reconciliation: PeriodReconciliation | None = None
    charts: list[UsageChart] = field(default_factory=list)
    # Stripe's own figures, on a change page (stripe_reads): its meter total and invoice preview.
    stripe: object | None = None
    preview: object | None = None
    # The current period per window of the meter (only windows with usage), on a change page.
    windows: list[WindowRow] = field(default_factory=list)

    @property
    def used_units(self) -> Decimal | None:
        """Whole units, as they are reported to Stripe."""
        return None if self.used is None else whole_units(self.used)

    @property
    def unsent_units(self) -> Decimal | None:
        return None if self.used is None else self.used_units - self.ledger.sent_units

    @property
    def estimate_cents(self) -> Decimal | None:
        if self.used is None or self.unit_amount_cents is None:
            return None
        return self.used_units * self.unit_amount_cents

    @property
    def stripe_estimate_cents(self) -> Decimal | None:
        if self.unit_amount_cents is None:
            return None
        return self.ledger.sent_units * self.unit_amount_cents

    @property
    def stripe_drift(self) -> Decimal | None:
        """Stripe's meter total minus what the ledger sent (+ Stripe holds more), when Stripe was read."""
        if self.stripe is None or self.stripe.units is None:
            return None
        return self.stripe.units - self.ledger.sent_units

    @property
    def stripe_may_lag(self) -> bool:
        """Whether Stripe's summary may not count the latest report yet: its summaries lag behind events."""
        last = self.ledger.last_sent_at
        return bool(last and timezone.now() - last < DEFAULT_SETTLE_DELAY)

    @property
    def unit_price(self) -> str:
        return unit_price(self.unit_amount_cents, self.currency)

    @property
    def problem(self) -> str:
        """Why the period's latest report did not reach Stripe, or ""."""
        last = self.ledger.last_report
        if last and last.status in (Status.FAILED, Status.REJECTED, Status.PENDING):
            return f"{last.get_status_display()}: {last.error or 'no answer from Stripe yet'}"
        return ""


def item_usages(*, customer_ids=None, subscription_ids=None, as_of=None, charts=False) -> list[ItemUsage]:
    """Usage, ledger and price of each metered item of these customers or subscriptions."""
    as_of = as_of or timezone.now()
    targets = [
        t for t in selectors.current_targets(customer_ids=customer_ids, subscription_ids=subscription_ids)
        if t.live and (subscription_ids is None or t.subscription_id in subscription_ids)
    ]
    if not targets:
        return []
    previous = previous_periods(targets) if charts else {}
    chart_plans = {t: _chart_plans(t, as_of, previous.get(t.subscription_item_id)) for t in targets} if charts else {}
    window_plans = {t: _window_requests(t, as_of) for t in targets} if charts else {}
    requests = defaultdict(set)
    for target in targets:
        if target.subject:
            wanted = [_period_request(target, as_of)] + [r for p in chart_plans.get(target, []) for r in p["requests"]]
            wanted += window_plans.get(target, [])
            requests[target.meter].update(r for r in wanted if r.end > r.start)
    totals, errors = fetch_totals(requests)

    ledgers = ledger_summaries(targets)
    prices = {p.id: p for p in Price.objects.filter(id__in={t.price_id for t in targets})}
    reconciliations = _reconciliations(targets)
    usages = []
    for target in targets:
        request = _period_request(target, as_of)
        error = target.subject_error or errors.get(target.meter.id, "")
        used = None if error or not target.subject else totals.get((target.meter.id, request), Decimal(0))
        unit_amount, currency = price_terms(prices.get(target.price_id))
        usage = ItemUsage(
            target=target,
            usage_until=request.end,
            used=used,
            error=error,
            ledger=ledgers.get(_key(target), LedgerSummary()),
            unit_amount_cents=unit_amount,
            currency=currency,
            reconciliation=reconciliations.get((target.customer_id, target.meter.id, target.period.start)),
        )
        usage.charts = [_chart(plan, target, totals, error) for plan in chart_plans.get(target, [])]
        if target in window_plans and not error:
            usage.windows = window_rows(target, window_plans[target], totals)
        usages.append(usage)
    return usages


def usage_by(attribute: str, usages: list[ItemUsage]) -> dict[str, list[ItemUsage]]:
    """Group item usages by a target attribute, e.g. "customer_id"."""
    grouped = defaultdict(list)
    for usage in usages:
        grouped[getattr(usage.target, attribute)].append(usage)
    return dict(grouped)


def fetch_totals(requests_by_meter) -> tuple[dict, dict]:
    """One batched `totals()` call per meter and window; a failing meter fails only its own items."""
    if not requests_by_meter:
        return {}, {}
    try:
        source = get_usage_source()
    except UsageSourceError as exc:
        return {}, {meter.id: f"usage source: {exc}" for meter in requests_by_meter}
    return totals_by_meter(source, requests_by_meter)


def _period_request(target: ReportTarget, as_of) -> UsageRequest:
    # Up to the last whole window, as the next report counts it.
    return UsageRequest(target.subject or "", target.period.start, target.period.usage_until(as_of))


def _key(target: ReportTarget):
    return target.key


def ledger_summaries(targets) -> dict[tuple, LedgerSummary]:
    """The ledger of each target's period in two queries, whatever the number of targets."""
    keys = {_key(t) for t in targets}
    grouped = (
        UsageReport.objects.filter(
            meter_id__in={k[0] for k in keys}, customer_id__in={k[1] for k in keys},
            billing_start__in={k[2] for k in keys},
        )
        .values("meter_id", "customer_id", "billing_start")
        .annotate(
            sent=Sum("value_sent", filter=UsageReport.COUNTS_TOWARD_TOTAL, default=Decimal(0)),
            reported_until=Max("usage_until", filter=REPORTED),
            last_sent_at=Max("sent_at", filter=UsageReport.COUNTS_TOWARD_TOTAL),
            failed=Count("id", filter=Q(status=Status.FAILED)),
            last_sequence=Max("sequence"),
        )
        .order_by()
    )
    summaries, latest = {}, Q(pk__in=[])
    for row in grouped:
        key = (row["meter_id"], row["customer_id"], row["billing_start"])
        if key not in keys:
            continue
        summaries[key] = LedgerSummary(row["sent"], row["reported_until"], row["last_sent_at"], row["failed"])
        latest |= Q(meter_id=key[0], customer_id=key[1], billing_start=key[2], sequence=row["last_sequence"])
    if summaries:
        for report in UsageReport.objects.filter(latest):
            summaries[(report.meter_id, report.customer_id, report.billing_start)].last_report = report
    return summaries


def _reconciliations(targets):
    rows = PeriodReconciliation.objects.filter(
        customer_id__in={t.customer_id for t in targets}, period_start__in={t.period.start for t in targets}
    )
    return {(r.customer_id, r.meter_id, r.period_start): r for r in rows}


def price_terms(price) -> tuple[Decimal | None, str]:
    """The price per unit in cents, exact (None for tiered prices), and its currency."""
    if price is None:
        return None, ""
    data = price.stripe_data or {}
    amount = data.get("unit_amount_decimal")
    if amount is None:
        amount = data.get("unit_amount")
    return (None if amount is None else Decimal(str(amount))), (data.get("currency") or "").lower()


def money(cents: Decimal | None, currency: str) -> str:
    """Cents as an amount to show, rounded to the cent as Stripe rounds invoice lines."""
    if cents is None:
        return "-"
    amount = (Decimal(cents) / 100).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    if currency == "usd":
        return f"-${-amount:,}" if amount < 0 else f"${amount:,}"
    return f"{amount:,} {currency.upper()}".strip()


def unit_price(cents: Decimal | None, currency: str) -> str:
    """A price per unit, exact: 10 cents -> $0.10, 0.5 cents -> $0.005."""
    if cents is None:
        return "tiered (see Stripe)"
    amount = cents / 100
    amount = amount.quantize(Decimal("0.01")) if amount == amount.quantize(Decimal("0.01")) else amount.normalize()
    return f"${amount:f}" if currency == "usd" else f"{amount:f} {currency.upper()}"


# --- charts: usage per window, current and previous period ---------------------


def chart_bucket(period: AlignedPeriod) -> timedelta:
    """The smallest whole number of windows that draws the period in few enough bars."""
    window = WINDOWS[period.window_size]
    length = period.end - period.start
    for bucket in CHART_BUCKETS:
        if bucket >= window and bucket % window == timedelta(0) and length / bucket <= MAX_CHART_BARS:
            return bucket
    return -(-length // MAX_CHART_BARS // window) * window


def chart_bars(period: AlignedPeriod, until: datetime) -> list[tuple[datetime, datetime]]:
    """Bucket bounds from the period's start up to `until` (the last bar may be short)."""
    bucket, bounds, start = chart_bucket(period), [], period.start
    while start < until:
        bounds.append((start, min(start + bucket, until)))
        start += bucket
    return bounds


def _chart_plans(target: ReportTarget, as_of, previous: AlignedPeriod | None) -> list[dict]:
    periods = [("Current period", target.period, target.period.usage_until(as_of))]
    if previous is not None:
        periods.append(("Previous period", previous, previous.end))
    plans = []
    for title, period, until in periods:
        bounds = chart_bars(period, until)
        requests = [UsageRequest(target.subject or "", start, end) for start, end in bounds]
        plans.append({"title": title, "period": period, "bounds": bounds, "requests": requests})
    return plans


def _chart(plan, target: ReportTarget, totals, error: str) -> UsageChart:
    bars = [
        ChartBar(start, end, Decimal(0) if error else totals.get((target.meter.id, request), Decimal(0)))
        for (start, end), request in zip(plan["bounds"], plan["requests"])
    ]
    return UsageChart(plan["title"], plan["period"], chart_bucket(plan["period"]), [] if error else bars, error)


def _window_requests(target: ReportTarget, as_of) -> list[UsageRequest]:
    """One request per meter window of the current period up to its last whole window (the first may be short)."""
    period, until = target.period, target.period.usage_until(as_of)
    step = WINDOWS[period.window_size]
    requests, start = [], period.start
    while start < until:
        end = min(floor_to_window(start, period.window_size) + step, until)
        requests.append(UsageRequest(target.subject or "", start, end))
        start = end
    return requests


def window_rows(target: ReportTarget, requests, totals) -> list[WindowRow]:
    """Windows with usage, newest first, each with the first report that counted it (sent or nothing new)."""
    reports = list(
        UsageReport.objects.filter(
            REPORTED, meter=target.meter, customer_id=target.customer_id, billing_start=target.period.billing_start
        ).order_by("sequence")
    )
    rows = []
    for request in requests:
        value = totals.get((target.meter.id, request), Decimal(0))
        if value:
            report = next((r for r in reports if r.usage_until >= request.end), None)
            rows.append(WindowRow(request.start, request.end, value, report))
    return rows[::-1]


def previous_periods(targets) -> dict[str, AlignedPeriod]:
    """
    Each item's previous period: as the ledger reported it, else stepped back from the
    current one by the price's interval (not before the subscription began).
    """
    periods = {}
    for target in targets:
        row = (
            UsageReport.objects.filter(
                customer_id=target.customer_id,
                meter=target.meter,
                period_end__lte=target.period.start,
            )
            .order_by("-period_start")
            .values("period_start", "period_end")
            .first()
        )
        if row:
            periods[target.subscription_item_id] = AlignedPeriod.of(
                row["period_start"], row["period_end"], target.period.window_size
            )
        elif (period := _stepped_back(target)) is not None:
            periods[target.subscription_item_id] = period
    return periods


def _stepped_back(target: ReportTarget) -> AlignedPeriod | None:
    subscription = Subscription.objects.filter(id=target.subscription_id).values("stripe_data").first()
    price = Price.objects.filter(id=target.price_id).values("stripe_data").first()
    if not subscription or not price:
        return None
    started = subscription["stripe_data"].get("start_date")
    recurring = price["stripe_data"].get("recurring") or {}
    end = target.period.billing_start
    if not started or datetime.fromtimestamp(int(started), UTC) >= end:
        return None  # the current period is the first
    start = max(
        datetime.fromtimestamp(int(started), UTC),
        step_back(end, recurring.get("interval", "month"), int(recurring.get("interval_count") or 1)),
    )
    period = AlignedPeriod.of(start, end, target.period.window_size)
    return None if period.is_empty else period


def step_back(moment: datetime, interval: str, count: int) -> datetime:
    """`moment` minus `count` Stripe intervals (day, week, month, year), the day clamped to the month's end."""
    return moment - relativedelta(**{f"{interval}s": count})


# --- the schedule ---------------------------------------------------------------


@dataclass
class ScheduleState:
    """
    The reporting schedule as it is, not as it is meant to be: a next run more than
    SCHEDULE_GRACE in the past means nothing is running it (django-q2 moves next_run
    forward each time a cluster runs the schedule), so it is a warning, never "Next run
    08:42" read at 08:52.
    """

    schedule: Schedule | None
    last_run: Task | None
    last_failure: Task | None
    now: datetime | None = None

    @property
    def next_run(self) -> datetime | None:
        return self.schedule.next_run if self.schedule else None

    @property
    def overdue(self) -> bool:
        now = self.now or timezone.now()
        return self.next_run is not None and self.next_run < now - SCHEDULE_GRACE

    @property
    def warning(self) -> str:
        """What is wrong with the schedule, naming the likely cause; "" when it runs."""
        if self.schedule is None:
            return "No reporting schedule: run `manage.py epsilon_setup` (it creates it), then `manage.py qcluster`."
        if not self.overdue:
            return ""
        now = self.now or timezone.now()
        late = int((now - self.next_run).total_seconds() // 60)
        ran = (
            f"it last ran {self.last_run.stopped:%Y-%m-%d %H:%M} UTC" if self.last_run and self.last_run.stopped
            else "it has never run"
        )
        return (
            f"Reporting is overdue: the schedule's run due {self.next_run:%Y-%m-%d %H:%M} UTC is {late} minutes late "
            f"and {ran}. Likely cause: no qcluster is running (start `python manage.py qcluster`)."
        )


def schedule_state(*, now=None) -> ScheduleState:
    """The reporting schedule, its last run and its last failed run (django-q2)."""
    schedule = Schedule.objects.filter(name=SCHEDULE_NAME).order_by("id").first()
    # Scheduled tasks are grouped under the schedule's name.
    runs = Q(group=SCHEDULE_NAME) | Q(func=SCHEDULE_FUNC)
    last_run = Task.objects.filter(runs).order_by("-stopped").first()
    last_failure = Failure.objects.filter(runs).order_by("-stopped").first()
    return ScheduleState(schedule, last_run, last_failure, now)


# --- the overview page ----------------------------------------------------------


@dataclass
class HourOfReports:
    hour: datetime
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class FailureGroup:
    error: str
    reports: int
    attempts: int
    customers: int
    first_seen: datetime
    last_seen: datetime


@dataclass
class Overview:
    hours: list[HourOfReports]
    status_totals: dict[str, int]
    failures: list[FailureGroup]
    open_problems: dict[str, int]
    drift: list[PeriodReconciliation]
    schedule: ScheduleState
    since: datetime
    resolved_failures: int = 0  # failed or rejected rows of the window that a later report settled

    @property
    def max_hourly(self) -> int:
        return max((h.total for h in self.hours), default=0)


def reports_per_hour(*, now=None, hours=48) -> list[HourOfReports]:
    """Reports written in each of the last `hours` hours (UTC), counted by status."""
    now = now or timezone.now()
    first = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
    rows = (
        UsageReport.objects.filter(created__gte=first)
        .annotate(hour=TruncHour("created", tzinfo=UTC))
        .values("hour", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    counts = defaultdict(dict)
    for row in rows:
        counts[row["hour"]][row["status"]] = row["n"]
    return [
        HourOfReports(hour, {s: counts.get(hour, {}).get(s, 0) for s in Status.values})
        for hour in (first + timedelta(hours=i) for i in range(hours))
    ]


def failure_groups(*, since) -> list[FailureGroup]:
    """Failed reports since `since` that no later report settled, grouped by their error, most frequent first."""
    rows = (
        UsageReport.objects.filter(status=Status.FAILED, created__gte=since)
        .exclude(resolved_later())  # open problems only: a later report settled the rest
        .values("error")
        .annotate(
            reports=Count("id"), attempts=Sum("attempts"), customers=Count("customer_id", distinct=True),
            first_seen=Min("created"), last_seen=Max("updated"),
        )
        .order_by("-reports", "-last_seen")
    )
    return [
        FailureGroup(r["error"] or "(no message)", r["reports"], r["attempts"] or 0, r["customers"], r["first_seen"], r["last_seen"])
        for r in rows
    ]


def resolved_later():
    """True on a row when a later report of the same period got through (it settled what this one failed)."""
    return Exists(UsageReport.objects.filter(
        customer_id=OuterRef("customer_id"), meter=OuterRef("meter"), billing_start=OuterRef("billing_start"),
        sequence__gt=OuterRef("sequence"), status__in=GOT_THROUGH,
    ))


def with_resolution(queryset):
    """Each row annotated `resolved`: a failed or rejected row whose period a later report settled."""
    return queryset.annotate(resolved=Q(status__in=RESOLVABLE) & resolved_later())


def latest_reports():
    """Each period's latest report: what the ledger stands at for that period now."""
    later = UsageReport.objects.filter(
        customer_id=OuterRef("customer_id"), meter=OuterRef("meter"),
        billing_start=OuterRef("billing_start"), sequence__gt=OuterRef("sequence"),
    )
    return UsageReport.objects.filter(~Exists(later))


def open_problem_counts() -> dict[str, int]:
    """
    Periods whose latest report failed, or is still waiting for Stripe's answer, and of
    those waiting, the ones past Stripe's dedupe window that no run can resend: they
    wait for an operator's decision.
    """
    rows = latest_reports().filter(status__in=[Status.FAILED, Status.PENDING]).values("status").annotate(n=Count("id"))
    counts = {row["status"]: row["n"] for row in rows.order_by()}
    undecided = UsageReport.objects.filter(status=Status.PENDING, created__lt=timezone.now() - SAFE_RESEND_AGE).count()
    return {**{status: counts.get(status, 0) for status in (Status.FAILED, Status.PENDING)}, "undecided": undecided}


def overview(*, now=None, hours=48) -> Overview:
    now = now or timezone.now()
    since = now - timedelta(hours=hours)
    hourly = reports_per_hour(now=now, hours=hours)
    status_totals = {s: sum(h.counts[s] for h in hourly) for s in Status.values}
    open_problems = open_problem_counts()
    resolved = UsageReport.objects.filter(status__in=RESOLVABLE, created__gte=since).filter(resolved_later()).count()
    drift = list(
        PeriodReconciliation.objects.filter(
            status__in=[PeriodReconciliation.Status.DRIFT, PeriodReconciliation.Status.UNKNOWN, PeriodReconciliation.Status.UNREPORTED,
                       PeriodReconciliation.Status.INVOICE]
        ).select_related("meter")
    )
    return Overview(hourly, status_totals, failure_groups(since=since), open_problems, drift, schedule_state(now=now), since, resolved)
