"""
Ingest: CloudEvents in, Event rows out. The endpoint and `epsilon_simulate` both
go through `ingest_events`, so they validate and deduplicate the same way.

Invariant: a (source, id) is stored once, whichever path stores it; the first of a batch
wins, and a re-sent event is accepted and skipped. Both paths leave that to the
database's unique constraint (ON CONFLICT DO NOTHING), so two racing requests cannot
both store one event. All of a request is stored or none of it: every event is
validated, and a request with any invalid event is refused in a transaction that is
rolled back.

On PostgreSQL (the rate target, bench/README.md "Embedded meter") a request is validated
in parts of BULK_CHUNK events, and each valid part is sent, while the next is validated,
as one `INSERT ... SELECT FROM unnest(arrays) WITH ORDINALITY ORDER BY ordinality ON
CONFLICT DO NOTHING` (binary parameters, psycopg's pipeline mode): PostgreSQL inserts
one part on the other core while Python validates the next, the parts go in batch order
(so the first of a batch still wins), and once an invalid event is seen nothing more is
sent and the transaction is rolled back. Every other database (SQLite) validates the
whole request, then uses the ORM's insert (INSERT OR IGNORE).

Bodies are parsed by orjson where it reads them exactly as the standard library would:
orjson turns integers beyond 64 bits into floats, so a body with 19 digits in a row goes
to `json`, and so do a body nested deeper than 255 levels (json's own limit depends on
the stack) and any body orjson refuses (`json` then accepts or refuses it as before, with
its own message). `data` is written for PostgreSQL by orjson too, except
where `json` would write something else (integers beyond 64 bits, NaN and infinities,
which orjson writes as null): that is `json`'s, as the ORM path writes it.
"""

import contextlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import orjson
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
BULK_VENDORS = ("postgresql",)  # databases whose inserts go through unnest(arrays), pipelined
BULK_CHUNK = 250  # events validated, then sent as one insert, while the next are validated
BULK_COLUMNS = ("event_id", "source", "type", "subject", "time", "data")
# orjson reads integers beyond 64 bits as floats (json: exact ints). 19 digits in a row
# anywhere (strings included: cheap and safe) send the body to json. Found by mapping
# every digit to "0" and anything else to " " (bytes.translate) and looking for 19 zeros:
# a tenth of the CPU of a regular expression's search.
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_DIGITS = b"0" * 19


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


