"""Billing period arithmetic (UTC, integer timestamps).

Periods are counted from the billing cycle anchor, not chained from the
previous period, so an anchor on Jan 31 gives Feb 28 (29 in leap years),
then Mar 31, Apr 30, ... as Stripe does.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Tuple

from dateutil.relativedelta import relativedelta

_SECONDS = {"day": 86400, "week": 7 * 86400}


def boundary(anchor: int, interval: str, count: int, n: int) -> int:
    """The start of the n-th period after `anchor` (n=0 is the anchor itself)."""
    if interval in _SECONDS:
        return anchor + n * count * _SECONDS[interval]
    dt = datetime.fromtimestamp(anchor, tz=timezone.utc)
    months = n * count * (12 if interval == "year" else 1)
    return int((dt + relativedelta(months=months)).timestamp())  # day clamped to the month


def period_containing(anchor: int, interval: str, count: int, t: int) -> Tuple[int, int]:
    """[start, end) of the period, counted from `anchor`, that contains `t` (t >= anchor)."""
    approx = {"day": 86400, "week": 7 * 86400, "month": 28 * 86400, "year": 365 * 86400}
    n = max(0, (t - anchor) // (approx[interval] * count) - 1)
    # The estimate never overshoots by more than one period; step back, then forward.
    while n > 0 and boundary(anchor, interval, count, n) > t:
        n -= 1
    while boundary(anchor, interval, count, n + 1) <= t:
        n += 1
    return boundary(anchor, interval, count, n), boundary(anchor, interval, count, n + 1)


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")



