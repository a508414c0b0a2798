"""
Time, as billing and the embedded meter both count it: the window sizes usage is
aggregated in (OpenMeter's MINUTE, HOUR and DAY), flooring a moment to its UTC window,
and RFC 3339 text (what OpenMeter, CloudEvents and Stripe's v2 API speak). One module
both apps import, so neither imports the other for it and no rule is written twice.
"""

from datetime import UTC, datetime, timedelta

from django.db import models


class WindowSize(models.TextChoices):
    """OpenMeter's window sizes: usage is aggregated and reported per window."""

    MINUTE = "MINUTE", "Minute"
    HOUR = "HOUR", "Hour"
    DAY = "DAY", "Day"


# Finest first.
WINDOWS: dict[str, timedelta] = {
    WindowSize.MINUTE: timedelta(minutes=1),
    WindowSize.HOUR: timedelta(hours=1),
    WindowSize.DAY: timedelta(days=1),
}


def window_of(window_size: str) -> timedelta:
    """The length of a window size; ValueError naming the allowed ones otherwise."""
    try:
        return WINDOWS[window_size.upper()]
    except KeyError:
        raise ValueError(f"Unknown window size {window_size!r}: use one of {', '.join(WINDOWS)}") from None


def floor_to_window(moment: datetime, window_size: str) -> datetime:
    """The start of the UTC window that contains `moment` (which must be aware)."""
    if moment.utcoffset() is None:
        raise ValueError(f"{moment!r} has no timezone: billing times must be aware")
    moment = moment.astimezone(UTC)
    size = window_size.upper()
    window_of(size)  # rejects unknown sizes
    if size == WindowSize.DAY:
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if size == WindowSize.HOUR:
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(second=0, microsecond=0)


def format_rfc3339(moment: datetime, *, timespec: str = "auto") -> str:
    """An aware moment as RFC 3339 text in UTC, with a "Z" (2026-12-01T13:00:00Z)."""
    if moment.utcoffset() is None:
        raise ValueError(f"{moment!r} has no timezone: RFC 3339 times carry an offset")
    return moment.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_rfc3339(text) -> datetime:
    """RFC 3339 text (a "Z" or an offset is required) as an aware datetime; ValueError otherwise."""
    if isinstance(text, datetime):
        moment = text
    else:
        moment = datetime.fromisoformat(str(text).replace("z", "Z").replace("Z", "+00:00"))
    if moment.utcoffset() is None:
        raise ValueError(f"time {text!r} has no UTC offset")
    return moment