def _finite_float(text: str) -> float:
    """A JSON number as json reads it, refused when a double cannot hold it (1e400 is no infinity)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text} is out of a double's range")
    return value


def _loads(body: bytes):
    """The JSON value of `body`, as json.loads reads it, or IngestError."""
    if isinstance(body, (bytes, bytearray)) and _LONG_DIGITS not in body.translate(_DIGITS_AS_ZEROS):
        try:
            payload = orjson.loads(body)
            # orjson reads 1,024 levels of nesting, json fewer (Python's recursion limit less
            # the stack in use): orjson.dumps refuses more than 255 levels (0.1 us an event),
            # and json decides those bodies.
            orjson.dumps(payload)
            return payload
        except (orjson.JSONDecodeError, orjson.JSONEncodeError):
            pass  # json decides, and names the problem as it always did
    try:
        # NaN/Infinity are not JSON, and neither they nor a number beyond a double (which
        # json reads as an infinity) would survive storage.
        return json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise IngestError("body", f"is not valid JSON ({exc})") from None


def parse_body(body: bytes, content_type: str) -> tuple[list, bool]:
    """The raw events of a request body and whether it was a batch, or IngestError."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type not in CONTENT_TYPES:
        raise IngestError("Content-Type", f"must be one of {', '.join(CONTENT_TYPES)}, got {content_type or 'none'!r}")
    payload = _loads(body)
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
    Validate every event and store them all, or none (IngestError).
    A (source, id) already stored is skipped by the database's unique constraint, so
    a re-sent event is accepted but counted once, even when two requests race.
    Returns the number of events accepted (duplicates included).
    """
    now = timezone.now()
    meters = list(definitions.all_meters().values())
    if connection.vendor not in BULK_VENDORS:
        events, errors = validation.validate_events(raw_events, meters, now, batch=batch)
        _refuse(errors)
        with transaction.atomic():
            store(events, ingested_at=now, bulk=False)
        return len(events)
    if not isinstance(raw_events, Sequence):
        raw_events = list(raw_events)
    accepted, errors = 0, []
    with transaction.atomic():
        with _Inserter(now) as insert:
            for start in range(0, len(raw_events), BULK_CHUNK):
                events, invalid = validation.validate_events(
                    raw_events[start : start + BULK_CHUNK], meters, now, batch=batch, start=start
                )
                errors += invalid
                if not errors:
                    insert(events)
                accepted += len(events)
        _refuse(errors)  # rolls back what was sent
    return accepted


def _refuse(errors: list[validation.EventError]) -> None:
    if errors:
        first = errors[0]
        raise IngestError(first.field, first.message, first.index, errors)


def store(events: Sequence[validation.ValidEvent], *, ingested_at: datetime, bulk: bool | None = None) -> None:
    """
    Insert valid events, skipping any (source, id) already stored or earlier in `events`.
    `bulk` (default: on PostgreSQL) picks unnest(arrays); False, the ORM's multi-row insert.
    """
    if bulk is None:
        bulk = connection.vendor in BULK_VENDORS
    if bulk:
        with _Inserter(ingested_at) as insert:
            for i in range(0, len(events), BULK_CHUNK):
                insert(events[i : i + BULK_CHUNK])
        return
    rows = [
        Event(
            event_id=e.event_id, source=e.source, type=e.type, subject=e.subject,
            time=e.time, data=e.data, ingested_at=ingested_at,
        )
        for e in events
    ]
    Event.objects.bulk_create(rows, batch_size=INSERT_BATCH_SIZE, ignore_conflicts=True)


class _Inserter:
    """
    PostgreSQL: `insert(events)` sends one INSERT ... SELECT FROM unnest(arrays) WITH
    ORDINALITY, in the events' order, ON CONFLICT (source, id) DO NOTHING. In pipeline
    mode the statement is sent without waiting for it; leaving the context waits for
    them all (and raises a database error, if any).
    """

    def __init__(self, ingested_at: datetime):
        self.ingested_at = ingested_at
        self.encoder = Event._meta.get_field("data").encoder
        q = connection.ops.quote_name
        column = {f.name: q(f.column) for f in Event._meta.concrete_fields}
        names = ", ".join(column[n] for n in BULK_COLUMNS)
        types = ", ".join(
            f"%b::{'text' if n == 'data' else Event._meta.get_field(n).db_type(connection)}[]" for n in BULK_COLUMNS
        )
        aliases = ", ".join(f"c{i}" for i in range(len(BULK_COLUMNS)))
        values = ", ".join(f"c{i}::jsonb" if n == "data" else f"c{i}" for i, n in enumerate(BULK_COLUMNS))
        self.sql = (
            f"INSERT INTO {q(Event._meta.db_table)} ({names}, {column['ingested_at']}) "
            f"SELECT {values}, %b FROM unnest({types}) WITH ORDINALITY AS e({aliases}, n) ORDER BY n "
            f"ON CONFLICT ({column['source']}, {column['event_id']}) DO NOTHING"
        )

    def __enter__(self):
        connection.ensure_connection()
        conn = connection.connection  # psycopg's own connection: Django's cursor has no pipeline
        self._stack = contextlib.ExitStack()
        self.cursor = self._stack.enter_context(psycopg.Cursor(conn))
        if psycopg.Pipeline.is_supported():
            self._stack.enter_context(conn.pipeline())
        return self

    def __exit__(self, *exc_info):
        return self._stack.__exit__(*exc_info)

    def __call__(self, events: Sequence[validation.ValidEvent]) -> None:
        if not events:
            return
        event_ids, sources, types, subjects, times, data = zip(*events)
        self.cursor.execute(
            self.sql,
            [self.ingested_at, list(event_ids), list(sources), list(types), list(subjects), list(times),
             [None if d is None else self._json(d) for d in data]],
        )

    def _json(self, data) -> str:
        """`data` as JSONField's encoder writes it (what the ORM path stores), by orjson where equal."""
        try:
            text = orjson.dumps(data, option=orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS)
        except TypeError:  # integers beyond 64 bits, types orjson has no default for
            return json.dumps(data, cls=self.encoder)
        if b"null" in text:  # orjson writes NaN and infinities as null, json does not
            return json.dumps(data, cls=self.encoder)
        return text.decode()
