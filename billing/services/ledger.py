"""
The ledger: every write to UsageReport goes through here (claims, skips, failures,
settlements, resend claims, corrections), so the rules that make reporting exact hold
in one place:

- A period's rows are written under a lock on its existing rows, in one fixed order
  across a run (`lock_order`), and never while another row of the period is in flight:
  two runs can never both send the same usage.
- A row is committed before its event is sent (ledger first), with an identifier
  derived from (customer, meter, period, sequence), so a resend after a crash or an
  unknown outcome is deduplicated by Stripe instead of counted twice.
- What a row sends is cumulative in whole units: the customer's unbilled fraction from
  earlier periods (`carry_in`) plus this period's total, rounded down, minus what this
  period already sent. Over a customer's life Stripe bills the floor of its total usage,
  not the sum of per-period floors.
- A period is finished only when a row reached Stripe (or had nothing to send) up to
  the period's end; a failed close is retried on every run.
- A change of the customer's usage subject within a period is refused, never sent as
  the difference between two subjects' totals.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal
from hashlib import sha256

from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from ..conf import conf
from ..errors import BillingError
from ..models import UsageReport
from ..units import whole_units
from .periods import timestamp_rejection
from . import targets

logger = logging.getLogger(__name__)

Status = UsageReport.Status
IDENTIFIER_MAX_LENGTH = 100
STRIPE_DEDUPE_WINDOW = timedelta(hours=24)
# Resend a pending event only well inside Stripe's dedupe window.
SAFE_RESEND_AGE = STRIPE_DEDUPE_WINDOW - timedelta(hours=1)
# Rows whose usage total is part of the customer's running total.
# (Reconciliation's corrections restore Stripe to the ledger and are not part of it; usage it
# found unreported and carried on is.)
COUNTED_STATUSES = (Status.SENT, Status.SKIPPED, Status.PENDING)
COUNTED = Q(status__in=COUNTED_STATUSES) & ~Q(trigger=UsageReport.Trigger.RECONCILE) | Q(status=Status.CARRIED)
SETTLED_COUNTED = (Status.SENT, Status.SKIPPED, Status.CARRIED)


def is_counted(row: UsageReport) -> bool:
    """A settled row whose usage total is part of the period's running total."""
    return row.status in SETTLED_COUNTED and (row.trigger != UsageReport.Trigger.RECONCILE or row.status == Status.CARRIED)


IN_FLIGHT_MESSAGE = "another report of this period is in flight; it will be settled first"


class InFlight(BillingError):
    """Another report of the period is pending: this run sends nothing for it."""


def rows_of(target: targets.ReportTarget):
    return period_rows(target.key)


def period_rows(key: tuple):
    """The rows of one ledger period, known by (meter, customer, billing start)."""
    meter_id, customer_id, billing_start = key
    return UsageReport.objects.filter(meter_id=meter_id, customer_id=customer_id, billing_start=billing_start)


def key_of(row: UsageReport) -> tuple:
    """A row's ledger period: (meter, customer, billing start)."""
    return (row.meter_id, row.customer_id, row.billing_start)


def carry_into(target: targets.ReportTarget) -> Decimal:
    """
    The customer's usage on this meter before this period that no whole unit billed
    yet: the sum, over earlier periods, of their latest total minus what they sent.
    """
    meter_id, customer_id, billing_start = target.key
    earlier = UsageReport.objects.filter(
        meter_id=meter_id, customer_id=customer_id, billing_start__lt=billing_start
    ).aggregate(**CARRY_SUMS)
    return _carry_of(earlier)


# What a period adds to the customer's carry, summed in SQL (carry_into, claim_all) ...
CARRY_SUMS = {
    "usage": Sum("usage_delta", filter=COUNTED, default=Decimal(0)),
    "sent": Sum("value_sent", filter=COUNTED, default=Decimal(0)),
    "unbilled": Sum("unbilled", filter=Q(status=Status.SENT), default=Decimal(0)),  # sent, on no invoice
}


