"""How a meter turns events into a number (exactly, with Decimal).

Formulas: `sum` of values, `count` of events, `last` value (latest
timestamp, then latest arrival). A meter with `event_time_window` (`hour` or
`day`) takes pre-aggregated events: per customer and window only the most
recently received event counts ("a newer event sent within the same window
overwrites the previous one").
"""

from __future__ import annotations

from decimal import Decimal
from typing import Iterable, Optional, Sequence, Tuple

Row = Tuple[int, int, Optional[str], str]  # (seq, timestamp, value, customer)

WINDOW_SECONDS = {"hour": 3600, "day": 86400}


def effective_rows(rows: Iterable[Row], event_time_window: Optional[str]) -> Sequence[Row]:
    rows = list(rows)
    if not event_time_window:
        return rows
    size = WINDOW_SECONDS[event_time_window]
    latest = {}
    for row in rows:
        key = (row[3], row[1] // size)
        if key not in latest or row[0] > latest[key][0]:
            latest[key] = row
    return sorted(latest.values(), key=lambda r: (r[1], r[0]))


def aggregate(rows: Iterable[Row], formula: str,
              event_time_window: Optional[str] = None) -> Decimal:
    rows = effective_rows(rows, event_time_window)
    if formula == "count":
        return Decimal(len(rows))
    if formula == "last":
        if not rows:
            return Decimal(0)
        last = max(rows, key=lambda r: (r[1], r[0]))
        return Decimal(last[2]) if last[2] is not None else Decimal(0)
    total = Decimal(0)
    for row in rows:
        if row[2] is not None:
            total += Decimal(row[2])
    return total


def for_meter(store, meter: dict, customer: Optional[str], start: int, end: int) -> Decimal:
    rows = store.aggregation_rows(meter["id"], customer, start, end)
    return aggregate(rows, meter["default_aggregation"]["formula"], meter.get("event_time_window"))
