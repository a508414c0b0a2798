"""The OpenMeter usage source, against recorded OpenMeter response shapes (respx)."""

import email.utils
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import httpx
import pytest
import respx

from billing.usage_sources import UsageRequest, UsageSourceError, get_usage_source
from billing.usage_sources.openmeter import (
    MAX_RETRY_AFTER_SECONDS,
    OpenMeterClient,
    OpenMeterUsageSource,
)
from tests.openmeter_responses import SPEC_METER_QUERY_RESULT, FakeOpenMeter, ok, problem, query_result, row

URL = "https://openmeter.test"
QUERY = "/api/v1/meters/m1/query"
JAN = datetime(2025, 1, 1, tzinfo=UTC)
FEB = datetime(2025, 2, 1, tzinfo=UTC)


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def source(sleeps) -> OpenMeterUsageSource:
    client = OpenMeterClient(URL, "om_token", timeout_seconds=2.5, max_retries=3, sleep=sleeps.append)
    return OpenMeterUsageSource(client)


@pytest.fixture
def openmeter():
    with respx.mock(base_url=URL, assert_all_called=False) as router:
        yield router


def hourly(start: datetime, hours: int, count: int = 1) -> dict[datetime, int]:
    return {start + timedelta(hours=h): count for h in range(hours)}


# --- what is sent -------------------------------------------------------------------


def test_a_shared_period_is_one_query_with_the_documented_params_and_bearer_token(source, openmeter):
    route = openmeter.get(QUERY).mock(return_value=ok(query_result(JAN, FEB, [])))
    source.totals("m1", "HOUR", [UsageRequest("cus_a", JAN, FEB), UsageRequest("cus_b", JAN, FEB)])

    sent = route.calls.last.request
    assert sent.headers["Authorization"] == "Bearer om_token"
    assert sorted(sent.url.params.multi_items()) == [
        ("from", "2025-01-01T00:00:00Z"),
        ("groupBy", "subject"),
        ("subject", "cus_a"),
        ("subject", "cus_b"),
        ("to", "2025-02-01T00:00:00Z"),
    ]  # no windowSize: one aggregate per subject over the whole period


def test_periods_in_other_time_zones_are_sent_as_utc_with_z(source, openmeter):
    route = openmeter.get(QUERY).mock(return_value=ok(query_result(JAN, FEB, [])))
    paris = datetime(2025, 1, 1, 1, tzinfo=UTC).astimezone(ZoneInfo("Europe/Paris"))
    source.totals("m1", "HOUR", [UsageRequest("cus_a", paris, FEB)])
    assert route.calls.last.request.url.params["from"] == "2025-01-01T01:00:00Z"


def test_the_meter_slug_is_a_path_segment(source, openmeter):
    route = openmeter.get("/api/v1/meters/api_calls/query").mock(return_value=ok(query_result(JAN, FEB, [])))
    source.totals("api_calls", "HOUR", [UsageRequest("cus_a", JAN, FEB)])
    assert route.call_count == 1


def test_no_token_sends_no_authorization_header(sleeps, openmeter):
    route = openmeter.get(QUERY).mock(return_value=ok(query_result(JAN, FEB, [])))
    OpenMeterUsageSource(OpenMeterClient(URL, "", sleep=sleeps.append)).totals(
        "m1", "HOUR", [UsageRequest("cus_a", JAN, FEB)]
    )
    assert "Authorization" not in route.calls.last.request.headers


def test_the_timeout_is_explicit():
    client = OpenMeterClient(URL, "t", timeout_seconds=2.5)
    assert client._http.timeout == httpx.Timeout(2.5)


# --- batching -----------------------------------------------------------------------


def test_many_subjects_sharing_periods_make_one_query_per_period(source, openmeter):
    march = datetime(2025, 3, 1, tzinfo=UTC)
    fake = FakeOpenMeter(
        {f"jan_{i}": hourly(JAN, 3, i) for i in range(80)} | {f"feb_{i}": hourly(FEB, 2, i) for i in range(50)}
    )
    route = openmeter.get(QUERY).mock(side_effect=fake)
    requests = [UsageRequest(f"jan_{i}", JAN, FEB) for i in range(80)]
    requests += [UsageRequest(f"feb_{i}", FEB, march) for i in range(50)]

    totals = source.totals("m1", "HOUR", requests)

    assert route.call_count == source.requests_made == 2
    assert [q.get("windowSize") for q in fake.queries] == [None, None]
    assert totals == {r: fake.total(r.subject, r.start, r.end) for r in requests}
    assert totals[UsageRequest("jan_7", JAN, FEB)] == Decimal(21)