def _carry_of(sums: dict) -> Decimal:
    """The carry a CARRY_SUMS aggregate (of one period, or of several) stands for."""
    return sums["usage"] - sums["sent"] + sums["unbilled"]


def carry_of_rows(rows) -> Decimal:
    """... and the same sum over rows in memory (the periods a batch is writing)."""
    carry = Decimal(0)
    for row in rows:
        if row.status == Status.CARRIED or (row.status in COUNTED_STATUSES and row.trigger != UsageReport.Trigger.RECONCILE):
            carry += row.usage_delta - row.value_sent
        if row.status == Status.SENT:
            carry += row.unbilled
    return carry


def owed(target: targets.ReportTarget, total: Decimal) -> tuple[Decimal, Decimal]:
    """(carry in, whole units this period owes in all) for a period-to-date total."""
    carry = carry_into(target)
    return carry, whole_units(carry + total)


class Write:
    """A row a decision writes: a new one (`fields` None), or these fields of an existing one."""

    __slots__ = ("row", "fields")

    def __init__(self, row: UsageReport, fields: list[str] | None = None):
        self.row, self.fields = row, fields


def claim(target: targets.ReportTarget, usage_until, total: Decimal, *, trigger: str, now) -> UsageReport:
    """
    Write the period's next row in one transaction: pending with what to send, skipped
    when nothing is new, failed when it cannot be sent (subject changed, timestamp out
    of Stripe's range). Raises InFlight when a row of the period is pending.
    """
    try:
        with transaction.atomic():
            rows = list(rows_of(target).select_for_update().order_by("sequence"))
            return _saved(decide_claim(target, usage_until, total, rows, carry_into(target), trigger=trigger, now=now))
    except IntegrityError:  # a concurrent run wrote this period's next row first
        raise InFlight(IN_FLIGHT_MESSAGE) from None


def decide_claim(target, usage_until, total: Decimal, rows, carry: Decimal, *, trigger: str, now) -> Write:
    """
    The period's next row, given its rows (oldest first) and the customer's carry: the
    one rule of a claim, whether one period is claimed or a batch (claim_all).
    """
    if any(row.status == Status.PENDING for row in rows):
        raise InFlight(IN_FLIGHT_MESSAGE)
    changed = _subject_change(rows, target.subject)
    if changed:
        return _failed(target, usage_until, total, changed, trigger, rows)
    units = whole_units(carry + total)
    counted = [row for row in rows if is_counted(row)]
    sent = sum((row.value_sent for row in counted), Decimal(0))
    base = counted[-1].usage_total if counted else Decimal(0)
    last = rows[-1] if rows else None
    value = units - sent
    if value == 0:
        return _skip(target, usage_until, total, carry, last, counted, trigger)
    if target.invoice_final:  # Stripe would hold it on no invoice
        status, note = late_usage_row(value)
        return _skip(target, usage_until, total, carry, last, counted, trigger, status=status, note=note)
    timestamp = target.period.event_timestamp(usage_until)
    rejection = timestamp_rejection(timestamp, now)
    report = _row(target, usage_until, total, value, Status.FAILED if rejection else Status.PENDING, trigger, last)
    report.carry_in, report.usage_delta = carry, total - base
    report.event_timestamp, report.error = timestamp, rejection or ""
    return Write(report)


def decide_failure(target, usage_until, total, error: str, rows, *, trigger: str) -> Write:
    """A report that cannot be made: a failed row (or the same failure counted again)."""
    if any(row.status == Status.PENDING for row in rows):
        raise InFlight(IN_FLIGHT_MESSAGE)
    return _failed(target, usage_until, total, error, trigger, rows)


class Claim:
    """One period a batch claims: its target, how far, the source's total, or why it cannot be sent."""

    __slots__ = ("target", "usage_until", "total", "error", "now")

    def __init__(self, target, usage_until, total, *, error=None, now=None):
        self.target, self.usage_until, self.total, self.error, self.now = target, usage_until, total, error, now


