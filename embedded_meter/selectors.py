"""
Windowed aggregation in SQL, shared by the UsageSource (`totals`) and the
OpenMeter-compatible query endpoint (`meter_query`, `query`).

`query` groups by window in SQL, in any IANA zone and by MINUTE, HOUR, DAY or MONTH:
the key is the zone's truncated wall-clock time (plus the UTC offset for MINUTE and
HOUR, so the hour repeated when clocks go back stays two windows), turned into exact
UTC bounds by windows.py, the same helper that checks `from`/`to` alignment. UTC (the
default, and what billing reads) is the plain UTC truncation it always was.

`totals` answers any number of (subject, [start, end)) requests in one query per
chunk: requests sharing a period become one `subject IN (...)` branch, branches are
OR-ed, and the result is grouped by subject. Every request is aggregated over its own
exact range, so SUM, COUNT, MAX and UNIQUE_COUNT all hold per request (MAX and
UNIQUE_COUNT are not additive across windows, so nothing is combined in Python).
A chunk holds up to 400 periods on SQLite (its expression depth limit) and thousands on
PostgreSQL, each with any number of subjects; a subject asked twice in one call (two
periods) goes to a second round, since rows are grouped by subject.

On PostgreSQL, a chunk of several periods is not an OR of branches but the same condition
as a semi-join: `subject IN (...)` and the periods' overall range (indexable), and EXISTS
a (subject, start, end) among three arrays with the event's subject and start <= time < end.
A thousand OR-ed branches made the planner's cost estimate cross jit_optimize_above_cost,
and LLVM then spent over a minute compiling the OR in every parallel worker (88 s for
1,000 subjects with a period each over 1M events; 0.7 s as a semi-join; bench/README.md).
"""

import logging
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from functools import reduce
from operator import or_

from django.db import NotSupportedError, connection
from django.db.models import BooleanField, Count, Expression, F, Q
from django.db.models.functions import Trunc, TruncSecond

from epsilon.usage import UsageRequest

from . import windows
from .expressions import DecimalMax, DecimalSum, GroupValue, NumericValue, StringValue
from .models import WINDOW_ORDER, Aggregation, Event, MeterDefinition

logger = logging.getLogger(__name__)

SQLITE_MAX_BRANCHES = 400  # each OR adds a level to SQLite's parse tree (limit 1000)
POSTGRES_MAX_BRANCHES = 5000
MAX_PARAMS = 30000  # under PostgreSQL's 65535 with server-side binding


@dataclass(frozen=True)
class Row:
    """One MeterQueryRow: the value of a window (or the whole range) for a subject/group."""

    value: Decimal
    window_start: datetime
    window_end: datetime
    subject: str | None = None
    group_by: dict = field(default_factory=dict)


def floor_window(moment: datetime, window_size: str, zone: tzinfo = UTC) -> datetime:
    return windows.floor(moment, window_size, zone)


def is_aligned(moment: datetime, window_size: str, zone: tzinfo = UTC) -> bool:
    return windows.is_aligned(moment, window_size, zone)


def finer_than(window_size: str, other: str) -> bool:
    return WINDOW_ORDER[window_size] < WINDOW_ORDER[other]


def _aggregates(meter: MeterDefinition) -> dict:
    """`value` plus, where a value property is read, `events` and `valued` counts."""
    if meter.aggregation == Aggregation.COUNT:
        return {"value": Count("pk")}
    keys = meter.value_keys
    if meter.aggregation == Aggregation.UNIQUE_COUNT:
        value, valid = Count(StringValue(keys), distinct=True), StringValue(keys)
    elif meter.aggregation == Aggregation.SUM:
        value, valid = DecimalSum(NumericValue(keys)), NumericValue(keys)
    elif meter.aggregation == Aggregation.MAX:
        value, valid = DecimalMax(NumericValue(keys)), NumericValue(keys)
    else:  # a row edited outside the admin
        raise ValueError(f"meter {meter.slug}: unsupported aggregation {meter.aggregation!r}")
    return {"value": value, "events": Count("pk"), "valued": Count(valid)}


def to_decimal(raw) -> Decimal:
    if raw is None:
        return Decimal(0)
    value = Decimal(raw if isinstance(raw, (int, str)) else str(raw))
    # "1.5E+3" from a summed "1.5e3" reads as 1500.
    return value.quantize(Decimal(1)) if value.as_tuple().exponent > 0 else value


