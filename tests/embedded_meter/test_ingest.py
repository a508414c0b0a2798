import threading
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client

from embedded_meter import services, validation
from embedded_meter.models import Event

from .conftest import TOKEN, Api, cloudevent, make_meter

pytestmark = pytest.mark.django_db


def assert_problem(response, field, *, index=None, status=400):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert {"type", "title", "status", "detail", "instance"} <= body.keys()
    assert body["status"] == status
    assert body["field"] == field
    assert field in body["detail"]
    if index is not None:
        assert body["index"] == index
        assert f"events[{index}]" in body["detail"]
    return body


# --- accepted -----------------------------------------------------------------


def test_single_event_is_stored_with_utc_time(api):
    event = cloudevent(id="e1", time="2026-11-01T12:15:30.123456789+02:00", data={"billed_seconds": 250})
    response = api.post(event)
    assert response.status_code == 204
    stored = Event.objects.get()
    assert (stored.event_id, stored.source, stored.type, stored.subject) == ("e1", "tests", "epsilon.execution", "cus_A")
    assert stored.time == datetime(2026, 11, 1, 10, 15, 30, 123456, tzinfo=UTC)
    assert stored.data == {"billed_seconds": 250}
    assert stored.ingested_at is not None


def test_batch_is_stored(api):
    response = api.post([cloudevent(subject=f"cus_{i}") for i in range(3)], "application/cloudevents-batch+json")
    assert response.status_code == 204
    assert sorted(Event.objects.values_list("subject", flat=True)) == ["cus_0", "cus_1", "cus_2"]


@pytest.mark.parametrize("body", [cloudevent(), [cloudevent(), cloudevent()]])
def test_application_json_takes_an_event_or_a_batch(api, body):
    assert api.post(body, "application/json; charset=utf-8").status_code == 204
    assert Event.objects.count() == (len(body) if isinstance(body, list) else 1)


def test_missing_time_means_now(api):
    before = datetime.now(UTC)
    assert api.post(cloudevent(time=...)).status_code == 204
    assert before <= Event.objects.get().time <= datetime.now(UTC)


def test_count_meter_events_need_no_data(api):
    make_meter(slug="calls", event_type="call", aggregation="COUNT", value_property="")
    assert api.post(cloudevent(type="call", data=None)).status_code == 204
    assert Event.objects.get().data is None


def test_large_batch_is_one_bulk_insert(api, django_assert_max_num_queries):
    batch = [cloudevent(subject=f"cus_{i % 50}") for i in range(5000)]
    # Meter definitions, then the insert (SQLite splits it by its parameter limit).
    with django_assert_max_num_queries(60):
        response = api.post(batch, "application/cloudevents-batch+json")
    assert response.status_code == 204
    assert Event.objects.count() == 5000


def test_csrf_is_not_required(db):
    api = Api(Client(enforce_csrf_checks=True))
    assert api.post(cloudevent()).status_code == 204


# --- deduplication --------------------------------------------------------------


def test_resent_event_is_accepted_and_stored_once(api):
    event = cloudevent(id="same")
    assert api.post(event).status_code == 204
    assert api.post({**event, "data": {"billed_seconds": 999}}).status_code == 204
    assert Event.objects.get().data == {"billed_seconds": 100}


def test_same_id_from_another_source_is_another_event(api):
    assert api.post(cloudevent(id="same", source="a")).status_code == 204
    assert api.post(cloudevent(id="same", source="b")).status_code == 204
    assert Event.objects.count() == 2


def test_duplicate_inside_one_batch_is_stored_once(api):
    event = cloudevent(id="twice")
    assert api.post([event, event], "application/cloudevents-batch+json").status_code == 204
    assert Event.objects.count() == 1


def test_duplicate_stored_by_a_concurrent_request_after_validation(api, monkeypatch):
    # Another request commits the same (source, id) between our validation and our
    # insert: the database constraint, not a pre-check, must absorb it.
    event = cloudevent(id="raced", data={"billed_seconds": 5})
    real = validation.validate_events

    def validate_then_race(*args, **kwargs):
        result = real(*args, **kwargs)
        Event.objects.create(
            event_id="raced", source="tests", type="epsilon.execution", subject="cus_A",
            time=datetime(2026, 11, 1, tzinfo=UTC), data={"billed_seconds": 7},
        )
        return result

    monkeypatch.setattr(validation, "validate_events", validate_then_race)
    assert api.post(event).status_code == 204
    assert list(Event.objects.values_list("data", flat=True)) == [{"billed_seconds": 7}]


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicate_requests_store_one_event(postgres_only):
    events = [cloudevent(id=f"c{i}") for i in range(200)]
    barrier = threading.Barrier(4)
    errors = []

    def send():
        try:
            barrier.wait()
            services.ingest_events(events)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert Event.objects.count() == 200