def claim_all(claims: list[Claim], *, trigger: str) -> list:
    """
    Claim many periods in one transaction with a few statements, whatever their number:
    their rows locked by one query in lock order, the customers' carries summed by one,
    the new rows inserted and the reused ones updated in bulk. Each period gets exactly
    the row `claim` (or `record_failure`) would write. Returns (claim, its row or the
    InFlight it met), in lock order. A concurrent run that wrote one of these periods
    first (the database refuses the batch) makes the batch claim them one at a time.
    """
    claims = sorted(claims, key=lambda c: lock_order(c.target))
    try:
        with transaction.atomic():
            results = _claim_all(claims, trigger)
    except IntegrityError:
        logger.info("a concurrent run wrote one of %d periods first: claiming them one at a time", len(claims))
        results = [_claim_one(c, trigger) for c in claims]
    return list(zip(claims, results))


def _claim_one(c: Claim, trigger: str):
    try:
        if c.error:
            return record_failure(c.target, c.usage_until, c.total, c.error, trigger=trigger)
        return claim(c.target, c.usage_until, c.total, trigger=trigger, now=c.now)
    except InFlight as exc:
        return exc


def _claim_all(claims: list[Claim], trigger: str) -> list:
    keys = {c.target.key for c in claims}
    # The batch's own periods, by (meter, customer) then billing start: rows as they stand.
    periods = defaultdict(dict)
    for key in keys:
        periods[key[:2]][key[2]] = []
    for row in _rows_of_periods(keys).select_for_update().order_by("customer_id", "meter_id", "billing_start", "sequence"):
        rows = periods.get((row.meter_id, row.customer_id), {}).get(row.billing_start)
        if rows is not None:
            rows.append(row)
    earlier = _carry_by_period(keys)
    results, inserts, updates = [], [], defaultdict(list)
    for c in claims:
        key = c.target.key
        rows = periods[key[:2]][key[2]]
        try:
            if c.error:
                write = decide_failure(c.target, c.usage_until, c.total, c.error, rows, trigger=trigger)
            else:
                carry = _carry_before(key, earlier, periods[key[:2]])
                write = decide_claim(c.target, c.usage_until, c.total, rows, carry, trigger=trigger, now=c.now)
        except InFlight as exc:
            results.append(exc)
            continue
        if write.fields is None:
            inserts.append(write.row)
            rows.append(write.row)  # a later period of the customer carries from it
        else:
            write.row.updated = timezone.now()
            updates[tuple(write.fields)].append(write.row)
        results.append(write.row)
    _insert(inserts)
    for fields, rows in updates.items():
        UsageReport.objects.bulk_update(rows, [*fields, "updated"], batch_size=BULK_BATCH)
    return results


def _insert(rows: list[UsageReport]) -> None:
    """
    A batch's new rows in one statement: PostgreSQL's COPY (ids drawn from the table's
    sequence first), else bulk_create. The table's constraints hold either way: a row a
    concurrent run wrote first fails the whole batch with an IntegrityError.
    """
    if connection.vendor != "postgresql" or len(rows) < 2:
        UsageReport.objects.bulk_create(rows, batch_size=BULK_BATCH)
        return
    meta = UsageReport._meta
    fields = list(meta.concrete_fields)
    quote = connection.ops.quote_name
    with connection.cursor() as cursor, connection.wrap_database_errors:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
            [meta.db_table, meta.pk.column, len(rows)],
        )
        for row, (pk,) in zip(rows, cursor.fetchall()):
            row.pk = pk
        columns = ", ".join(quote(field.column) for field in fields)
        now = timezone.now()
        attnames = [field.attname for field in fields]
        with cursor.cursor.copy(f"COPY {quote(meta.db_table)} ({columns}) FROM STDIN") as copy:
            for row in rows:
                row.created = row.updated = now  # auto_now_add and auto_now, as save() sets them
                # Values as the model holds them (str, int, bool, Decimal, aware datetime):
                # psycopg writes each in the column's type.
                copy.write_row([getattr(row, attname) for attname in attnames])
    for row in rows:
        row._state.adding, row._state.db = False, connection.alias