class _Skipped:
    """Events of the meter's type whose value property was unusable: logged, never silent."""

    def __init__(self, meter):
        self.meter, self.count = meter, 0

    def add(self, row):
        self.count += row.get("events", 0) - row.get("valued", 0)

    def report(self):
        if self.count:
            logger.warning(
                "embedded meter %s: ignored %d %s event(s) without a usable value at %s "
                "(stored before the meter required it?)",
                self.meter.slug, self.count, self.meter.event_type, self.meter.value_property,
            )


def _events(meter: MeterDefinition):
    events = Event.objects.all()
    if meter.event_from:
        events = events.filter(time__gte=meter.event_from)
    return events


def _limits() -> tuple[int, int]:
    if connection.vendor == "sqlite":
        connection.ensure_connection()
        variables = connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        return SQLITE_MAX_BRANCHES, min(MAX_PARAMS, variables - 100)
    return POSTGRES_MAX_BRANCHES, MAX_PARAMS


def _plan(requests: Iterable[UsageRequest]) -> list[dict[tuple[datetime, datetime], list[str]]]:
    """Queries to run: each maps periods to subjects, with every subject at most once."""
    rounds: list[dict[tuple, list[str]]] = []
    seen: list[set[str]] = []
    for request in requests:
        i = next((i for i, subjects in enumerate(seen) if request.subject not in subjects), None)
        if i is None:
            rounds.append(defaultdict(list))
            seen.append(set())
            i = len(rounds) - 1
        seen[i].add(request.subject)
        rounds[i][(request.start, request.end)].append(request.subject)

    max_branches, max_params = _limits()
    queries = []
    for periods in rounds:
        query, branches, params = {}, 0, 0
        for period, subjects in sorted(periods.items()):
            for i in range(0, len(subjects), max_params):
                part = subjects[i : i + max_params]
                if query and (branches + 1 > max_branches or params + len(part) + 3 > max_params):
                    queries.append(query)
                    query, branches, params = {}, 0, 0
                query.setdefault(period, []).extend(part)
                branches, params = branches + 1, params + len(part) + 3
        if query:
            queries.append(query)
    return queries


class _InPeriods(Expression):
    """PostgreSQL: the event's subject is one of `subjects` and its time in that subject's
    [start, end) (the three lists are aligned: one entry per subject)."""

    output_field = BooleanField()
    conditional = True

    def __init__(self, subjects: list[str], starts: list[datetime], ends: list[datetime]):
        super().__init__()
        self.periods = (subjects, starts, ends)
        self.columns = [F("subject"), F("time")]

    def get_source_expressions(self):
        return self.columns

    def set_source_expressions(self, exprs):
        self.columns = exprs

    def as_sql(self, compiler, connection):
        raise NotSupportedError("_InPeriods is PostgreSQL only; SQLite ORs the periods")

    def as_postgresql(self, compiler, connection):
        subject, subject_params = compiler.compile(self.columns[0])
        time, time_params = compiler.compile(self.columns[1])
        sql = (
            "EXISTS (SELECT 1 FROM unnest(%s::text[], %s::timestamptz[], %s::timestamptz[]) "
            "AS period(subject, period_start, period_end) "
            f"WHERE period.subject = {subject} AND {time} >= period.period_start AND {time} < period.period_end)"
        )
        return sql, (*self.periods, *subject_params, *time_params, *time_params)


def _condition(meter: MeterDefinition, query: dict[tuple[datetime, datetime], list[str]]) -> Q:
    """Events of the query's requests: each subject (at most once here) in its own period."""
    if connection.vendor == "postgresql" and len(query) > 1:
        periods = [(subject, start, end) for (start, end), subjects in query.items() for subject in subjects]
        subjects, starts, ends = (list(column) for column in zip(*periods))
        # subject IN and the overall range are implied by _InPeriods: they are there for the index.
        return Q(
            Q(type=meter.event_type, subject__in=subjects, time__gte=min(starts), time__lt=max(ends)),
            _InPeriods(subjects, starts, ends),
        )
    return reduce(
        or_,
        (
            Q(type=meter.event_type, subject__in=subjects, time__gte=start, time__lt=end)
            for (start, end), subjects in query.items()
        ),
    )


