import itertools
import json

import pytest

from embedded_meter.models import MeterDefinition

TOKEN = "test-ingest-token"
_ids = itertools.count(1)


@pytest.fixture(autouse=True)
def ingest_token(settings):
    settings.EMBEDDED_METER_INGEST_TOKEN = TOKEN
    return TOKEN


def cloudevent(**overrides) -> dict:
    """A valid epsilon.execution CloudEvent for meter m1 (SUM of $.billed_seconds)."""
    event = {
        "specversion": "1.0",
        "id": f"evt-{next(_ids)}",
        "source": "tests",
        "type": "epsilon.execution",
        "subject": "cus_A",
        "time": "2026-11-01T10:15:00Z",
        "data": {"billed_seconds": 100},
    }
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not ...}


def make_meter(**fields) -> MeterDefinition:
    defaults = {
        "slug": "m_test",
        "event_type": "test.event",
        "aggregation": "SUM",
        "value_property": "$.value",
        "window_size": "MINUTE",
    }
    return MeterDefinition.objects.create(**{**defaults, **fields})


class Api:
    def __init__(self, client):
        self.client = client

    def post(self, body, content_type="application/cloudevents+json", token=TOKEN):
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token is not None else {}
        return self.client.generic("POST", "/api/v1/events", data, content_type=content_type, **headers)

    def get(self, path, params=None, token=TOKEN):
        headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token is not None else {}
        return self.client.get(path, params or {}, **headers)


@pytest.fixture
def api(client):
    return Api(client)