# Rows per INSERT/UPDATE statement of a batch (SQLite's parameter limit allows this many).
BULK_BATCH = 500
# Rows a run writes before it checks that PostgreSQL's statistics of the ledger keep up.
ANALYZE_AFTER = 1000


def keep_statistics(*, rows_written: int) -> bool:
    """
    Analyze the ledger when PostgreSQL's estimate of its size is below half of what this
    run has written: True when it did. A batch reads its customers' rows by a thousand
    customer ids; with no statistics (a new ledger, or one a first large run fills faster
    than autovacuum, whose naptime is a minute, analyzes it) the planner takes every row
    for a match and reads the whole table for each batch, so a run grows quadratically.
    ANALYZE samples the table and blocks neither reads nor writes; a run analyzes again
    only each time it doubles what the estimate holds, so a large ledger is never
    analyzed by runs. Only a run with its rows committed does it (inside a caller's
    transaction the lock would last as long as that), in a transaction of its own that
    waits at most a second for the lock, and only as the table's owner (anyone else's
    ANALYZE is skipped with a mere warning): a failure is logged, never the run's.
    Elsewhere nothing is done.
    """
    if connection.vendor != "postgresql" or rows_written < ANALYZE_AFTER:
        return False
    if connection.in_atomic_block or not connection.get_autocommit():
        return False
    table = connection.ops.quote_name(UsageReport._meta.db_table)
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples, pg_has_role(current_user, relowner, 'USAGE') FROM pg_class WHERE oid = %s::regclass",
                [table],
            )
            estimate, owner = cursor.fetchone()
            if estimate >= rows_written / 2:
                return False
            if not owner:
                _warn_once("the ledger's statistics lag behind this run, and this database role does not own "
                           "billing_usagereport, so it cannot ANALYZE it: large first runs read more of the "
                           "ledger than they need until autovacuum analyzes it")
                return False
            cursor.execute("SET LOCAL lock_timeout = '1s'")
            cursor.execute(f"ANALYZE {table}")
    except DatabaseError as exc:
        logger.warning("could not analyze the ledger (the run goes on): %s", exc)
        return False
    logger.info("analyzed the ledger: PostgreSQL estimated %d rows, this run has written %d", estimate, rows_written)
    return True


_warned = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)


def _rows_of_periods(keys):
    """
    The rows of these periods (a superset: filter by key_of), in one query. By customer
    and billing start only: a meter has every customer's rows, and a planner that
    misjudges it (a young, unanalyzed ledger) would read them all for each batch.
    """
    return UsageReport.objects.filter(customer_id__any_of={k[1] for k in keys}, billing_start__any_of={k[2] for k in keys})


def _carry_by_period(keys) -> dict[tuple, list[tuple]]:
    """(billing start, carry) of every period of these customers and meters not in `keys`, by (meter, customer)."""
    sums = (
        UsageReport.objects.filter(customer_id__any_of={k[1] for k in keys})  # by customer only (_rows_of_periods)
        .values("meter_id", "customer_id", "billing_start").annotate(**CARRY_SUMS).order_by()
    )
    earlier = defaultdict(list)
    for s in sums:
        key = (s["meter_id"], s["customer_id"], s["billing_start"])
        if key not in keys:
            earlier[key[:2]].append((key[2], _carry_of(s)))
    return earlier


def _carry_before(key, earlier, own_periods: dict) -> Decimal:
    """carry_into for a period of a batch: other periods' sums, plus the batch's own rows as they stand."""
    meter_id, customer_id, billing_start = key
    carry = sum((c for start, c in earlier.get((meter_id, customer_id), ()) if start < billing_start), Decimal(0))
    for start, rows in own_periods.items():
        if start < billing_start:
            carry += carry_of_rows(rows)
    return carry


def _saved(write: Write) -> UsageReport:
    if write.fields is None:
        write.row.save()
    else:
        write.row.save(update_fields=write.fields + ["updated"])
    return write.row


