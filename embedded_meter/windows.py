"""
Query windows (OpenMeter's WindowSize: MINUTE, HOUR, DAY, MONTH) aligned in a time zone
(windowTimeZone: an IANA name, UTC by default). All window arithmetic is here, so the
SQL grouping (selectors.query), the alignment checks on `from`/`to` and the defaults
agree to the microsecond.

Invariants:
- A window is [start, end) in real time; start and end are aware UTC datetimes and
  consecutive windows touch (one's end is the next one's start).
- DAY and MONTH windows are calendar days and months of the zone: from local midnight
  to the next local midnight (23 or 25 hours across a DST change). A local midnight that
  does not exist (clocks jump at midnight) is the moment the clocks jump; one that
  happens twice is the first.
- MINUTE and HOUR windows last exactly one minute or hour: they start where the zone's
  wall clock shows a whole minute or hour, at the offset in force then, so the hour that
  repeats when clocks go back is two windows, and Asia/Kolkata's hours start at :30 UTC.
- In UTC every window is the plain UTC truncation (what billing reads).
"""

from datetime import UTC, datetime, time, timedelta, tzinfo
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

from dateutil.relativedelta import relativedelta

from epsilon.timewindows import WindowSize

MONTH = "MONTH"
#: OpenMeter's WindowSize enum; meters are defined with the first three only.
QUERY_WINDOW_SIZES = (*WindowSize.values, MONTH)
FIXED = {WindowSize.MINUTE: timedelta(minutes=1), WindowSize.HOUR: timedelta(hours=1)}
#: The names Trunc takes.
TRUNC_KIND = {WindowSize.MINUTE: "minute", WindowSize.HOUR: "hour", WindowSize.DAY: "day", MONTH: "month"}
UTC_NAMES = ("UTC", "Etc/UTC")


@cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def get_zone(name: str) -> tzinfo:
    """The IANA zone `name` (UTC itself for UTC), or ValueError."""
    if name in UTC_NAMES:
        return UTC
    if name not in _zone_names():
        raise ValueError(f"must be an IANA time zone name such as UTC or Europe/Berlin, got {name!r}")
    return ZoneInfo(name)


def is_utc(zone: tzinfo) -> bool:
    return zone is UTC


def _to_utc(local: datetime, zone: tzinfo) -> datetime:
    """A naive wall-clock time of `zone` as a UTC instant: fold=0 takes the first of a
    repeated time and, for a skipped one, the moment the clocks jumped."""
    return local.replace(tzinfo=zone, fold=0).astimezone(UTC)


def _next_calendar_start(day: datetime, window_size: str) -> datetime:
    """The (naive, midnight) start of the DAY or MONTH window after the one starting at `day`."""
    return day + (timedelta(days=1) if window_size == WindowSize.DAY else relativedelta(months=1))


def floor(moment: datetime, window_size: str, zone: tzinfo = UTC) -> datetime:
    """The start of the window that holds `moment`."""
    local = moment.astimezone(zone).replace(tzinfo=None)
    if window_size in FIXED:
        unit = local.replace(second=0, microsecond=0)
        if window_size == WindowSize.HOUR:
            unit = unit.replace(minute=0)
        return (moment - (local - unit)).astimezone(UTC)
    day = datetime.combine(local.date(), time())
    if window_size == MONTH:
        day = day.replace(day=1)
    return _to_utc(day, zone)


def next_start(start: datetime, window_size: str, zone: tzinfo = UTC) -> datetime:
    """The end of the window starting at `start` (a window start)."""
    if window_size in FIXED:
        return start + FIXED[window_size]
    local = datetime.combine(start.astimezone(zone).date(), time())
    if window_size == MONTH:
        local = local.replace(day=1)
    return _to_utc(_next_calendar_start(local, window_size), zone)


def ceil(moment: datetime, window_size: str, zone: tzinfo = UTC) -> datetime:
    """`moment` if it starts a window, else the end of its window."""
    start = floor(moment, window_size, zone)
    return moment if start == moment else next_start(start, window_size, zone)


def is_aligned(moment: datetime, window_size: str, zone: tzinfo = UTC) -> bool:
    return floor(moment, window_size, zone) == moment


def needs_offset(window_size: str, zone: tzinfo) -> bool:
    """MINUTE and HOUR windows of a zone with DST need the UTC offset next to the local
    truncation, or the repeated hour would be one window (see from_key)."""
    return window_size in FIXED and not is_utc(zone)


def from_key(local: datetime, window_size: str, zone: tzinfo, offset: timedelta | None = None) -> tuple[datetime, datetime]:
    """(start, end) of the window whose SQL key is the zone's truncated wall-clock time
    `local` (naive) and, where needs_offset, the UTC offset of its events."""
    start = (local - offset).replace(tzinfo=UTC) if offset is not None else _to_utc(local, zone)
    return start, next_start(start, window_size, zone)
