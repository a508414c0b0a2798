"""
Ingest: CloudEvents in, Event rows out. The endpoint and `epsilon_simulate` both
go through `ingest_events`, so they validate and deduplicate the same way.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from . import definitions, validation
from .models import Event

SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
JSON = "application/json"
CONTENT_TYPES = (SINGLE, BATCH, JSON)

INSERT_BATCH_SIZE = 1000


@dataclass(eq=False)
class IngestError(Exception):
    """The request is refused as a whole; nothing was stored."""

    field: str
    message: str
    index: int | None = None
    errors: list[validation.EventError] = field(default_factory=list)

    @property
    def detail(self) -> str:
        if self.errors:
            first = self.errors[0].describe()
            more = len(self.errors) - 1
            return f"{first} (and {more} more invalid event{'s' if more > 1 else ''})" if more else first
        return f"{self.field}: {self.message}"

    def __str__(self):
        return self.detail


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def parse_body(body: bytes, content_type: str) -> tuple[list, bool]:
    """The raw events of a request body and whether it was a batch, or IngestError."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type not in CONTENT_TYPES:
        raise IngestError("Content-Type", f"must be one of {', '.join(CONTENT_TYPES)}, got {content_type or 'none'!r}")
    try:
        # NaN/Infinity are not JSON and would not survive storage.
        payload = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise IngestError("body", f"is not valid JSON ({exc})") from None
    if media_type == SINGLE and not isinstance(payload, dict):
        raise IngestError("body", f"{SINGLE} takes one event (a JSON object); send arrays as {BATCH}")
    if media_type == BATCH and not isinstance(payload, list):
        raise IngestError("body", f"{BATCH} takes a JSON array of events")
    if isinstance(payload, list):
        return payload, True
    if isinstance(payload, dict):
        return [payload], False
    raise IngestError("body", "must be an event (a JSON object) or an array of events")


def ingest_events(raw_events: Sequence, *, batch: bool = True) -> int:
    """
    Validate every event, then store them all in one bulk insert, or none (IngestError).
    A (source, id) already stored is skipped by the database's unique constraint, so
    a re-sent event is accepted but counted once, even when two requests race.
    Returns the number of events accepted (duplicates included).
    """
    now = timezone.now()
    events, errors = validation.validate_events(
        raw_events, definitions.all_meters().values(), now, batch=batch
    )
    if errors:
        first = errors[0]
        raise IngestError(first.field, first.message, first.index, errors)
    rows = [
        Event(
            event_id=e.event_id,
            source=e.source,
            type=e.type,
            subject=e.subject,
            time=e.time,
            data=e.data,
            ingested_at=now,
        )
        for e in events
    ]
    with transaction.atomic():
        Event.objects.bulk_create(rows, batch_size=INSERT_BATCH_SIZE, ignore_conflicts=True)
    return len(rows)
