"""
The PostgreSQL COPY path stores exactly what the ORM path stores and dedupes the same
way: a CloudEvent is its (source, id), the first of a batch wins, a re-sent one is
accepted and skipped. Run on both databases; the COPY path only exists on PostgreSQL.
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
    """Ingest through one insert path: the ORM's (any database) or COPY (PostgreSQL)."""
    if request.param == "copy" and connection.vendor != "postgresql":
        pytest.skip("COPY is PostgreSQL's")
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
    # Two calls in one transaction: nothing of the first is inserted again by the second
    # (the COPY path's staging table is emptied after each call).
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
    assert len(rows["orm"]) == 5
