"""
The embedded meter answers as OpenMeter's OpenAPI document (/work/shared/openmeter/
openapi.yaml) says, operation by operation: queryMeterPost, the unsupported operations
as problems, problem `instance` URIs, MONTH windows and windowTimeZone, text/csv,
clientId and dataschema, 204 without a Content-Type, listMeters' parameters.
"""

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client

from embedded_meter import services
from embedded_meter.models import Event

from .conftest import TOKEN, Api, cloudevent, make_meter

pytestmark = pytest.mark.django_db

URL = "/api/v1/meters/m_test/query"
AUTH = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}


def iso(moment):
    return moment.isoformat().replace("+00:00", "Z")


def store(*events, **meter):
    """(subject, time, value) tuples as events of meter m_test (SUM of $.value)."""
    make_meter(**{"window_size": "MINUTE", **meter})
    services.ingest_events(
        [cloudevent(type="test.event", subject=s, time=t, data={"value": v}) for s, t, v in events]
    )


def windows(response):
    assert response.status_code == 200, response.content
    return [(r["windowStart"], r["windowEnd"], r["value"]) for r in response.json()["data"]]


def assert_problem(response, status, fragment=None):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert {"type", "title", "status", "detail", "instance"} <= body.keys()
    assert body["status"] == status
    if fragment:
        assert fragment in body["detail"], body["detail"]
    return body


@pytest.fixture
def strict():
    """A client that enforces CSRF, as a real one does (Django's test client does not)."""
    return Client(enforce_csrf_checks=True)


@pytest.fixture
def usage():
    store(
        ("cus_A", "2026-11-02T00:00:00Z", 1),
        ("cus_A", "2026-11-02T00:59:00Z", 2.5),
        ("cus_A", "2026-11-02T01:00:00Z", 4),
        ("cus_B", "2026-11-02T00:30:00Z", 10),
        window_size="HOUR",
    )


# --- 1. queryMeterPost, and the operations the embedded meter lacks --------------------


def post_query(client, body, slug="m_test", content_type="application/json"):
    data = body if isinstance(body, str) else json.dumps(body)
    return client.generic("POST", f"/api/v1/meters/{slug}/query", data, content_type=content_type, **AUTH)


def test_query_meter_post_takes_a_meter_query_request_body(strict, usage):
    # MeterQueryRequest: the same parameters as queryMeter's, as JSON.
    body = {"from": "2026-11-02T00:00:00Z", "to": "2026-11-02T02:00:00Z", "windowSize": "HOUR",
            "groupBy": ["subject"], "clientId": "f74e58ed-94ce-4041-ae06-cf45420451a3"}
    posted = post_query(strict, body)
    assert posted.status_code == 200, posted.content
    assert posted["Content-Type"] == "application/json"
    params = {k: v for k, v in body.items() if k != "clientId"}
    assert posted.json() == Api(Client()).get(URL, params).json()
    assert [(r["subject"], r["value"]) for r in posted.json()["data"]] == [("cus_A", 3.5), ("cus_B", 10), ("cus_A", 4)]


def test_query_meter_post_filters_by_subject(strict, usage):
    body = post_query(strict, {"from": "2026-11-02T00:00:00Z", "to": "2026-11-02T02:00:00Z", "subject": ["cus_B"]}).json()
    assert [(r["subject"], r["value"]) for r in body["data"]] == [("cus_B", 10)]


@pytest.mark.parametrize(
    "body, content_type, field",
    [
        ({"windowSize": "WEEK"}, "application/json", "windowSize"),
        ({"from": 1767225600}, "application/json", "from"),  # date-time is a string
        ({"subject": "cus_A"}, "application/json", "subject"),  # an array
        ({"subject": [f"cus_{i}" for i in range(101)]}, "application/json", "subject"),  # maxItems 100
        ({"groupBy": ["region"]}, "application/json", "groupBy"),  # not a group-by key of m_test
        ({"filterGroupBy": {"region": ["eu"]}}, "application/json", "filterGroupBy"),
        ({"filterCustomerId": ["c1"]}, "application/json", "filterCustomerId"),
        ("[]", "application/json", "body"),
        ("{oops", "application/json", "body"),
        ("{}", "text/plain", "Content-Type"),
    ],
)
def test_query_meter_post_refuses_bad_bodies_as_problems(strict, usage, body, content_type, field):
    problem = assert_problem(post_query(strict, body, content_type=content_type), 400)
    assert problem["field"] == field and problem["detail"].startswith(field)


def test_query_meter_post_needs_the_token_and_a_known_meter(strict, usage):
    assert_problem(strict.post(URL, "{}", content_type="application/json"), 401)
    assert_problem(post_query(strict, {}, slug="nope"), 404)