def totals(meter: MeterDefinition, requests: Sequence[UsageRequest]) -> dict[UsageRequest, Decimal]:
    """The meter's exact total over each request's [start, end); 0 without usage."""
    result = {request: Decimal(0) for request in requests}
    aggregates = _aggregates(meter)
    skipped = _Skipped(meter)
    for query in _plan(r for r in result if r.end > r.start):
        condition = _condition(meter, query)
        rows = _events(meter).filter(condition).values("subject").annotate(**aggregates).order_by()
        by_subject = {row["subject"]: row for row in rows}
        for (start, end), subjects in query.items():
            for subject in subjects:
                row = by_subject.get(subject)
                if row:
                    result[UsageRequest(subject, start, end)] = to_decimal(row["value"])
                    skipped.add(row)
    skipped.report()
    return result


def first_event_time(meter: MeterDefinition, subjects: Sequence[str] = ()) -> datetime | None:
    events = _events(meter).filter(type=meter.event_type)
    if subjects:
        events = events.filter(subject__in=subjects)
    return events.order_by("time").values_list("time", flat=True).first()


def query(
    meter: MeterDefinition,
    *,
    start: datetime,
    end: datetime,
    window_size: str | None = None,
    subjects: Sequence[str] = (),
    group_by_subject: bool = False,
    group_by: Sequence[str] = (),
    zone: tzinfo = UTC,
) -> list[Row]:
    """
    MeterQueryRows over [start, end): one per window (if window_size) and per subject
    and group, only where there were events, in window order. Windows are aligned in
    `zone` (windows.py); start and end must be aligned to window_size there.
    """
    events = _events(meter).filter(type=meter.event_type, time__gte=start, time__lt=end)
    if subjects:
        events = events.filter(subject__in=list(subjects))
    annotations, fields, order = {}, [], []
    if window_size:
        # The zone's truncated wall-clock time, and (windows.needs_offset) the UTC offset,
        # which tells the two occurrences of a repeated hour apart.
        annotations["window"] = Trunc("time", windows.TRUNC_KIND[window_size], tzinfo=zone)
        fields.append("window")
        order.append("window")
        if windows.needs_offset(window_size, zone):
            annotations["window_offset"] = TruncSecond("time", tzinfo=zone) - TruncSecond("time", tzinfo=UTC)
            fields.append("window_offset")
            order.append(F("window_offset").desc())  # the larger offset is the earlier hour
    if group_by_subject:
        fields.append("subject")
        order.append("subject")
    group_keys = meter.group_by_keys
    for key in group_by:
        annotations[f"group_{key}"] = GroupValue(group_keys[key])
        fields.append(f"group_{key}")
        order.append(f"group_{key}")
    aggregates = _aggregates(meter)
    if fields:
        rows = list(events.annotate(**annotations).values(*fields).annotate(**aggregates).order_by(*order))
    else:
        row = events.aggregate(**aggregates, count=Count("pk"))
        rows = [row] if row["count"] else []
    skipped = _Skipped(meter)
    result = []
    for row in rows:
        skipped.add(row)
        if window_size:
            window_start, window_end = windows.from_key(
                row["window"].replace(tzinfo=None), window_size, zone, row.get("window_offset")
            )
        else:
            window_start, window_end = start, end
        result.append(
            Row(
                value=to_decimal(row["value"]),
                window_start=window_start,
                window_end=window_end,
                subject=row["subject"] if group_by_subject else None,
                group_by={key: row[f"group_{key}"] for key in group_by},
            )
        )
    skipped.report()
    return result


@dataclass(frozen=True)
class MeterQuery:
    """A validated queryMeter / queryMeterPost request (forms.MeterQueryForm)."""

    start: datetime | None = None
    end: datetime | None = None
    window_size: str | None = None
    zone: tzinfo = UTC
    subjects: tuple[str, ...] = ()
    group_by_subject: bool = False
    group_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class QueryResult:
    """A MeterQueryResult: `start` is None when there is no event to start from."""

    start: datetime | None
    end: datetime
    window_size: str | None
    rows: list[Row]


def meter_query(meter: MeterDefinition, q: MeterQuery, now: datetime) -> QueryResult:
    """
    OpenMeter's defaults: `to` is now (rounded up to a window end when windowed), `from`
    the window of the first matching event ("the beginning of time").
    """
    window = q.window_size
    end = q.end or now
    if window:
        end = windows.ceil(end, window, q.zone)
    start = q.start
    if start is None:
        first = first_event_time(meter, q.subjects)
        if first is None:
            return QueryResult(None, end, window, [])
        start = windows.floor(first, window or meter.window_size, q.zone)
    rows = query(
        meter,
        start=start,
        end=end,
        window_size=window,
        subjects=q.subjects,
        group_by_subject=q.group_by_subject,
        group_by=q.group_by,
        zone=q.zone,
    )
    return QueryResult(start, end, window, rows)
