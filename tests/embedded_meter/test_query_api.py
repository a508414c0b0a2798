from datetime import UTC, datetime, timedelta

import pytest

from embedded_meter import services

from .conftest import TOKEN, cloudevent, make_meter

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)
URL = "/api/v1/meters/m_test/query"


def iso(moment):
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture
def usage():
    make_meter(window_size="HOUR", group_by={"region": "$.region"})
    services.ingest_events(
        [
            cloudevent(type="test.event", subject=s, time=iso(T0 + timedelta(minutes=m)), data={"value": v, "region": r})
            for s, m, v, r in [
                ("cus_A", 0, 1, "eu"),
                ("cus_A", 59, 2.5, "us"),
                ("cus_A", 60, 4, "eu"),
                ("cus_B", 30, 10, "eu"),
                ("cus_B", 180, 99, "eu"),  # after `to`
            ]
        ]
    )


def test_windowed_query_by_subject_has_openmeters_shape(api, usage):
    response = api.get(URL, {"from": iso(T0), "to": iso(T0 + timedelta(hours=2)), "windowSize": "HOUR", "groupBy": "subject"})
    assert response.status_code == 200
    assert response.json() == {
        "from": "2026-11-02T00:00:00Z",
        "to": "2026-11-02T02:00:00Z",
        "windowSize": "HOUR",
        "data": [
            {"value": 3.5, "windowStart": "2026-11-02T00:00:00Z", "windowEnd": "2026-11-02T01:00:00Z", "subject": "cus_A", "groupBy": {}},
            {"value": 10, "windowStart": "2026-11-02T00:00:00Z", "windowEnd": "2026-11-02T01:00:00Z", "subject": "cus_B", "groupBy": {}},
            {"value": 4, "windowStart": "2026-11-02T01:00:00Z", "windowEnd": "2026-11-02T02:00:00Z", "subject": "cus_A", "groupBy": {}},
        ],
    }


def test_query_without_window_is_one_row_per_subject_over_the_range(api, usage):
    response = api.get(URL, {"from": iso(T0), "to": iso(T0 + timedelta(hours=2)), "subject": ["cus_A", "cus_B"]})
    assert response.json()["data"] == [
        {"value": 7.5, "windowStart": "2026-11-02T00:00:00Z", "windowEnd": "2026-11-02T02:00:00Z", "subject": "cus_A", "groupBy": {}},
        {"value": 10, "windowStart": "2026-11-02T00:00:00Z", "windowEnd": "2026-11-02T02:00:00Z", "subject": "cus_B", "groupBy": {}},
    ]


def test_query_without_grouping_totals_all_subjects(api, usage):
    response = api.get(URL, {"from": iso(T0), "to": iso(T0 + timedelta(hours=2))})
    assert [(r["value"], r["subject"]) for r in response.json()["data"]] == [(17.5, None)]


def test_query_by_a_meter_group_by_key(api, usage):
    response = api.get(URL, {"from": iso(T0), "to": iso(T0 + timedelta(hours=2)), "groupBy": ["subject", "region"]})
    rows = [(r["subject"], r["groupBy"], r["value"]) for r in response.json()["data"]]
    assert rows == [("cus_A", {"region": "eu"}, 5), ("cus_A", {"region": "us"}, 2.5), ("cus_B", {"region": "eu"}, 10)]


def test_from_defaults_to_the_first_event_and_plus_survives_an_unencoded_query(api, usage):
    response = api.client.get(
        URL + "?to=2026-11-02T02:00:00+00:00&windowSize=HOUR&subject=cus_B", HTTP_AUTHORIZATION=f"Bearer {TOKEN}"
    )
    body = response.json()
    assert body["from"] == "2026-11-02T00:00:00Z" and body["to"] == "2026-11-02T02:00:00Z"
    assert [r["value"] for r in body["data"]] == [10]


def test_meters_are_listed_in_openmeters_shape(api, usage):
    meters = {m["slug"]: m for m in api.get("/api/v1/meters").json()}
    assert meters["m1"] == {
        "id": "m1", "slug": "m1", "name": "Epsilon execution duration",
        "description": "Billed execution time of Epsilon functions: whole seconds, each execution rounded up.",
        "aggregation": "SUM", "eventType": "epsilon.execution", "valueProperty": "$.billed_seconds",
        "groupBy": {}, "windowSize": "MINUTE",
    }
    assert meters["m_test"]["groupBy"] == {"region": "$.region"}
    assert api.get("/api/v1/meters/m_test").json()["eventType"] == "test.event"


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"windowTimeZone": "Mars/Olympus_Mons"}, "windowTimeZone"),
        ({"windowTimeZone": ""}, "windowTimeZone"),
        ({"windowSize": "WEEK"}, "windowSize"),
        ({"windowSize": "MINUTE"}, "windowSize"),  # finer than the meter's HOUR
        ({"windowSize": "HOUR", "from": "2026-11-02T00:30:00Z"}, "from"),
        ({"from": "yesterday"}, "from"),
        ({"from": "2026-11-02T02:00:00Z", "to": "2026-11-02T01:00:00Z"}, "to"),
        ({"groupBy": "model"}, "groupBy"),
        ({"filterGroupBy[region]": "eu"}, "filterGroupBy"),
    ],
)
def test_bad_query_is_a_400_problem(api, usage, params, fragment):
    response = api.get(URL, params)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["detail"].startswith(fragment)


def test_unknown_meter_is_404_and_token_is_required(api, usage):
    assert api.get("/api/v1/meters/nope/query").status_code == 404
    assert api.get(URL, token=None).status_code == 401
    assert api.get("/api/v1/meters", token="wrong").status_code == 401