def test_a_period_with_many_subjects_is_chunked_by_100(source, openmeter):
    fake = FakeOpenMeter({f"cus_{i}": hourly(JAN, 1, 1) for i in range(250)})
    openmeter.get(QUERY).mock(side_effect=fake)
    requests = [UsageRequest(f"cus_{i}", JAN, FEB) for i in range(250)]

    totals = source.totals("m1", "HOUR", requests)

    assert [len(q.get_list("subject")) for q in fake.queries] == [100, 100, 50]
    assert sorted(s for q in fake.queries for s in q.get_list("subject")) == sorted(r.subject for r in requests)
    assert set(totals.values()) == {Decimal(1)}


def test_long_subjects_are_chunked_to_keep_urls_under_8_kb(source, openmeter):
    route = openmeter.get(QUERY).mock(return_value=ok(query_result(JAN, FEB, [])))
    requests = [UsageRequest(f"{i:03d}-" + "x" * 200, JAN, FEB) for i in range(100)]
    source.totals("m1", "HOUR", requests)
    assert route.call_count > 1
    assert all(len(str(call.request.url)) < 8 * 1024 for call in route.calls)
    assert sum(len(call.request.url.params.get_list("subject")) for call in route.calls) == 100


def test_many_distinct_periods_switch_to_one_windowed_query_summed_per_request(source, openmeter):
    # 150 subscriptions, each with its own billing period (anchored on a different day).
    starts = {f"cus_{i}": JAN + timedelta(days=i % 60) for i in range(150)}
    usage = {s: hourly(start - timedelta(days=2), 24 * 40, 1 + i % 3) for i, (s, start) in enumerate(starts.items())}
    fake = FakeOpenMeter(usage)
    openmeter.get(QUERY).mock(side_effect=fake)
    requests = [UsageRequest(s, start, start + timedelta(days=30)) for s, start in starts.items()]

    totals = source.totals("m1", "HOUR", requests)

    assert source.requests_made == 2  # 150 subjects / 100, instead of 60 per-period queries
    for query in fake.queries:
        assert query["windowSize"] == "DAY"  # every boundary is midnight: the coarsest window that fits
        assert query["windowTimeZone"] == "UTC"
        assert query["from"] == "2025-01-01T00:00:00Z"
        assert query["to"] == "2025-03-31T00:00:00Z"  # the last period: Mar 1 + 30 days
    assert totals == {r: fake.total(r.subject, r.start, r.end) for r in requests}
    assert totals[requests[0]] == Decimal(30 * 24 * 1)  # usage before and after the period is left out


def test_a_subject_asked_for_two_periods_is_fetched_once_and_summed_per_period(source, openmeter):
    fake = FakeOpenMeter({f"cus_{i}": hourly(JAN, 24 * 20, 1) for i in range(5)})
    openmeter.get(QUERY).mock(side_effect=fake)
    requests = [UsageRequest(f"cus_{i}", JAN + timedelta(hours=i), JAN + timedelta(hours=10 + i)) for i in range(5)]
    requests.append(UsageRequest("cus_0", JAN + timedelta(days=3), JAN + timedelta(days=4, hours=5)))

    totals = source.totals("m1", "HOUR", requests)

    assert source.requests_made == 1
    assert fake.queries[0]["windowSize"] == "HOUR"
    assert fake.queries[0].get_list("subject") == [f"cus_{i}" for i in range(5)]
    assert totals[requests[-1]] == Decimal(29)
    assert all(totals[r] == Decimal(10) for r in requests[:5])


def test_a_windowed_query_that_would_return_too_many_rows_falls_back_to_per_period_queries(source, openmeter):
    # Minute-aligned periods over a month: one windowed query would return 43,200 rows per subject.
    fake = FakeOpenMeter({f"cus_{i}": hourly(JAN, 3, 1) for i in range(3)})
    openmeter.get(QUERY).mock(side_effect=fake)
    requests = [UsageRequest(f"cus_{i}", JAN + timedelta(minutes=i), FEB) for i in range(3)]

    totals = source.totals("m1", "MINUTE", requests)

    assert source.requests_made == 3
    assert [q.get("windowSize") for q in fake.queries] == [None, None, None]
    assert totals == {r: fake.total(r.subject, r.start, r.end) for r in requests}