def test_create_meter_is_a_problem_saying_it_is_not_supported(strict):
    response = strict.post("/api/v1/meters", json.dumps({"slug": "x", "aggregation": "COUNT", "eventType": "x"}),
                           content_type="application/json", **AUTH)
    assert_problem(response, 405, "not supported by the embedded meter")
    assert response["Allow"] == "GET"


@pytest.mark.parametrize("method, operation", [("put", "updateMeter"), ("delete", "deleteMeter")])
def test_update_and_delete_meter_are_problems_too(strict, method, operation):
    response = getattr(strict, method)("/api/v1/meters/m1", "{}", content_type="application/json", **AUTH)
    assert_problem(response, 405, operation)
    assert response["Allow"] == "GET"


def test_list_events_is_a_problem_saying_it_is_not_supported(strict):
    response = strict.get("/api/v1/events", **AUTH)
    assert_problem(response, 405, "not supported by the embedded meter")
    assert response["Allow"] == "POST"


@pytest.mark.parametrize("path", ["/api/v1/meters/m1/subjects", "/api/v1/entitlements", "/api/v1/meters/", "/api/v1/"])
def test_other_paths_are_problem_404s(strict, path):
    assert_problem(strict.post(path, **AUTH), 404)
    assert_problem(strict.get(path), 404)


def test_a_meter_path_that_is_no_slug_is_a_400(client):
    body = assert_problem(client.get("/api/v1/meters/Not-A-Slug", **AUTH), 400, "meterIdOrSlug")
    assert body["field"] == "meterIdOrSlug"
    assert_problem(client.get("/api/v1/meters/" + "a" * 65 + "/query", **AUTH), 400)


# --- 2. `instance` is a URI ------------------------------------------------------------


def test_problem_instance_is_an_absolute_uri(client, usage):
    body = assert_problem(client.get("/api/v1/meters/nope/query?windowSize=HOUR", **AUTH), 404)
    assert body["instance"] == "http://testserver/api/v1/meters/nope/query"
    body = assert_problem(client.post("/api/v1/events", "{", content_type="application/json", **AUTH), 400)
    assert body["instance"] == "http://testserver/api/v1/events"


# --- 3. windowSize=MONTH and windowTimeZone -------------------------------------------


def test_month_windows_are_calendar_months(api):
    store(("cus_A", "2026-11-01T00:00:00Z", 1), ("cus_A", "2026-11-30T23:59:59Z", 2), ("cus_A", "2026-12-01T00:00:00Z", 4),
          ("cus_A", "2027-01-01T00:00:00Z", 100))
    response = api.get(URL, {"from": "2026-11-01T00:00:00Z", "to": "2027-01-01T00:00:00Z", "windowSize": "MONTH"})
    assert response.json()["windowSize"] == "MONTH"
    assert windows(response) == [
        ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z", 3),
        ("2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z", 4),
    ]


def test_month_windows_default_their_range_to_whole_months(api):
    store(("cus_A", "2026-12-15T10:00:00Z", 1), ("cus_A", "2027-01-31T23:59:00Z", 2))
    body = api.get(URL, {"windowSize": "MONTH", "to": "2027-02-01T00:00:00Z"}).json()
    assert (body["from"], body["to"]) == ("2026-12-01T00:00:00Z", "2027-02-01T00:00:00Z")
    assert [r["value"] for r in body["data"]] == [1, 2]


def test_month_bounds_must_be_aligned(api):
    store()
    problem = assert_problem(api.get(URL, {"windowSize": "MONTH", "from": "2026-11-02T00:00:00Z"}), 400)
    assert problem["detail"].startswith("from: must be aligned to MONTH windows")


def test_day_windows_in_a_time_zone_follow_its_midnights_across_dst(api):
    # Europe/Berlin leaves summer time on 2026-10-25 at 01:00Z: that day has 25 hours.
    store(("cus_A", "2026-10-24T21:59:00Z", 1), ("cus_A", "2026-10-24T22:00:00Z", 2),
          ("cus_A", "2026-10-25T22:59:00Z", 4), ("cus_A", "2026-10-25T23:00:00Z", 8))
    response = api.get(URL, {"from": "2026-10-23T22:00:00Z", "to": "2026-10-26T23:00:00Z",
                             "windowSize": "DAY", "windowTimeZone": "Europe/Berlin"})
    assert windows(response) == [
        ("2026-10-23T22:00:00Z", "2026-10-24T22:00:00Z", 1),
        ("2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z", 6),
        ("2026-10-25T23:00:00Z", "2026-10-26T23:00:00Z", 8),
    ]


