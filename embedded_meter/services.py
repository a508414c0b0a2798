"""
Ingest: CloudEvents in, Event rows out. The endpoint and `epsilon_simulate` both
go through `ingest_events`, so they validate and deduplicate the same way.

Invariant: a (source, id) is stored once, whichever path stores it; the first of a batch
wins, and a re-sent event is accepted and skipped. Both paths leave that to the
database's unique constraint (ON CONFLICT DO NOTHING), so two racing requests cannot
both store one event. On PostgreSQL the rows are COPied (psycopg's `cursor.copy`) into a
temporary staging table and moved by one `INSERT ... SELECT ... ON CONFLICT DO NOTHING`,
several times cheaper than the ORM's multi-row VALUES, which every other database uses
(SQLite: INSERT OR IGNORE). Validation is the same for both: `ingest_events` stores only
what `validation` accepted, all of a request or nothing.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from django.db import connection, transaction
from django.utils import timezone

from . import definitions, validation
from .models import Event

SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
JSON = "application/json"
CONTENT_TYPES = (SINGLE, BATCH, JSON)

INSERT_BATCH_SIZE = 1000  # rows per multi-row VALUES insert (the ORM path)
COPY_VENDORS = ("postgresql",)  # databases whose inserts go through COPY
COPY_BATCH_SIZE = 50_000  # rows per COPY and insert (PostgreSQL)
STAGING = "embedded_meter_event_staging"  # a temporary table: one per database session
STAGED = ("event_id", "source", "type", "subject", "time", "data")


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
    with transaction.atomic():
        store(events, ingested_at=now)
    return len(events)


def store(events: Sequence[validation.ValidEvent], *, ingested_at: datetime, bulk: bool | None = None) -> None:
    """
    Insert valid events, skipping any (source, id) already stored or earlier in `events`.
    `bulk` (default: on PostgreSQL) picks COPY; False, the ORM's multi-row insert.
    """
    if bulk is None:
        bulk = connection.vendor in COPY_VENDORS
    if bulk:
        for i in range(0, len(events), COPY_BATCH_SIZE):
            _copy_insert(events[i : i + COPY_BATCH_SIZE], ingested_at)
        return
    rows = [
        Event(
            event_id=e.event_id, source=e.source, type=e.type, subject=e.subject,
            time=e.time, data=e.data, ingested_at=ingested_at,
        )
        for e in events
    ]
    Event.objects.bulk_create(rows, batch_size=INSERT_BATCH_SIZE, ignore_conflicts=True)


def _copy_insert(events: Sequence[validation.ValidEvent], ingested_at: datetime) -> None:
    """
    PostgreSQL: COPY the rows into a session-private staging table, then one INSERT ...
    SELECT in COPY order (so the first duplicate wins) ON CONFLICT DO NOTHING.
    """
    table = connection.ops.quote_name(Event._meta.db_table)
    column = {f.name: connection.ops.quote_name(f.column) for f in Event._meta.concrete_fields}
    names = ", ".join(column[n] for n in STAGED)
    encoder = Event._meta.get_field("data").encoder
    connection.ensure_connection()
    # psycopg's own cursor, for COPY (Django's cursor wrapper has no copy()).
    with psycopg.Cursor(connection.connection) as cursor:
        staged = ", ".join(f"{column[n]} {Event._meta.get_field(n).db_type(connection)}" for n in STAGED)
        cursor.execute(
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGING} (n bigint GENERATED ALWAYS AS IDENTITY, {staged})"
        )
        with cursor.copy(f"COPY {STAGING} ({names}) FROM STDIN") as copy:
            for e in events:
                # JSONField's own encoding (its encoder): what the ORM path stores.
                data = None if e.data is None else json.dumps(e.data, cls=encoder)
                copy.write_row((e.event_id, e.source, e.type, e.subject, e.time, data))
        cursor.execute(
            f"INSERT INTO {table} ({names}, {column['ingested_at']}) "
            f"SELECT {names}, %s FROM {STAGING} ORDER BY n "
            f"ON CONFLICT ({column['source']}, {column['event_id']}) DO NOTHING",
            [ingested_at],
        )
        cursor.execute(f"TRUNCATE {STAGING}")