def _subject_change(rows, subject: str | None) -> str | None:
    used = next((row.subject for row in reversed(rows) if row.subject and row.status in (Status.SENT, Status.PENDING)), None)
    if used is None or subject is None or used == subject:
        return None
    return (
        f"the customer's usage subject changed from {used!r} to {subject!r} within this billing "
        f"period: not sent, since it would bill the difference between two subjects' totals. Set "
        f"the subject back to {used!r} to finish this period; the next period is reported with "
        "the subject the customer has then."
    )


def late_usage_row(value: Decimal) -> tuple[str, str]:
    """
    (status, note) of a finalized period's late usage, by EPSILON["LATE_USAGE"]: carried
    (counted, so the customer's next period bills it) or recorded only (a flagged row
    that counts toward nothing).
    """
    if conf.LATE_USAGE == "record":
        return Status.LATE, (
            f"Stripe finalized this period's invoice: {value:+} unit(s) of late usage are recorded "
            "only (EPSILON_LATE_USAGE=record), neither sent into it nor billed on a later invoice"
        )
    return Status.CARRIED, (
        f"Stripe finalized this period's invoice: {value:+} unit(s) of late usage are "
        "not sent into it, but carried to the customer's next period"
    )


def _skip(target, usage_until, total, carry, last, counted, trigger, *, status=Status.SKIPPED, note="") -> Write:
    """
    Nothing to send (nothing new, or late usage carried or recorded): say so once, and
    keep that one row up to date on later runs. A skipped or carried row's total still
    counts toward the customer's carry.
    """
    reuse = last is not None and last.status == status
    prior = [row for row in counted if not (reuse and row.pk == last.pk)]
    delta = total - (prior[-1].usage_total if prior else Decimal(0))
    if reuse:
        last.usage_until, last.usage_total, last.trigger, last.carry_in = usage_until, total, trigger, carry
        last.usage_delta, last.error = delta, note
        return Write(last, ["usage_until", "usage_total", "trigger", "carry_in", "usage_delta", "error"])
    report = _row(target, usage_until, total, Decimal(0), status, trigger, last)
    report.carry_in, report.error, report.usage_delta = carry, note, delta
    return Write(report)


def record_failure(target: targets.ReportTarget, usage_until, total, error: str, *, trigger: str) -> UsageReport:
    """A report that cannot be made (no subject, source down, two items): leave a row."""
    with transaction.atomic():
        rows = list(rows_of(target).select_for_update().order_by("sequence"))
        return _saved(decide_failure(target, usage_until, total, error, rows, trigger=trigger))


def _failed(target, usage_until, total, error, trigger, rows) -> Write:
    last = rows[-1] if rows else None
    if last and last.status == Status.FAILED and last.error == error:
        last.usage_until, last.usage_total, last.trigger = usage_until, total, trigger
        last.attempts += 1
        return Write(last, ["usage_until", "usage_total", "trigger", "attempts"])
    report = _row(target, usage_until, total, Decimal(0), Status.FAILED, trigger, last)
    report.error, report.attempts = error, 1
    return Write(report)


def _row(target, usage_until, total, value, status, trigger, last) -> UsageReport:
    sequence = last.sequence + 1 if last else 1
    return UsageReport(
        customer_id=target.customer_id,
        subscription_id=target.subscription_id,
        subscription_item_id=target.subscription_item_id,
        price_id=target.price_id,
        meter=target.meter,
        livemode=target.livemode,
        source_meter_slug=target.source_meter_slug or target.meter.source_meter_slug,
        window_size=target.period.window_size,
        billing_start=target.period.billing_start,
        billing_end=target.period.billing_end,
        period_start=target.period.start,
        period_end=target.period.end,
        usage_until=max(usage_until, target.period.start),
        subject=target.subject or "",
        sequence=sequence,
        usage_total=total,
        value_sent=value,
        identifier=meter_event_identifier(target, sequence),
        status=status,
        trigger=trigger,
    )


