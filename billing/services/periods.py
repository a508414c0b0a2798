"""
Window-aligned billing periods.

Usage is aggregated in windows (minute, hour or day, per meter), so a billing period
is reported from its start rounded down to the window up to its end rounded down to
the window. Consecutive periods therefore tile time with no gap and no overlap: a
period ending at 13:45 is reported up to 13:00 and its 13:00-13:45 usage falls in the
next period, which starts at 13:00.
"""

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from epsilon.timewindows import floor_to_window

# Stripe accepts meter event timestamps from 35 days ago up to 5 minutes ahead.
STRIPE_TIMESTAMP_MAX_AGE = timedelta(days=35)
STRIPE_TIMESTAMP_MAX_AHEAD = timedelta(minutes=5)


@dataclass(frozen=True)
class AlignedPeriod:
    """
    A billing period as Stripe has it, and the span of usage it is reported for.

    Where a period rolls over into the next one of the same service, its bound is
    rounded down to the meter's window (the rest belongs to the next period). Where
    service begins or ends inside a period (a subscription or item starts, is replaced,
    removed or cancelled), there is no neighbour to take the rest: the bound is rounded
    down to the minute, the finest a usage source keeps, so neither usage from before
    the service began nor the last partial window before it ended is misplaced.
    """

    billing_start: datetime
    billing_end: datetime
    start: datetime
    end: datetime
    window_size: str
    service_starts: bool = False
    service_ends: bool = False

    @classmethod
    def of(
        cls, billing_start: datetime, billing_end: datetime, window_size: str, *,
        service_starts: bool = False, service_ends: bool = False,
    ) -> "AlignedPeriod":
        return cls(
            billing_start=billing_start.astimezone(UTC),
            billing_end=billing_end.astimezone(UTC),
            start=floor_to_window(billing_start, "MINUTE" if service_starts else window_size),
            end=floor_to_window(billing_end, "MINUTE" if service_ends else window_size),
            window_size=window_size.upper(),
            service_starts=service_starts,
            service_ends=service_ends,
        )

    @classmethod
    def recorded(cls, billing_start, billing_end, start, end, window_size) -> "AlignedPeriod":
        """A period as a ledger row recorded it (bounds off the window mark service)."""
        return cls(
            billing_start, billing_end, start, end, window_size,
            service_starts=start != floor_to_window(billing_start, window_size),
            service_ends=end != floor_to_window(billing_end, window_size),
        )

    def in_windows(self, window_size: str) -> "AlignedPeriod":
        """The same billing period, counted in other windows."""
        return AlignedPeriod.of(
            self.billing_start, self.billing_end, window_size,
            service_starts=self.service_starts, service_ends=self.service_ends,
        )

    def ending(self, billing_end: datetime, *, service_ends: bool = False) -> "AlignedPeriod":
        """This period, ending earlier (an anchor reset, a replacement, a cancellation)."""
        end = floor_to_window(billing_end, "MINUTE" if service_ends else self.window_size)
        return replace(
            self, billing_end=billing_end.astimezone(UTC), end=max(self.start, end), service_ends=service_ends
        )

    def query_window(self, usage_until: datetime) -> str:
        """The coarsest window [start, usage_until) is made of: the meter's, or minutes."""
        aligned = all(floor_to_window(t, self.window_size) == t for t in (self.start, usage_until))
        return self.window_size if aligned else "MINUTE"

    @property
    def is_empty(self) -> bool:
        """A period shorter than a window reports nothing; its usage goes to the next."""
        return self.end <= self.start

    def usage_until(self, as_of: datetime) -> datetime:
        """Usage is counted up to the last whole window before `as_of`, within the period."""
        if as_of >= self.billing_end:
            return self.end
        return max(self.start, min(self.end, floor_to_window(as_of, self.window_size)))

    def event_timestamp(self, usage_until: datetime) -> datetime:
        """
        When a meter event covering [start, usage_until) is stamped. Stripe bills an
        event in the period that contains its timestamp, so it must fall inside Stripe's
        own period, [billing_start, billing_end), as well as in the usage it covers:
        the last second before `usage_until`, but never before the period began.
        """
        return max(self.billing_start, usage_until - timedelta(seconds=1))


def timestamp_rejection(timestamp: datetime, now: datetime) -> str | None:
    """Why Stripe would refuse a meter event at `timestamp`, or None if it accepts it."""
    if timestamp < now - STRIPE_TIMESTAMP_MAX_AGE:
        return (
            f"the meter event timestamp {timestamp:%Y-%m-%d %H:%M:%S} UTC is more than 35 days "
            "old; Stripe no longer accepts usage for it"
        )
    if timestamp > now + STRIPE_TIMESTAMP_MAX_AHEAD:
        return (
            f"the meter event timestamp {timestamp:%Y-%m-%d %H:%M:%S} UTC is more than 5 minutes "
            "ahead of now; check this machine's clock"
        )
    return None