def test_windowed_rows_outside_a_period_are_not_counted(source, openmeter):
    # Two periods for two subjects: windowed (1 query) beats grouped (2 queries).
    a = UsageRequest("cus_a", JAN, JAN + timedelta(days=2))
    b = UsageRequest("cus_b", JAN + timedelta(days=1), JAN + timedelta(days=3))
    day = timedelta(days=1)
    rows = [
        row("cus_a", JAN, JAN + day, "5"),
        row("cus_a", JAN + day, JAN + 2 * day, "7"),
        row("cus_a", JAN + 2 * day, JAN + 3 * day, "1000"),  # after a's period
        row("cus_b", JAN, JAN + day, "1000"),  # before b's period
        row("cus_b", JAN + 2 * day, JAN + 3 * day, "3"),
    ]
    route = openmeter.get(QUERY).mock(return_value=ok(query_result(JAN, JAN + 3 * day, rows, "DAY")))
    assert source.totals("m1", "DAY", [a, b]) == {a: Decimal(12), b: Decimal(3)}
    assert route.call_count == 1


def test_a_window_straddling_a_period_is_an_error_not_a_silent_shortfall(source, openmeter):
    a = UsageRequest("cus_a", JAN, JAN + timedelta(hours=12))
    b = UsageRequest("cus_b", JAN, JAN + timedelta(days=1))
    openmeter.get(QUERY).mock(
        return_value=ok(query_result(JAN, JAN + timedelta(days=1), [row("cus_a", JAN, JAN + timedelta(days=1), "4")]))
    )
    with pytest.raises(UsageSourceError, match='straddles the period of subject "cus_a"'):
        source.totals("m1", "HOUR", [a, b])


def test_subjects_absent_from_the_answer_have_zero(source, openmeter):
    openmeter.get(QUERY).mock(return_value=ok(query_result(JAN, FEB, [row("cus_a", JAN, FEB, "3")])))
    requests = [UsageRequest("cus_a", JAN, FEB), UsageRequest("cus_silent", JAN, FEB)]
    assert source.totals("m1", "HOUR", requests) == {requests[0]: Decimal(3), requests[1]: Decimal(0)}


def test_nothing_to_ask_sends_nothing(source, openmeter):
    empty = UsageRequest("cus_a", JAN, JAN)
    assert source.totals("m1", "HOUR", []) == {}
    assert source.totals("m1", "HOUR", [empty]) == {empty: Decimal(0)}
    assert source.requests_made == 0


# --- numbers ------------------------------------------------------------------------


def test_the_documented_example_is_read(source, openmeter):
    openmeter.get(QUERY).mock(return_value=ok(SPEC_METER_QUERY_RESULT))
    request = UsageRequest("customer-1", datetime(2023, 1, 1, tzinfo=UTC), datetime(2023, 1, 2, tzinfo=UTC))
    assert source.totals("m1", "DAY", [request]) == {request: Decimal(12)}


def test_values_are_exact_decimals_and_windows_sum_without_float_error(source, openmeter):
    a = UsageRequest("cus_a", JAN, JAN + timedelta(hours=2))
    b = UsageRequest("cus_b", JAN + timedelta(hours=1), JAN + timedelta(hours=2))
    hour = timedelta(hours=1)
    rows = [
        row("cus_a", JAN, JAN + hour, "0.1"),
        row("cus_a", JAN + hour, JAN + 2 * hour, "0.2"),
        row("cus_b", JAN + hour, JAN + 2 * hour, "12345678901.123456"),
    ]
    openmeter.get(QUERY).mock(return_value=ok(query_result(JAN, JAN + 2 * hour, rows, "HOUR")))

    totals = source.totals("m1", "HOUR", [a, b])

    assert str(totals[a]) == "0.3"  # 0.1 + 0.2 in float is 0.30000000000000004
    assert str(totals[b]) == "12345678901.123456"
    assert all(isinstance(v, Decimal) for v in totals.values())


def test_sums_keep_every_digit_past_decimal_default_precision(source, openmeter):
    a = UsageRequest("cus_a", JAN, JAN + timedelta(hours=2))
    b = UsageRequest("cus_b", JAN + timedelta(hours=1), JAN + timedelta(hours=2))
    hour = timedelta(hours=1)
    rows = [row("cus_a", JAN, JAN + hour, "1e20"), row("cus_a", JAN + hour, JAN + 2 * hour, "0.000000001")]
    openmeter.get(QUERY).mock(return_value=ok(query_result(JAN, JAN + 2 * hour, rows, "HOUR")))
    assert source.totals("m1", "HOUR", [a, b])[a] == Decimal("100000000000000000000.000000001")


