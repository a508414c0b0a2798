"""
An in-memory usage source for engine tests: it really sums recorded usage, exactly,
over each requested [start, end), and counts how it was queried.
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from billing.usage_sources import UsageSource, UsageSourceError


@dataclass
class RecordedEvent:
    meter_slug: str
    subject: str
    time: datetime
    value: Decimal


class RecordedUsage(UsageSource):
    name = "recorded"

    def __init__(self):
        self.events: list[RecordedEvent] = []
        self.queries: list[tuple[str, int]] = []
        self.failing_meters: dict[str, str] = {}
        self.overrides: dict[str, object] = {}  # subject -> what totals() returns for it

    def add(self, subject: str, time: datetime, value, meter_slug: str = "m1") -> None:
        self.events.append(RecordedEvent(meter_slug, subject, time, Decimal(str(value))))

    def total(self, subject: str, start: datetime, end: datetime, meter_slug: str = "m1") -> Decimal:
        return sum(
            (e.value for e in self.events
             if e.meter_slug == meter_slug and e.subject == subject and start <= e.time < end),
            Decimal(0),
        )

    def totals(self, meter_slug, window_size, requests):
        self.queries.append((meter_slug, len(requests)))
        if meter_slug in self.failing_meters:
            raise UsageSourceError(self.failing_meters[meter_slug])
        answers = defaultdict(Decimal)
        for request in requests:
            if request.subject in self.overrides:
                answers[request] = self.overrides[request.subject]
            else:
                answers[request] = self.total(request.subject, request.start, request.end, meter_slug)
        return dict(answers)
