"""
The PostgreSQL bulk path (INSERT ... SELECT FROM unnest(arrays), a part of BULK_CHUNK
events at a time, pipelined with validation) stores exactly what the ORM path stores and
dedupes the same way: a CloudEvent is its (source, id), the first of a batch wins, a
re-sent one is accepted and skipped, a request with an invalid event stores nothing even
when earlier parts were already sent. Run on both databases; the bulk path only exists on
PostgreSQL ("copy" below, its name when it was COPY into a staging table).
"""

from datetime import UTC, datetime

import pytest
from django.db import connection, transaction
from django.utils import timezone

from embedded_meter import services
from embedded_meter.models import Event

from .conftest import cloudevent

pytestmark = pytest.mark.django_db

BATCH = "application/cloudevents-batch+json"


@pytest.fixture(params=["orm", "copy"])
def store_path(request, monkeypatch):
    """Ingest through one insert path: the ORM's (any database) or the bulk one (PostgreSQL)."""
    if request.param == "copy" and connection.vendor != "postgresql":
        pytest.skip("the bulk path is PostgreSQL's")
    monkeypatch.setattr(services, "BULK_VENDORS", ("postgresql",) if request.param == "copy" else ())
    return request.param


def stored():
    return {(e.source, e.event_id): e.data for e in Event.objects.all()}


def test_the_same_event_twice_in_a_batch_is_stored_once_the_first_wins(api, store_path):
    first, again = cloudevent(id="twice", data={"billed_seconds": 1}), cloudevent(id="twice", data={"billed_seconds": 2})
    assert api.post([first, cloudevent(id="other"), again], BATCH).status_code == 204
    assert stored() == {("tests", "twice"): {"billed_seconds": 1}, ("tests", "other"): {"billed_seconds": 100}}


def test_an_event_resent_in_a_later_batch_is_accepted_and_skipped(api, store_path):
    assert api.post([cloudevent(id="a"), cloudevent(id="b", data={"billed_seconds": 5})], BATCH).status_code == 204
    assert api.post([cloudevent(id="b", data={"billed_seconds": 9}), cloudevent(id="c")], BATCH).status_code == 204
    assert stored() == {
        ("tests", "a"): {"billed_seconds": 100},
        ("tests", "b"): {"billed_seconds": 5},
        ("tests", "c"): {"billed_seconds": 100},
    }


def test_the_same_id_from_two_sources_is_two_events(api, store_path):
    body = [cloudevent(id="same", source="a"), cloudevent(id="same", source="b"), cloudevent(id="same", source="a")]
    assert api.post(body, BATCH).status_code == 204
    assert set(stored()) == {("a", "same"), ("b", "same")}


def test_an_invalid_event_stores_none_of_its_batch(api, store_path):
    response = api.post([cloudevent(id="ok"), cloudevent(id="bad", source="not a uri")], BATCH)
    assert response.status_code == 400
    assert Event.objects.count() == 0


def test_a_call_stores_only_its_own_events(store_path):
    # Two calls in one transaction: nothing of the first is inserted again by the second.
    with transaction.atomic():
        services.ingest_events([cloudevent(id="first")])
        Event.objects.filter(event_id="first").delete()
        services.ingest_events([cloudevent(id="second")])
    assert set(stored()) == {("tests", "second")}


EVENTS = [
    cloudevent(id="n1", time="2026-11-01T12:15:30.123456789+02:00", data={"billed_seconds": 250}),
    cloudevent(id="n2", type="no.meter", data=None),  # no meter counts it: data may be absent
    cloudevent(id="n3", subject="cus_é✓", data={"billed_seconds": "12.50", "nested": {"a": [1, 2.5, None, True]}}),
    cloudevent(id="n4", data={"billed_seconds": 1e-7, "text": "quote ' \" \\ tab\t newline\n"}),
    cloudevent(id="n1", data={"billed_seconds": 999}),  # a duplicate: skipped
    cloudevent(id="n5", time=..., data={"billed_seconds": 3}),
    # Beyond orjson: an integer over 64 bits, a null (orjson writes NaN as null), a float.
    cloudevent(id="n6", data={"billed_seconds": 123456789012345678901234567890, "none": None, "f": 0.1}),
    cloudevent(id="n7", type="no.meter", data={"list": [], "empty": {}, "neg": -0.0, "big": -2**63, "u64": 2**64 - 1}),
]


def test_copy_stores_the_rows_the_orm_stores(postgres_only, monkeypatch):
    now = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
    monkeypatch.setattr(timezone, "now", lambda: now)
    rows = {}
    for path in ("orm", "copy"):
        monkeypatch.setattr(services, "BULK_VENDORS", ("postgresql",) if path == "copy" else ())
        assert services.ingest_events(EVENTS) == len(EVENTS)
        rows[path] = sorted(Event.objects.values_list("event_id", "source", "type", "subject", "time", "data", "ingested_at"))
        Event.objects.all().delete()
    assert rows["copy"] == rows["orm"]
    assert len(rows["orm"]) == 7
    big = next(r for r in rows["orm"] if r[0] == "n6")[5]["billed_seconds"]
    assert big == 123456789012345678901234567890 and isinstance(big, int)


def batch_of(n, **overrides):
    return [cloudevent(id=f"b{i}", subject=f"cus_{i % 7}", data={"billed_seconds": i}, **overrides) for i in range(n)]


def test_a_batch_of_several_parts_is_stored_whole_in_order(api, store_path):
    events = batch_of(3 * services.BULK_CHUNK + 17)
    # The same (source, id) again in a later part, with other data: the first stays.
    events.insert(2 * services.BULK_CHUNK + 5, cloudevent(id="b3", data={"billed_seconds": 999}))
    assert api.post(events, BATCH).status_code == 204
    got = stored()
    assert len(got) == 3 * services.BULK_CHUNK + 17
    assert got[("tests", "b3")] == {"billed_seconds": 3}


def test_an_invalid_event_in_a_later_part_stores_nothing_and_names_every_error(api, store_path):
    events = batch_of(3 * services.BULK_CHUNK)
    late = 2 * services.BULK_CHUNK + 3
    events[late]["time"] = "not a time"
    events[-1]["source"] = "not a uri"
    response = api.post(events, BATCH)
    assert response.status_code == 400
    body = response.json()
    assert body["index"] == late and body["field"] == "time"
    assert [e["index"] for e in body["errors"]] == [late, len(events) - 1]
    assert Event.objects.count() == 0
    # Nothing half-done is left behind: the same batch, corrected, is stored whole.
    events[late]["time"], events[-1]["source"] = "2026-11-01T10:15:00Z", "tests"
    assert api.post(events, BATCH).status_code == 204
    assert len(stored()) == len(events)


def test_ingest_events_counts_accepted_events_duplicates_included(store_path):
    events = batch_of(services.BULK_CHUNK + 1)
    assert services.ingest_events(events + events[:3]) == len(events) + 3
    assert Event.objects.count() == len(events)