def test_the_repeated_hour_is_two_hour_windows(api):
    # 00:30Z and 01:30Z are both 02:30 in Berlin on 2026-10-25.
    store(("cus_A", "2026-10-25T00:30:00Z", 1), ("cus_A", "2026-10-25T01:30:00Z", 2), ("cus_A", "2026-10-25T02:30:00Z", 4))
    response = api.get(URL, {"from": "2026-10-25T00:00:00Z", "to": "2026-10-25T03:00:00Z",
                             "windowSize": "HOUR", "windowTimeZone": "Europe/Berlin"})
    assert windows(response) == [
        ("2026-10-25T00:00:00Z", "2026-10-25T01:00:00Z", 1),
        ("2026-10-25T01:00:00Z", "2026-10-25T02:00:00Z", 2),
        ("2026-10-25T02:00:00Z", "2026-10-25T03:00:00Z", 4),
    ]


def test_hour_windows_follow_a_half_hour_zone(api):
    store(("cus_A", "2026-11-02T04:29:00Z", 1), ("cus_A", "2026-11-02T04:30:00Z", 2), ("cus_A", "2026-11-02T05:29:59Z", 4))
    params = {"windowSize": "HOUR", "windowTimeZone": "Asia/Kolkata"}
    response = api.get(URL, {**params, "from": "2026-11-02T03:30:00Z", "to": "2026-11-02T05:30:00Z"})
    assert windows(response) == [
        ("2026-11-02T03:30:00Z", "2026-11-02T04:30:00Z", 1),
        ("2026-11-02T04:30:00Z", "2026-11-02T05:30:00Z", 6),
    ]
    problem = assert_problem(api.get(URL, {**params, "from": "2026-11-02T04:00:00Z"}), 400)
    assert problem["detail"].startswith("from: must be aligned to HOUR windows of Asia/Kolkata")


def test_month_windows_in_a_time_zone(api):
    store(("cus_A", "2026-11-01T03:59:00Z", 1), ("cus_A", "2026-11-01T04:00:00Z", 2), ("cus_A", "2026-12-01T04:59:00Z", 4))
    response = api.get(URL, {"from": "2026-11-01T04:00:00Z", "to": "2026-12-01T05:00:00Z",
                             "windowSize": "MONTH", "windowTimeZone": "America/New_York"})
    # New York leaves summer time on 2026-11-01: November starts at -04:00, ends at -05:00.
    assert windows(response) == [("2026-11-01T04:00:00Z", "2026-12-01T05:00:00Z", 6)]


def test_utc_zone_names_are_the_default(api, usage):
    params = {"from": "2026-11-02T00:00:00Z", "to": "2026-11-02T02:00:00Z", "windowSize": "HOUR"}
    expected = api.get(URL, params).json()
    assert api.get(URL, {**params, "windowTimeZone": "UTC"}).json() == expected
    assert api.get(URL, {**params, "windowTimeZone": "Etc/UTC"}).json() == expected


# --- 4. text/csv ----------------------------------------------------------------------


def test_accept_text_csv_returns_csv_in_meter_query_row_columns(api):
    store(("cus_A", "2026-11-02T00:10:00Z", 1.5), ("cus_B", "2026-11-02T00:20:00Z", 2),
          window_size="HOUR", group_by={"region": "$.region"})
    params = {"from": "2026-11-02T00:00:00Z", "to": "2026-11-02T01:00:00Z", "windowSize": "HOUR", "groupBy": ["subject", "region"]}
    response = api.client.get(URL, params, HTTP_ACCEPT="text/csv", **AUTH)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="m_test.csv"'
    assert "Accept" in response["Vary"]
    assert list(csv.reader(io.StringIO(response.content.decode()))) == [
        ["value", "windowStart", "windowEnd", "subject", "groupBy.region"],
        ["1.5", "2026-11-02T00:00:00Z", "2026-11-02T01:00:00Z", "cus_A", ""],
        ["2", "2026-11-02T00:00:00Z", "2026-11-02T01:00:00Z", "cus_B", ""],
    ]


def test_csv_without_grouping_has_an_empty_subject(api, usage):
    response = api.client.get(URL, {"from": "2026-11-02T00:00:00Z", "to": "2026-11-02T02:00:00Z"}, HTTP_ACCEPT="text/csv", **AUTH)
    assert response.content.decode().splitlines() == [
        "value,windowStart,windowEnd,subject",
        "17.5,2026-11-02T00:00:00Z,2026-11-02T02:00:00Z,",
    ]


def test_csv_for_query_meter_post(strict, usage):
    response = strict.generic("POST", URL, json.dumps({"to": "2026-11-02T02:00:00Z"}), content_type="application/json",
                              HTTP_ACCEPT="text/csv", **AUTH)
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response.content.decode().splitlines()[1] == "17.5,2026-11-02T00:00:00Z,2026-11-02T02:00:00Z,"


@pytest.mark.parametrize("accept", [None, "application/json", "*/*", "text/csv;q=0.5, application/json", "text/html"])
def test_json_otherwise(api, usage, accept):
    headers = {"HTTP_ACCEPT": accept} if accept else {}
    response = api.client.get(URL, {"to": "2026-11-02T02:00:00Z"}, **headers, **AUTH)
    assert response["Content-Type"] == "application/json"
    assert response.json()["data"][0]["value"] == 17.5


