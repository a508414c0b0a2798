import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from billing.usage_sources import UsageRequest, UsageSourceError, get_usage_source
from embedded_meter import selectors, services
from embedded_meter.models import Event
from billing.usage_sources.embedded import EmbeddedUsageSource

from .conftest import cloudevent, make_meter

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)
WINDOWS = {"MINUTE": timedelta(minutes=1), "HOUR": timedelta(hours=1), "DAY": timedelta(days=1)}
US = timedelta(microseconds=1)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def store(*events):
    """(subject, time, value) tuples as test.event events, through the ingest service."""
    services.ingest_events(
        [cloudevent(type="test.event", subject=s, time=iso(t), data={"value": v}) for s, t, v in events]
    )


def totals(slug, window, *requests):
    return EmbeddedUsageSource().totals(slug, window, [UsageRequest(*r) for r in requests])


def test_the_registry_returns_this_source():
    assert isinstance(get_usage_source(), EmbeddedUsageSource)


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize(
    "aggregation, expected", [("SUM", Decimal(1 + 4)), ("COUNT", Decimal(2)), ("MAX", Decimal(4))]
)
def test_boundaries_start_included_end_excluded(window, aggregation, expected):
    make_meter(aggregation=aggregation, window_size=window)
    start, end = T0, T0 + WINDOWS[window]
    store(
        ("cus_A", start - US, 1000),  # before the period
        ("cus_A", start, 1),  # at start: included
        ("cus_A", end - US, 4),  # last microsecond: included
        ("cus_A", end, 2000),  # at end: excluded (next period)
        ("cus_B", start, 3000),  # another subject
    )
    result = totals("m_test", window, ("cus_A", start, end))
    assert result == {UsageRequest("cus_A", start, end): expected}


@pytest.mark.parametrize("window", WINDOWS)
def test_unique_count_boundaries(window):
    make_meter(aggregation="UNIQUE_COUNT", window_size=window)
    start, end = T0, T0 + WINDOWS[window]
    store(("cus_A", start - US, "x"), ("cus_A", start, "a"), ("cus_A", end - US, "b"), ("cus_A", end - US, "a"), ("cus_A", end, "y"))
    assert totals("m_test", window, ("cus_A", start, end))[UsageRequest("cus_A", start, end)] == 2


def test_max_and_unique_count_are_computed_over_each_exact_range():
    # Not additive across windows: hour 1 {a, b} max 9, hour 2 {b, c} max 5.
    hour = timedelta(hours=1)
    make_meter(slug="peak", aggregation="MAX", value_property="$.value", window_size="HOUR")
    make_meter(slug="users", event_type="login", aggregation="UNIQUE_COUNT", value_property="$.user", window_size="HOUR")
    store(("cus_A", T0, 9), ("cus_A", T0 + hour, 5), ("cus_A", T0 + hour + US, 3))
    services.ingest_events(
        [
            cloudevent(type="login", time=iso(T0 + timedelta(minutes=m)), data={"user": u})
            for m, u in [(1, "a"), (2, "b"), (61, "b"), (62, "c")]
        ]
    )
    both, first, second = (T0, T0 + 2 * hour), (T0, T0 + hour), (T0 + hour, T0 + 2 * hour)
    peak = totals("peak", "HOUR", ("cus_A", *both), ("cus_A", *first), ("cus_A", *second))
    assert list(peak.values()) == [9, 9, 5]
    users = totals("users", "HOUR", ("cus_A", *both), ("cus_A", *first), ("cus_A", *second))
    assert list(users.values()) == [3, 2, 2]


def test_no_usage_is_zero_and_an_empty_period_is_zero():
    make_meter()
    result = totals("m_test", "MINUTE", ("cus_none", T0, T0 + WINDOWS["DAY"]), ("cus_A", T0, T0))
    assert list(result.values()) == [Decimal(0), Decimal(0)]


def test_sums_are_exact_decimals():
    make_meter()
    store(
        ("cus_A", T0, 0.1),
        ("cus_A", T0, 0.2),
        ("cus_A", T0, "0.30000000000000000001"),
        ("cus_A", T0, 12345678901234567890123),
        ("cus_A", T0, "-1.5e3"),
    )
    [total] = totals("m_test", "MINUTE", ("cus_A", T0, T0 + WINDOWS["HOUR"])).values()
    assert isinstance(total, Decimal)
    assert total == Decimal("12345678901234567888623.60000000000000000001")


def test_max_is_exact():
    make_meter(aggregation="MAX")
    store(("cus_A", T0, "99999999999999999999.000000000000000001"), ("cus_A", T0, 99999999999999999999))
    [peak] = totals("m_test", "MINUTE", ("cus_A", T0, T0 + WINDOWS["HOUR"])).values()
    assert peak == Decimal("99999999999999999999.000000000000000001")