def correction(anchor: UsageReport, value: Decimal) -> UsageReport:
    """
    A compensating event for a period (reconciliation), stamped where the period's own
    events are: not part of the period's running total. Raises InFlight.
    """
    target = targets.ledger_target(anchor, (anchor.subject or None, None))
    with transaction.atomic():
        rows = list(rows_of(target).select_for_update().order_by("sequence"))
        if any(row.status == Status.PENDING for row in rows):
            raise InFlight(IN_FLIGHT_MESSAGE)
        report = _row(target, anchor.usage_until, None, value, Status.PENDING, UsageReport.Trigger.RECONCILE, rows[-1])
        report.subject = anchor.subject
        report.event_timestamp = anchor.event_timestamp
        report.save()
        return report


def carry_unreported(anchor: UsageReport, source_total: Decimal) -> UsageReport | None:
    """
    Usage the source has for a finished period whose invoice can no longer take it
    (reconciliation found it): a carried row counts it, so the customer's next period
    bills it. None when the ledger already counts that total. Raises InFlight.
    """
    target = targets.ledger_target(anchor, (anchor.subject or None, None))
    with transaction.atomic():
        rows = list(rows_of(target).select_for_update().order_by("sequence"))
        if any(row.status == Status.PENDING for row in rows):
            raise InFlight(IN_FLIGHT_MESSAGE)
        counted = [row for row in rows if is_counted(row)]
        base = counted[-1].usage_total if counted else Decimal(0)
        if source_total == base:
            return None
        status, note = late_usage_row(source_total - base)
        report = _row(target, anchor.usage_until, source_total, Decimal(0), status, UsageReport.Trigger.RECONCILE, rows[-1])
        report.subject, report.carry_in, report.usage_delta = anchor.subject, carry_into(target), source_total - base
        report.error = f"reconciliation found usage no report counted. {note}"
        report.save()
        return report


UNBILLED_NOTE = "Stripe's meter took "


def account_unbilled(key: tuple, invoiced: Decimal) -> Decimal | None:
    """
    A finalized invoice billed `invoiced` units of the period `key` (meter, customer,
    billing start). Whatever more the period's counted sent rows put in Stripe's meter
    reached it after the invoice was final (an outage longer than the grace period, or a
    report sent before the app learnt of the finalization): it is on no invoice. Those
    units are written on the period's latest counted sent row as `unbilled`, which
    `carry_into` carries to the customer's next period. With LATE_USAGE = "record" they
    are only noted, and what an earlier "carry" already carried stays carried (the next
    period may have sent it: taking it back would send a negative event).
    Idempotent; None while a row of the period is in flight (its settlement calls again).
    """
    with transaction.atomic():
        rows = list(period_rows(key).select_for_update().order_by("sequence"))
        if any(row.status == Status.PENDING for row in rows):
            return None
        sent = [row for row in rows if row.counts_toward_total]  # what reconciliation's ledger_units holds
        late = max(sum((row.value_sent for row in sent), Decimal(0)) - invoiced, Decimal(0))
        carrier = sent[-1] if sent and late else None
        recording = conf.LATE_USAGE == "record"
        carried = min(late, sum((row.unbilled for row in rows), Decimal(0))) if recording else late
        for row in rows:
            unbilled = carried if row is carrier else Decimal(0)
            note = row.error
            if row is carrier:
                note = (
                    f"{UNBILLED_NOTE}{late.normalize():f} unit(s) of this period after its invoice was "
                    f"finalized (it billed {invoiced.normalize():f}): no invoice billed them; "
                    + (f"{carried.normalize():f} carried to the customer's next period"
                       + (", the rest recorded only (EPSILON_LATE_USAGE=record)" if carried < late else ""))
                )
            elif note.startswith(UNBILLED_NOTE):
                note = ""
            if (row.unbilled, row.error) != (unbilled, note):
                row.unbilled, row.error = unbilled, note
                row.save(update_fields=["unbilled", "error", "updated"])
        return late