# --- refused --------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"specversion": ...}, "specversion"),
        ({"specversion": "0.3"}, "specversion"),
        ({"id": ...}, "id"),
        ({"id": ""}, "id"),
        ({"source": ...}, "source"),
        ({"type": ...}, "type"),
        ({"subject": ...}, "subject"),
        ({"subject": 42}, "subject"),
        ({"time": "yesterday"}, "time"),
        ({"time": "2026-11-01T10:00:00"}, "time"),  # no offset: not RFC 3339
        ({"time": "2026-13-01T10:00:00Z"}, "time"),
        ({"data": [1, 2]}, "data"),
        ({"data": "billed_seconds=5"}, "data"),
        ({"datacontenttype": "text/plain"}, "datacontenttype"),
        ({"data_base64": "AAAA"}, "data_base64"),
        ({"data": {}}, "data.billed_seconds"),  # m1 sums $.billed_seconds
        ({"data": {"billed_seconds": "fast"}}, "data.billed_seconds"),
        ({"data": {"billed_seconds": True}}, "data.billed_seconds"),
        ({"data": None}, "data.billed_seconds"),
    ],
)
def test_invalid_event_is_a_400_naming_the_field(api, overrides, field):
    body = assert_problem(api.post(cloudevent(**overrides)), field)
    assert Event.objects.count() == 0
    if field == "data.billed_seconds":
        assert "$.billed_seconds" in body["detail"] and "'m1'" in body["detail"]


def test_unique_count_value_must_be_a_string(api):
    make_meter(slug="users", event_type="login", aggregation="UNIQUE_COUNT", value_property="$.user")
    assert_problem(api.post(cloudevent(type="login", data={"user": 7})), "data.user")
    assert api.post(cloudevent(type="login", data={"user": "u7"})).status_code == 204


def test_numeric_strings_are_accepted_for_sum(api):
    assert api.post(cloudevent(data={"billed_seconds": "12.5"})).status_code == 204


def test_invalid_event_in_a_batch_names_its_index_and_nothing_is_stored(api):
    batch = [cloudevent(), cloudevent(), cloudevent(time="soon"), cloudevent(id=...)]
    body = assert_problem(api.post(batch, "application/cloudevents-batch+json"), "time", index=2)
    assert [e["index"] for e in body["errors"]] == [2, 3]
    assert "and 1 more" in body["detail"]
    assert Event.objects.count() == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_unknown_content_type(api, content_type):
    assert_problem(api.post(cloudevent(), content_type), "Content-Type")


@pytest.mark.parametrize(
    "body, content_type",
    [
        ("{not json", "application/cloudevents+json"),
        ('{"billed_seconds": NaN}', "application/json"),
        ('{"specversion": "1.0", "id": "x", "source": "s", "type": "t", "data": {"n": 1e400}}', "application/cloudevents+json"),
        ([{"id": "x"}], "application/cloudevents+json"),  # an array sent as a single event
        ({"id": "x"}, "application/cloudevents-batch+json"),
        ("42", "application/json"),
    ],
)
def test_malformed_body(api, body, content_type):
    assert_problem(api.post(body, content_type), "body")


def test_body_over_the_limit_is_413(api, settings):
    settings.EMBEDDED_METER_MAX_BODY_BYTES = 100
    response = api.post([cloudevent() for _ in range(5)], "application/cloudevents-batch+json")
    assert response.status_code == 413
    assert Event.objects.count() == 0


# --- authentication -------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "wrong", ""])
def test_ingest_needs_the_bearer_token(api, token):
    response = api.post(cloudevent(), token=token)
    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert Event.objects.count() == 0


def test_no_configured_token_refuses_everyone(api, settings):
    settings.EMBEDDED_METER_INGEST_TOKEN = ""
    assert api.post(cloudevent(), token="").status_code == 401


def test_other_schemes_are_refused(client):
    response = client.post("/api/v1/events", "{}", content_type="application/json", HTTP_AUTHORIZATION=f"Basic {TOKEN}")
    assert response.status_code == 401


def test_get_is_not_allowed(api):
    assert api.get("/api/v1/events").status_code == 405


def test_stored_value_is_exact(api):
    assert api.post(cloudevent(data={"billed_seconds": 0.1})).status_code == 204
    assert Decimal(str(Event.objects.get().data["billed_seconds"])) == Decimal("0.1")
