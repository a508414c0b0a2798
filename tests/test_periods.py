"""Billing periods are rounded down to the meter's window and tile time."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from billing.services.periods import AlignedPeriod, floor_to_window, timestamp_rejection


def utc(*args):
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        ("MINUTE", utc(2026, 11, 7, 13, 45)),
        ("HOUR", utc(2026, 11, 7, 13, 0)),
        ("DAY", utc(2026, 11, 7)),
        ("hour", utc(2026, 11, 7, 13, 0)),
    ],
)
def test_floor_to_window(window, expected):
    assert floor_to_window(utc(2026, 11, 7, 13, 45, 59, 999999), window) == expected


def test_floor_converts_other_timezones_to_utc():
    pacific = timezone(timedelta(hours=-7))
    assert floor_to_window(datetime(2026, 6, 7, 14, 30, tzinfo=pacific), "HOUR") == utc(2026, 6, 7, 21)


def test_naive_times_and_unknown_windows_are_refused():
    with pytest.raises(ValueError, match="no timezone"):
        floor_to_window(datetime(2026, 1, 1), "HOUR")
    with pytest.raises(ValueError, match="Unknown window size 'WEEK'"):
        floor_to_window(utc(2026, 1, 1), "WEEK")


def test_a_period_ending_at_1_45_pm_is_reported_up_to_1_pm():
    period = AlignedPeriod.of(utc(2026, 10, 7, 13, 45), utc(2026, 11, 7, 13, 45), "HOUR")
    assert (period.start, period.end) == (utc(2026, 10, 7, 13), utc(2026, 11, 7, 13))
    # Long after the period closed, it is still reported only up to its aligned end.
    assert period.usage_until(utc(2026, 11, 7, 13, 59)) == utc(2026, 11, 7, 13)
    assert period.usage_until(utc(2026, 12, 1)) == utc(2026, 11, 7, 13)


def test_consecutive_periods_tile_with_no_gap_and_no_overlap():
    boundaries = [utc(2026, 9, 30, 23, 59, 30), utc(2026, 10, 31, 13, 45), utc(2026, 11, 30, 13, 45, 1), utc(2026, 12, 31)]
    for window in ("MINUTE", "HOUR", "DAY"):
        periods = [AlignedPeriod.of(a, b, window) for a, b in zip(boundaries, boundaries[1:])]
        for earlier, later in zip(periods, periods[1:]):
            assert earlier.end == later.start, window


def test_period_to_date_stops_at_the_last_whole_window():
    period = AlignedPeriod.of(utc(2026, 11, 1, 9, 30), utc(2026, 12, 1, 9, 30), "HOUR")
    assert period.usage_until(utc(2026, 11, 3, 17, 59, 59)) == utc(2026, 11, 3, 17)
    assert period.usage_until(utc(2026, 11, 1, 9, 45)) == period.start  # nothing whole yet
    assert period.usage_until(utc(2026, 10, 1)) == period.start  # as-of before the period


def test_a_period_shorter_than_a_window_is_empty_and_rolls_into_the_next():
    period = AlignedPeriod.of(utc(2026, 11, 1, 9, 10), utc(2026, 11, 1, 9, 50), "HOUR")
    assert period.is_empty
    following = AlignedPeriod.of(utc(2026, 11, 1, 9, 50), utc(2026, 12, 1, 9, 50), "HOUR")
    assert following.start == period.start  # its usage is reported with the next period


def test_event_timestamps_land_inside_stripes_own_period():
    period = AlignedPeriod.of(utc(2026, 10, 7, 13, 45), utc(2026, 11, 7, 13, 45), "HOUR")
    final = period.event_timestamp(period.end)
    assert final == utc(2026, 11, 7, 12, 59, 59)
    assert period.billing_start <= final < period.billing_end
    first_hour = period.event_timestamp(utc(2026, 10, 7, 14))
    assert first_hour == utc(2026, 10, 7, 13, 59, 59) >= period.billing_start


def test_stripe_timestamp_bounds():
    now = utc(2026, 11, 25, 12)
    assert timestamp_rejection(now - timedelta(days=35) + timedelta(seconds=1), now) is None
    assert "more than 35 days old" in timestamp_rejection(now - timedelta(days=35, seconds=1), now)
    assert timestamp_rejection(now + timedelta(minutes=5), now) is None
    assert "ahead of now" in timestamp_rejection(now + timedelta(minutes=5, seconds=1), now)