def meter_event_identifier(target: targets.ReportTarget, sequence: int) -> str:
    """Deterministic per (customer, meter, period, sequence); at most Stripe's 100 characters."""
    meter_id, customer_id, billing_start = target.key
    readable = f"{customer_id}:{meter_id}:{billing_start:%Y%m%dT%H%M%SZ}:{sequence}"
    if len(readable) <= IDENTIFIER_MAX_LENGTH:
        return readable
    digest = sha256(readable.encode()).hexdigest()[:40]
    return f"eps:{digest}:{sequence}"


def lock_order(row) -> tuple:
    """
    Every transaction locks ledger rows in this order (targets, rows and period keys
    alike), so concurrent runs wait for each other instead of deadlocking.
    """
    if isinstance(row, targets.ReportTarget):
        return (row.customer_id, row.meter.id, row.period.billing_start)
    meter_id, customer_id, billing_start = row if isinstance(row, tuple) else key_of(row)
    return (customer_id, meter_id, billing_start)


def settle(results: dict, reports: list[UsageReport]) -> None:
    """
    Record what Stripe said on each sent row, in one transaction: one UPDATE per
    distinct outcome (sent, refused with a message, ...), not per row, then one read
    of the rows as settled. Only a pending row settles: a concurrent resend may have
    settled it already, and then its status stays as that one wrote it.
    """
    now = timezone.now()
    outcomes = defaultdict(list)
    for report in reports:
        result = results[report.pk]
        outcomes[(result.status, result.error, result.attempts)].append(report.pk)
    with transaction.atomic():
        for (status, error, attempts), pks in sorted(outcomes.items()):
            fields = {"status": status, "error": error, "updated": now, "attempts": F("attempts") + attempts}
            if status == Status.SENT:
                fields["sent_at"] = now
            for chunk in _chunks(sorted(pks), BULK_BATCH):
                UsageReport.objects.filter(pk__any_of=chunk, status=Status.PENDING).update(**fields)
    settled = {}
    for chunk in _chunks([r.pk for r in reports], BULK_BATCH):
        rows = UsageReport.objects.filter(pk__any_of=chunk).values_list("pk", "status", "error", "attempts", "sent_at", "updated")
        settled.update((row[0], row[1:]) for row in rows)
    for report in reports:
        report.status, report.error, report.attempts, report.sent_at, report.updated = settled[report.pk]


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