# --- 5. clientId, dataschema, source --------------------------------------------------


def test_client_id_is_at_most_36_characters(api, strict, usage):
    assert api.get(URL, {"clientId": "c" * 36}).status_code == 200
    for response in (api.get(URL, {"clientId": "c" * 37}), post_query(strict, {"clientId": "c" * 37})):
        problem = assert_problem(response, 400)
        assert problem["field"] == "clientId" and problem["detail"].startswith("clientId: must be at most 36")
    assert assert_problem(api.get(URL, {"clientId": ""}), 400)["field"] == "clientId"  # minLength 1
    assert assert_problem(post_query(strict, {"clientId": 7}), 400)["field"] == "clientId"


def test_single_parameters_are_not_repeated(api, usage):
    response = api.client.get(URL + "?windowSize=HOUR&windowSize=DAY", **AUTH)
    assert assert_problem(response, 400)["detail"] == "windowSize: must be given once"


@pytest.mark.parametrize("schema", ["not a uri", "", "schema.json", 42])
def test_dataschema_must_be_a_uri(api, schema):
    response = api.post(cloudevent(dataschema=schema))
    problem = assert_problem(response, 400, "dataschema")
    assert problem["field"] == "dataschema"
    assert Event.objects.count() == 0


@pytest.mark.parametrize("schema", ["https://example.com/schemas/execution.json", "urn:epsilon:execution:v1", None])
def test_dataschema_uris_are_accepted(api, schema):
    assert api.post(cloudevent(dataschema=schema)).status_code == 204


@pytest.mark.parametrize("source", ["has space", "bad%zzescape", "two#frag#ments"])
def test_source_must_be_a_uri_reference(api, source):
    assert assert_problem(api.post(cloudevent(source=source)), 400)["field"] == "source"


@pytest.mark.parametrize("source", ["service-name", "/epsilon/runner", "https://epsilon.example/runner", "urn:x:y"])
def test_source_uri_references_are_accepted(api, source):
    assert api.post(cloudevent(source=source)).status_code == 204


# --- 6. 204 has no Content-Type ------------------------------------------------------


def test_no_content_has_no_content_type(api):
    response = api.post(cloudevent())
    assert response.status_code == 204
    assert "Content-Type" not in response
    assert response.content == b""


# --- listMeters' parameters -----------------------------------------------------------


def test_list_meters_pages_and_orders(api):
    make_meter(slug="b_meter", name="Alpha")
    make_meter(slug="a_meter", name="Zulu")
    slugs = lambda **params: [m["slug"] for m in api.get("/api/v1/meters", params).json()]  # noqa: E731
    assert slugs() == ["a_meter", "b_meter", "m1"]
    assert slugs(order="DESC") == ["m1", "b_meter", "a_meter"]
    assert slugs(orderBy="name") == ["b_meter", "m1", "a_meter"]  # Alpha, Epsilon..., Zulu
    assert slugs(pageSize=2, page=2) == ["m1"]
    assert slugs(includeDeleted="true") == ["a_meter", "b_meter", "m1"]


@pytest.mark.parametrize(
    "params, field",
    [({"page": "0"}, "page"), ({"pageSize": "1001"}, "pageSize"), ({"pageSize": "x"}, "pageSize"),
     ({"order": "up"}, "order"), ({"orderBy": "slug"}, "orderBy"), ({"includeDeleted": "maybe"}, "includeDeleted")],
)
def test_list_meters_refuses_bad_parameters(api, params, field):
    assert assert_problem(api.get("/api/v1/meters", params), 400)["field"] == field


def test_an_unexpected_error_is_a_500_problem(client, monkeypatch):
    from embedded_meter import definitions

    def broken(slug):
        raise RuntimeError("boom")

    monkeypatch.setattr(definitions, "get_meter", broken)
    client.raise_request_exception = False
    body = assert_problem(client.get("/api/v1/meters/m1", **AUTH), 500)
    assert "boom" not in body["detail"]


def test_hourly_totals_for_billing_are_unchanged(api):
    # The embedded usage source reads UTC windows: the query still answers them exactly.
    start = datetime(2026, 11, 2, tzinfo=UTC)
    store(("cus_A", iso(start + timedelta(minutes=59, seconds=59)), 1), ("cus_A", iso(start + timedelta(hours=1)), 2))
    assert windows(api.get(URL, {"from": iso(start), "to": iso(start + timedelta(hours=2)), "windowSize": "HOUR"})) == [
        ("2026-11-02T00:00:00Z", "2026-11-02T01:00:00Z", 1),
        ("2026-11-02T01:00:00Z", "2026-11-02T02:00:00Z", 2),
    ]
