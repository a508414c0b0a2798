"""
Window-aligned billing periods.

Usage is aggregated in windows (minute, hour or day, per meter), so a billing period
is reported from its start rounded down to the window up to its end rounded down to
the window. Consecutive periods therefore tile time with no gap and no overlap: a
period ending at 13:45 is reported up to 13:00 and its 13:00-13:45 usage falls in the
next period, which starts at 13:00.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

WINDOWS = {
    "MINUTE": timedelta(minutes=1),
    "HOUR": timedelta(hours=1),
    "DAY": timedelta(days=1),
}
# Stripe accepts meter event timestamps from 35 days ago up to 5 minutes ahead.
STRIPE_TIMESTAMP_MAX_AGE = timedelta(days=35)
STRIPE_TIMESTAMP_MAX_AHEAD = timedelta(minutes=5)


def window_of(window_size: str) -> timedelta:
    try:
        return WINDOWS[window_size.upper()]
    except KeyError:
        raise ValueError(
            f"Unknown window size {window_size!r}: use one of {', '.join(WINDOWS)}"
        ) from None


def floor_to_window(moment: datetime, window_size: str) -> datetime:
    """The start of the UTC window that contains `moment`."""
    if moment.utcoffset() is None:
        raise ValueError(f"{moment!r} has no timezone: billing times must be aware")
    moment = moment.astimezone(UTC)
    if window_size.upper() == "DAY":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if window_size.upper() == "HOUR":
        return moment.replace(minute=0, second=0, microsecond=0)
    window_of(window_size)  # rejects unknown sizes
    return moment.replace(second=0, microsecond=0)


@dataclass(frozen=True)
class AlignedPeriod:
    """A billing period as Stripe has it, and as it is reported: rounded to windows."""

    billing_start: datetime
    billing_end: datetime
    start: datetime
    end: datetime
    window_size: str

    @classmethod
    def of(cls, billing_start: datetime, billing_end: datetime, window_size: str) -> "AlignedPeriod":
        return cls(
            billing_start=billing_start.astimezone(UTC),
            billing_end=billing_end.astimezone(UTC),
            start=floor_to_window(billing_start, window_size),
            end=floor_to_window(billing_end, window_size),
            window_size=window_size.upper(),
        )

    @property
    def is_empty(self) -> bool:
        """A period shorter than a window reports nothing; its usage goes to the next."""
        return self.end <= self.start

    def usage_until(self, as_of: datetime) -> datetime:
        """Usage is counted up to the last whole window before `as_of`, within the period."""
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