class LeaseKeeper:
    """
    While a run sends, its pending rows' lease is renewed (their `updated` moved to now)
    every third of the lease, from a thread with its own database connection: a send
    that outlasts the lease is not taken for a dead run's, so another run never resends
    a row this one is still sending (two calls for one customer and meter at once).
    A lease of 0 (tests that race runs on purpose) keeps nothing.
    """

    def __init__(self, report_ids: list[int], *, lease_seconds: float):
        self.report_ids = report_ids
        self.interval = lease_seconds / 3
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        if self.interval > 0 and self.report_ids:
            self._thread = threading.Thread(target=self._keep, name="usage-report-lease", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _keep(self):
        try:
            while not self._stop.wait(self.interval):
                try:
                    self.renew()
                except Exception:  # a lapsed lease lets another run resend: keep trying
                    logger.exception("could not renew the lease of %d report(s) being sent", len(self.report_ids))
                    connection.close()
        finally:
            connection.close()

    def renew(self) -> int:
        return UsageReport.objects.filter(pk__any_of=self.report_ids, status=Status.PENDING).update(updated=timezone.now())


def past_lease(*, lease: timedelta, customer_ids=None, now=None):
    """Pending rows no run is sending: their lease ran out (a dead run's, or in doubt)."""
    rows = UsageReport.objects.filter(status=Status.PENDING, updated__lt=(now or timezone.now()) - lease)
    return rows if customer_ids is None else rows.filter(customer_id__any_of=customer_ids)


def claim_orphans(*, lease: timedelta, customer_ids=None, shard=None) -> tuple[list[UsageReport], list[UsageReport]]:
    """
    Pending rows whose run died (or whose outcome was uncertain) and whose lease ran out
    (of one shard's customers when given), each claimed by a conditional update so that
    concurrent runs never resend one together: (to resend, too old to resend blindly).
    """
    now = timezone.now()
    orphans = past_lease(lease=lease, customer_ids=customer_ids, now=now)
    claimed = []
    for report in orphans.select_related("meter"):
        if shard is not None and not shard.holds(report.customer_id):
            continue
        if UsageReport.objects.filter(pk=report.pk, status=Status.PENDING, updated=report.updated).update(updated=now):
            claimed.append(report)
    too_old = [r for r in claimed if now - r.created > SAFE_RESEND_AGE]
    return [r for r in claimed if r not in too_old], too_old


def take_in_doubt(report: UsageReport, *, lease: timedelta) -> bool:
    """
    Take a pending row no run is sending (its lease ran out) for an operator's decision,
    by the same conditional update runs use: False when a run holds or just took it.
    """
    now = timezone.now()
    taken = UsageReport.objects.filter(pk=report.pk, status=Status.PENDING, updated__lt=now - lease).update(updated=now)
    report.refresh_from_db()
    return bool(taken)


def decide(report: UsageReport, *, status: str, note: str) -> UsageReport:
    """
    Settle a row in doubt as decided (sent: Stripe holds it; failed: it does not, and
    the period's next report sends its usage under a new identifier).
    """
    fields = {"status": status, "error": note, "updated": timezone.now()}
    if status == Status.SENT:
        fields["sent_at"] = fields["updated"]
    UsageReport.objects.filter(pk=report.pk, status=Status.PENDING).update(**fields)
    report.refresh_from_db()
    return report


def stripe_units_of_sent(report: UsageReport) -> Decimal:
    """What the other sent rows of the row's period put in Stripe's meter."""
    return period_rows(key_of(report)).filter(status=Status.SENT).exclude(pk=report.pk).aggregate(
        total=Sum("value_sent", default=Decimal(0))
    )["total"]


def judge_by_summary(report: UsageReport, stripe_units: Decimal) -> str:
    """
    Whether Stripe's meter summary of a row's period "holds" the row (it equals what the
    period's sent rows sent, this one included), "lacks" it (the sent rows without it),
    or is "unclear" (neither: an operator must look).
    """
    sent = stripe_units_of_sent(report)
    if stripe_units == sent + report.value_sent:
        return "holds"
    return "lacks" if stripe_units == sent else "unclear"


def resolve_beyond_dedupe(report: UsageReport, stripe_units: Decimal) -> UsageReport:
    """
    A pending row older than Stripe's identifier dedupe window can no longer be resent
    safely; Stripe's meter summary of its period (settled by then) says whether it
    landed. Stripe holds what the period's sent rows sent plus this row: it is sent.
    Stripe holds only the sent rows: it never landed, so it fails, and the period's
    next report sends its usage under a new identifier. Anything else stays pending,
    with both numbers, for an operator (resending could count twice, dropping lose).
    """
    now = timezone.now()
    verdict = judge_by_summary(report, stripe_units)
    if verdict == "holds":
        fields = {"status": Status.SENT, "sent_at": now, "error": "landed: Stripe's meter summary of the period holds it"}
    elif verdict == "lacks":
        fields = {"status": Status.FAILED, "error": "never reached Stripe (its meter summary of the period lacks it); the period's next report sends the usage"}
    else:
        sent = stripe_units_of_sent(report)
        fields = {"error": (
            f"outcome unknown and not resent (past Stripe's 24-hour dedupe window a resend could count twice). "
            f"Stripe's meter summary of the period holds {stripe_units.normalize():f}, the ledger's sent reports "
            f"{sent.normalize():f}, this one {report.value_sent.normalize():f}: check the customer's meter events in "
            "Stripe, then settle it (resolve_report, or the audit's \"Settle reports in doubt\")."
        )}
    UsageReport.objects.filter(pk=report.pk, status=Status.PENDING).update(updated=now, **fields)
    report.refresh_from_db()
    return report