def test_events_without_a_usable_value_are_ignored_but_logged(caplog):
    # Stored before the meter existed, so ingest could not refuse them.
    for value in ("fast", None, True):
        Event.objects.create(event_id=f"old-{value}", source="s", type="test.event", subject="cus_A", time=T0, data={"value": value})
    Event.objects.create(event_id="old-nodata", source="s", type="test.event", subject="cus_A", time=T0, data=None)
    make_meter()
    store(("cus_A", T0, 7))
    with caplog.at_level(logging.WARNING, logger="embedded_meter"):
        [total] = totals("m_test", "MINUTE", ("cus_A", T0, T0 + WINDOWS["HOUR"])).values()
    assert total == 7
    assert "ignored 4 test.event event(s)" in caplog.text


def test_many_subjects_take_a_constant_number_of_queries(django_assert_num_queries):
    make_meter(window_size="HOUR")
    subjects = [f"cus_{i:04d}" for i in range(300)]
    store(*[(s, T0 + timedelta(minutes=i % 50), i) for i, s in enumerate(subjects)])
    # Half share one period; the other half each have their own (different billing anchors).
    requests = [(s, T0, T0 + WINDOWS["DAY"]) for s in subjects[:150]] + [
        (s, T0 + timedelta(hours=-i), T0 + WINDOWS["DAY"]) for i, s in enumerate(subjects[150:])
    ]
    with django_assert_num_queries(2):  # the meter definition, then one aggregate query
        result = totals("m_test", "HOUR", *requests)
    assert list(result.values()) == [Decimal(i) for i in range(300)]


def test_more_periods_than_fit_one_query_are_chunked_not_per_subject(django_assert_max_num_queries):
    make_meter(window_size="HOUR")
    subjects = [f"cus_{i:04d}" for i in range(selectors.SQLITE_MAX_BRANCHES + 50)]
    store(*[(s, T0, 1) for s in subjects])
    requests = [(s, T0 - timedelta(hours=i), T0 + WINDOWS["HOUR"]) for i, s in enumerate(subjects)]
    with django_assert_max_num_queries(3):
        result = totals("m_test", "HOUR", *requests)
    assert set(result.values()) == {Decimal(1)}


def test_a_subject_asked_for_two_periods_gets_each():
    make_meter(window_size="HOUR")
    store(("cus_A", T0, 1), ("cus_A", T0 + WINDOWS["HOUR"], 2))
    day = T0 + WINDOWS["DAY"]
    result = totals("m_test", "HOUR", ("cus_A", T0, day), ("cus_A", T0 + WINDOWS["HOUR"], day))
    assert list(result.values()) == [3, 2]


def test_event_from_excludes_older_events():
    make_meter(event_from=T0 + timedelta(minutes=30))
    store(("cus_A", T0, 1), ("cus_A", T0 + timedelta(minutes=30), 2))
    assert list(totals("m_test", "MINUTE", ("cus_A", T0, T0 + WINDOWS["HOUR"])).values()) == [2]


def test_default_meter_m1_sums_billed_seconds():
    services.ingest_events([cloudevent(time=iso(T0), data={"billed_seconds": 1500}), cloudevent(time=iso(T0), data={"billed_seconds": 20})])
    assert list(totals("m1", "HOUR", ("cus_A", T0, T0 + WINDOWS["HOUR"])).values()) == [1520]


def test_unknown_meter_slug():
    with pytest.raises(UsageSourceError, match="Unknown meter slug 'nope'"):
        totals("nope", "HOUR", ("cus_A", T0, T0 + WINDOWS["HOUR"]))


def test_misaligned_period_is_refused():
    with pytest.raises(UsageSourceError, match="not aligned to HOUR"):
        totals("m1", "HOUR", ("cus_A", T0 + timedelta(minutes=5), T0 + WINDOWS["HOUR"]))


def test_window_finer_than_the_meter_is_refused(settings):
    from embedded_meter.definitions import DEFAULT_METERS

    settings.EMBEDDED_METERS = [{**DEFAULT_METERS[0], "slug": "hourly", "windowSize": "HOUR"}]
    with pytest.raises(UsageSourceError, match="cannot be read by MINUTE"):
        totals("hourly", "MINUTE", ("cus_A", T0, T0 + WINDOWS["HOUR"]))


def test_the_default_meter_keeps_minutes_for_partial_windows():
    # Billing reads where service began or ended by the minute.
    assert list(totals("m1", "MINUTE", ("cus_A", T0, T0 + WINDOWS["HOUR"])).values()) == [Decimal(0)]