def test_a_null_value_is_zero(source, openmeter):
    openmeter.get(QUERY).mock(return_value=ok(query_result(JAN, FEB, [row("cus_a", JAN, FEB, "null")])))
    request = UsageRequest("cus_a", JAN, FEB)
    assert source.totals("m1", "HOUR", [request]) == {request: Decimal(0)}


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_a_non_finite_value_is_an_error_naming_the_subject(source, openmeter, value):
    openmeter.get(QUERY).mock(return_value=ok(query_result(JAN, FEB, [row("cus_a", JAN, FEB, value)])))
    with pytest.raises(UsageSourceError, match=f'OpenMeter returned .*{value[-3:]}.* subject "cus_a" on meter "m1"'):
        source.totals("m1", "HOUR", [UsageRequest("cus_a", JAN, FEB)])


def test_negative_values_are_returned_faithfully(source, openmeter):
    openmeter.get(QUERY).mock(return_value=ok(query_result(JAN, FEB, [row("cus_a", JAN, FEB, "-2.5")])))
    request = UsageRequest("cus_a", JAN, FEB)
    assert source.totals("m1", "HOUR", [request]) == {request: Decimal("-2.5")}


@pytest.mark.parametrize("body", ["<html>oops</html>", '{"rows": []}', '{"data": [{"value": "3"}]}'])
def test_an_unreadable_answer_is_a_clear_error(source, openmeter, body):
    openmeter.get(QUERY).mock(return_value=ok(body))
    with pytest.raises(UsageSourceError, match='OpenMeter sent an unreadable answer for meter "m1"'):
        source.totals("m1", "HOUR", [UsageRequest("cus_a", JAN, FEB)])


# --- errors and retries -------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_server_error_is_retried_with_backoff(source, openmeter, sleeps, status):
    route = openmeter.get(QUERY).mock(
        side_effect=[
            problem(status, "Service Unavailable", "try later"),
            ok(query_result(JAN, FEB, [row("cus_a", JAN, FEB, "4")])),
        ]
    )
    request = UsageRequest("cus_a", JAN, FEB)
    assert source.totals("m1", "HOUR", [request]) == {request: Decimal(4)}
    assert route.call_count == source.requests_made == 2
    assert len(sleeps) == 1 and 0.5 <= sleeps[0] <= 1.0


def test_backoff_grows_exponentially_with_jitter_up_to_max_retries(source, openmeter, sleeps):
    route = openmeter.get(QUERY).mock(return_value=problem(503, "Service Unavailable", "overloaded"))
    with pytest.raises(UsageSourceError) as raised:
        source.totals("m1", "HOUR", [UsageRequest("cus_a", JAN, FEB)])
    assert str(raised.value) == (
        'OpenMeter failed the query for meter "m1": 503 Service Unavailable: overloaded (4 attempt(s))'
    )
    assert route.call_count == 4  # 1 + OPENMETER_MAX_RETRIES
    assert len(sleeps) == 3
    for sleep, base in zip(sleeps, [0.5, 1.0, 2.0], strict=True):
        assert base <= sleep <= base + 0.5


def test_429_waits_as_long_as_retry_after_says(source, openmeter, sleeps):
    route = openmeter.get(QUERY).mock(
        side_effect=[
            problem(429, "Too Many Requests", "slow down", {"Retry-After": "7"}),
            ok(query_result(JAN, FEB, [])),
        ]
    )
    source.totals("m1", "HOUR", [UsageRequest("cus_a", JAN, FEB)])
    assert route.call_count == 2
    assert sleeps == [7]


def test_retry_after_as_an_http_date_is_honoured_and_capped(source, openmeter, sleeps):
    soon = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    late = email.utils.format_datetime(datetime.now(UTC) + timedelta(hours=2), usegmt=True)
    openmeter.get(QUERY).mock(
        side_effect=[
            problem(429, "Too Many Requests", "slow down", {"Retry-After": soon}),
            problem(503, "Service Unavailable", "maintenance", {"Retry-After": late}),
            ok(query_result(JAN, FEB, [])),
        ]
    )
    source.totals("m1", "HOUR", [UsageRequest("cus_a", JAN, FEB)])
    assert 17 <= sleeps[0] <= 20
    assert sleeps[1] == MAX_RETRY_AFTER_SECONDS


