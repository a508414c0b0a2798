"""The v2 high-throughput meter event API.

* `POST /v2/billing/meter_event_session` (API key): a session whose
  `authentication_token` is valid for 15 minutes of the emulator clock
  (`created`/`expires_at` are RFC 3339 strings, as v2 objects have them).
* `POST /v2/billing/meter_event_stream` (on the `meter_events` base address;
  here the same server), `Authorization: Bearer <token>`, JSON
  `{"events": [{event_name, payload, identifier?, timestamp?}, ...]}`, 1 to
  100 events: answers 200 `{}` (Stripe's documented response is an empty
  object). An expired token is 401 `temporary_session_expired` /
  `billing_meter_event_session_expired` (middleware.py).

The request's shape is checked synchronously (400); the events themselves
are validated asynchronously, as Stripe documents for the stream: they go
into the same store as v1 meter events (same 24-hour identifier dedupe, same
timestamp window, same totals and invoices); an event whose identifier was
already used in the last 24 hours is dropped, and one Stripe would reject
later is stored with `status: "error"` and its meter error report code (see
/_emulator/meter_events); validation runs report them as thin events
(v2_events.py). A call's events are recorded as one batch by the v1 code
(`meter_events.record`): the same verdicts as one by one, in order, with the
reads shared, because a reporting run sends 100,000 events in 1,000 calls and
the emulator shares the machine with the app it measures.
"""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timezone
from typing import Optional

from .. import ids
from ..context import ApiResponse
from ..errors import InvalidRequest
from ..routing import route
from . import meter_events

SESSION_TTL = 15 * 60
MAX_EVENTS = 100
SESSION_TYPE = "v2.billing.meter_event_session"
EVENT_FIELDS = ("event_name", "identifier", "payload", "timestamp")

# token -> session id, so authenticating a stream call does not scan the store.
_tokens: dict = {}
_tokens_lock = threading.Lock()


def rfc3339(ts: int) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def parse_rfc3339(value, param: str) -> int:
    if not isinstance(value, str):
        raise InvalidRequest(f"Invalid timestamp: expected an RFC 3339 string, got {value!r}.",
                             param=param)
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"Invalid timestamp: {value!r} is not an RFC 3339 date-time.",
                             param=param)
    if dt.tzinfo is None:
        raise InvalidRequest(f"Invalid timestamp: {value!r} has no time zone offset.",
                             param=param)
    return int(dt.timestamp())


def find_session(store, token: str) -> Optional[dict]:
    with _tokens_lock:
        sid = _tokens.get(token)
    if sid is not None:
        session = store.get(sid, SESSION_TYPE)
        if session is not None:
            return session
    # Not cached (a restarted emulator with --db): look it up.
    found = store.all(SESSION_TYPE, where=lambda s: s["authentication_token"] == token)
    if not found:
        return None
    with _tokens_lock:
        _tokens[token] = found[0]["id"]
    return found[0]


def render_session(session: dict) -> dict:
    return {"id": session["id"], "object": SESSION_TYPE,
            "authentication_token": session["authentication_token"],
            "created": rfc3339(session["created"]),
            "expires_at": rfc3339(session["expires_at"]),
            "livemode": session["livemode"]}


@route("/v2/billing/meter_event_session", ["POST"])
def create_session(ctx):
    now = ctx.now()
    mode = "live" if ctx.livemode else "test"
    session = {"id": "mes_" + ids.random_part(24), "object": SESSION_TYPE,
               "authentication_token": f"ek_{mode}_" + ids.random_part(48),
               "created": now, "expires_at": now + SESSION_TTL, "livemode": ctx.livemode}
    ctx.store.insert(session, SESSION_TYPE)
    with _tokens_lock:
        _tokens[session["authentication_token"]] = session["id"]
    return render_session(session)


@route("/v2/billing/meter_event_stream", ["POST"], ("events",))
def create_events(ctx):
    events = ctx.raw("events")
    if events is None:
        raise InvalidRequest("Missing required param: events.", code="parameter_missing",
                             param="events")
    if not isinstance(events, list):
        raise InvalidRequest("Invalid events: must be an array.", param="events")
    if not events:
        raise InvalidRequest("Invalid events: must contain at least 1 event.", param="events")
    if len(events) > MAX_EVENTS:
        raise InvalidRequest(
            f"Invalid events: at most {MAX_EVENTS} events can be sent per request, got "
            f"{len(events)}.", param="events")
    checked = []
    for i, ev in enumerate(events):
        where = f"events[{i}]"
        if not isinstance(ev, dict):
            raise InvalidRequest(f"Invalid {where}: must be an object.", param=where)
        for key in ev:
            if key not in EVENT_FIELDS:
                raise InvalidRequest(f"Received unknown parameter: {where}.{key}",
                                     code="parameter_unknown", param=f"{where}.{key}")
        name = ev.get("event_name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(f"Missing required param: {where}.event_name.",
                                 code="parameter_missing", param=f"{where}.event_name")
        if len(name) > 100:
            raise InvalidRequest(f"Invalid {where}.event_name: must be at most 100 characters.",
                                 param=f"{where}.event_name")
        payload = ev.get("payload")
        if not isinstance(payload, dict):
            raise InvalidRequest(f"Missing required param: {where}.payload.",
                                 code="parameter_missing", param=f"{where}.payload")
        for key, value in payload.items():
            if not isinstance(value, str):
                raise InvalidRequest(f"Invalid {where}.payload.{key}: must be a string.",
                                     param=f"{where}.payload.{key}")
        identifier = ev.get("identifier")
        if identifier is not None and (not isinstance(identifier, str) or len(identifier) > 100):
            raise InvalidRequest(f"Invalid {where}.identifier: must be a string of at most 100 "
                                 "characters.", param=f"{where}.identifier")
        ts = ev.get("timestamp")
        timestamp = None if ts is None else parse_rfc3339(ts, f"{where}.timestamp")
        checked.append(meter_events.Incoming(name, payload, identifier or str(uuid.uuid4()),
                                             timestamp))
    # The whole call in one batch: the same verdicts as event by event, with the
    # reads shared (meter_events.record).
    results = meter_events.record(ctx, checked, synchronous=False)
    ctx.app.faults.counters.count_v2(len(checked), results.count(None))
    return ApiResponse(200, {})