@pytest.mark.parametrize(
    ("status", "title", "detail"),
    [
        (400, "Bad Request", "invalid window size"),
        (401, "Unauthorized", "invalid API token"),
        (403, "Forbidden", "token may not read meters"),
        (404, "Not Found", "meter not found"),
    ],
)
def test_a_refusal_is_a_plain_error_and_not_retried(source, openmeter, sleeps, status, title, detail):
    route = openmeter.get(QUERY).mock(return_value=problem(status, title, detail))
    with pytest.raises(UsageSourceError) as raised:
        source.totals("m1", "HOUR", [UsageRequest("cus_a", JAN, FEB)])
    assert str(raised.value) == f'OpenMeter refused the query for meter "m1": {status} {title}: {detail}'
    assert route.call_count == 1
    assert sleeps == []


def test_a_refusal_that_is_not_problem_json_keeps_the_status_line(source, openmeter):
    openmeter.get(QUERY).mock(return_value=httpx.Response(404, text="404 page not found"))
    with pytest.raises(UsageSourceError, match=r'meter "m1": 404 Not Found: 404 page not found$'):
        source.totals("m1", "HOUR", [UsageRequest("cus_a", JAN, FEB)])


def test_an_unreachable_openmeter_is_retried_then_a_clear_error(source, openmeter, sleeps):
    route = openmeter.get(QUERY).mock(side_effect=httpx.ConnectError("[Errno 111] Connection refused"))
    with pytest.raises(UsageSourceError) as raised:
        source.totals("m1", "HOUR", [UsageRequest("cus_a", JAN, FEB)])
    assert str(raised.value) == (
        "Could not reach OpenMeter at https://openmeter.test: [Errno 111] Connection refused (4 attempt(s))"
    )
    assert route.call_count == 4
    assert len(sleeps) == 3


def test_a_connection_error_then_success_is_retried(source, openmeter):
    route = openmeter.get(QUERY).mock(
        side_effect=[httpx.ConnectError("refused"), ok(query_result(JAN, FEB, [row("cus_a", JAN, FEB, "2")]))]
    )
    request = UsageRequest("cus_a", JAN, FEB)
    assert source.totals("m1", "HOUR", [request]) == {request: Decimal(2)}
    assert route.call_count == 2


def test_a_timeout_is_retried_then_a_clear_error(source, openmeter, sleeps):
    route = openmeter.get(QUERY).mock(side_effect=httpx.ReadTimeout("timed out"))
    with pytest.raises(UsageSourceError) as raised:
        source.totals("m1", "HOUR", [UsageRequest("cus_a", JAN, FEB)])
    assert str(raised.value) == (
        "Could not reach OpenMeter at https://openmeter.test: timed out after 2.5s (ReadTimeout; 4 attempt(s))"
    )
    assert route.call_count == 4


# --- settings -----------------------------------------------------------------------


def test_a_missing_openmeter_url_is_a_clear_error(settings):
    settings.USAGE_SOURCE = "openmeter"
    settings.OPENMETER_URL = ""
    source = get_usage_source()
    assert isinstance(source, OpenMeterUsageSource)
    with pytest.raises(UsageSourceError, match="OPENMETER_URL is not set"):
        source.totals("m1", "HOUR", [UsageRequest("cus_a", JAN, FEB)])


def test_a_url_without_a_scheme_is_a_clear_error():
    with pytest.raises(UsageSourceError, match="OPENMETER_URL must start with http:// or https://"):
        OpenMeterClient("openmeter.example.com")


def test_the_source_is_configured_from_settings(settings, openmeter, monkeypatch):
    settings.OPENMETER_URL = URL + "/"
    settings.OPENMETER_TOKEN = "from_settings"
    settings.OPENMETER_TIMEOUT_SECONDS = 4.0
    settings.OPENMETER_MAX_RETRIES = 1
    monkeypatch.setattr("billing.usage_sources.openmeter.time.sleep", lambda seconds: None)
    route = openmeter.get(QUERY).mock(return_value=problem(503, "Service Unavailable", "down"))
    source = OpenMeterUsageSource()
    with pytest.raises(UsageSourceError):
        source.totals("m1", "HOUR", [UsageRequest("cus_a", JAN, FEB)])
    assert route.call_count == 2  # 1 + OPENMETER_MAX_RETRIES
    assert route.calls.last.request.headers["Authorization"] == "Bearer from_settings"
    assert source.client._http.timeout == httpx.Timeout(4.0)
