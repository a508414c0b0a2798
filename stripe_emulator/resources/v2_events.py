"""Thin events (/v2/core/events), event destinations (/v2/core/event_destinations)
and the meter error reports that produce them.

Thin events (`object: "v2.core.event"`) are what Stripe's v2 event system
sends. A destination with `event_payload: "thin"` receives the notification
(`id`, `object`, `type`, `created`, `livemode`, `context`, `reason`,
`related_object`), signed like a v1 webhook (webhooks.py's dispatcher
delivers it); `GET /v2/core/events/{id}` adds the "fetched attributes"
`data` and `changes`. Timestamps are RFC 3339 strings, as everywhere in v2.

Meter error reports: meter events that Stripe accepts and validates later
(v1 and the v2 stream) are stored with `status: "error"` and an error code
(meter_events.py). A validation run (`run_validation`: the scheduler's tick
while `app.meter_validation_auto` is on, `POST /_emulator/meter_events/validate`,
or `StripeEmulator.validate_meter_events()` in pytest) collects the errors
stored since the previous run into one report per meter and mode:

* `v1.billing.meter.error_report_triggered` (`related_object`: the meter) for
  errors of a known meter (`meter_event_customer_not_found`,
  `meter_event_no_customer_defined`, `meter_event_invalid_value`,
  `meter_event_value_not_found`, `archived_meter`, `timestamp_in_future`,
  `timestamp_too_far_in_past`, `meter_event_value_too_many_digits`);
* `v1.billing.meter.no_meter_found` (no related object) for `no_meter`
  errors (no active or inactive meter has the event name), one per mode.

`data`, as Stripe's example shows it: `developer_message_summary` ("There is 1
invalid event"), `reason.error_count`, `reason.error_types[]` (`code`,
`error_count`, `sample_errors[]` with `error_message` and
`request.identifier`, the meter event's identifier), `validation_start` (the
earliest error's arrival) and `validation_end` (the run's time).
"""

from __future__ import annotations

import base64
import json
import re
from typing import List, Optional

from .. import ids
from ..errors import InvalidRequest
from ..listing import range_filter
from ..routing import route
from ..store import ERROR
from . import meter_event_stream
from .common import fetch, update_metadata

EVENT_TYPE = "v2.core.event"
DESTINATION_TYPE = "v2.core.event_destination"
ERROR_REPORT_TRIGGERED = "v1.billing.meter.error_report_triggered"
NO_METER_FOUND = "v1.billing.meter.no_meter_found"
PING = "v2.core.event_destination.ping"
MAX_SAMPLE_ERRORS = 5          # per error code in one report (not documented)
VALIDATION_CURSOR = "meter_validation_cursor"
EVENT_NAME = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")
DEFAULT_LIMIT, MAX_LIMIT = 20, 100

rfc3339 = meter_event_stream.rfc3339


def _v2_id(prefix: str, livemode: bool, n: int = 46) -> str:
    # Stripe's v2 ids: evt_test_65RCjj..., ed_test_61...; live ids lack `test_`.
    return f"{prefix}_{'' if livemode else 'test_'}{'65' if prefix == 'evt' else '61'}" \
        + ids.random_part(n)


# --- thin events ----------------------------------------------------------------


def notification(event: dict) -> dict:
    """The thin payload a destination receives (no `data`, no `changes`)."""
    out = {"id": event["id"], "object": EVENT_TYPE, "type": event["type"],
           "created": rfc3339(event["created"]), "livemode": event["livemode"],
           "context": None, "reason": event.get("reason")}
    if event.get("related_object") is not None:
        out["related_object"] = event["related_object"]
    return out


def render_event(event: dict) -> dict:
    """What GET /v2/core/events/{id} answers: the notification plus the fetched
    attributes."""
    out = notification(event)
    out["changes"] = event.get("changes")
    out["data"] = event.get("data")
    return out


def emit_thin(store, type: str, livemode: bool, related_object: Optional[dict],
              data: Optional[dict], created: int, reason: Optional[dict] = None,
              only_destination: Optional[dict] = None) -> dict:
    event = {"id": _v2_id("evt", livemode), "object": EVENT_TYPE, "type": type,
             "created": int(created), "livemode": livemode, "reason": reason,
             "related_object": related_object, "changes": None, "data": data,
             "object_id": related_object["id"] if related_object else None}
    store.insert(event, EVENT_TYPE)
    if only_destination is not None:
        destinations = [only_destination]
    else:
        destinations = [d for d in store.all(DESTINATION_TYPE, livemode)
                        if d["status"] == "enabled" and d["event_payload"] == "thin"
                        and enabled_for(d, type)]
    if destinations:
        store.publish("event", {"event": notification(event), "endpoints": [
            {"id": d["id"], "url": d["_url"], "secret": d["_signing_secret"]}
            for d in destinations]})
    return event


def enabled_for(destination: dict, type: str) -> bool:
    enabled = destination.get("enabled_events") or []
    return "*" in enabled or type in enabled


def snapshot_destinations(store, livemode: bool, type: str) -> List[dict]:
    """Enabled `event_payload: snapshot` webhook destinations for a v1 event type,
    as (id, url, secret) endpoints for the dispatcher (events.emit uses it)."""
    return [{"id": d["id"], "url": d["_url"], "secret": d["_signing_secret"]}
            for d in store.all(DESTINATION_TYPE, livemode)
            if d["status"] == "enabled" and d["event_payload"] == "snapshot"
            and enabled_for(d, type)]


def _page(ctx, items: List[dict], path: str, render) -> dict:
    """v2 list: `data`, `next_page_url`, `previous_page_url`; `page` is an opaque token."""
    limit = ctx.int("limit", default=DEFAULT_LIMIT, min=1, max=MAX_LIMIT)
    offset = 0
    token = ctx.str("page")
    if token:
        try:
            offset = int(json.loads(base64.urlsafe_b64decode(token.encode()).decode())["o"])
        except Exception:
            raise InvalidRequest("Invalid page: not a page token returned by this list.",
                                 param="page")
    page = items[offset:offset + limit]

    def url(o):
        t = base64.urlsafe_b64encode(json.dumps({"o": o}).encode()).decode()
        return f"{path}?limit={limit}&page={t}"

    return {"data": [render(o) for o in page],
            "next_page_url": url(offset + limit) if offset + limit < len(items) else None,
            "previous_page_url": url(max(offset - limit, 0)) if offset > 0 else None}


def _created_filter(ctx):
    """v2 `created[gte]` etc. take RFC 3339 strings (stripe-python sends them)."""
    spec = ctx.raw("created")
    if spec is None or spec == "":
        return None
    if not isinstance(spec, dict):
        raise InvalidRequest("Invalid created: expected an object of gt/gte/lt/lte.",
                             param="created")
    bounds = {}
    for op, raw in spec.items():
        if op not in ("gt", "gte", "lt", "lte"):
            raise InvalidRequest(f"Received unknown parameter: created.{op}",
                                 code="parameter_unknown", param=f"created.{op}")
        bounds[op] = (int(raw) if isinstance(raw, int) or str(raw).lstrip("-").isdigit()
                      else meter_event_stream.parse_rfc3339(raw, f"created.{op}"))
    return lambda v: (("gt" not in bounds or v > bounds["gt"])
                      and ("gte" not in bounds or v >= bounds["gte"])
                      and ("lt" not in bounds or v < bounds["lt"])
                      and ("lte" not in bounds or v <= bounds["lte"]))


def _string_list(ctx, name: str, max_items: Optional[int] = None) -> Optional[List[str]]:
    value = ctx.raw(name)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(f"Invalid {name}: must be an array of strings.", param=name)
    if max_items is not None and len(value) > max_items:
        raise InvalidRequest(f"Invalid {name}: at most {max_items} values.", param=name)
    return value


@route("/v2/core/events", ["GET"], ("created", "limit", "object_id", "page", "types"))
def list_events(ctx):
    object_id = ctx.str("object_id")
    types = _string_list(ctx, "types", max_items=20)
    created_ok = _created_filter(ctx)
    horizon = ctx.now() - 30 * 86400  # "List events, going back up to 30 days."

    def keep(e):
        return (e["created"] >= horizon
                and (object_id is None or e.get("object_id") == object_id)
                and (not types or e["type"] in types)
                and (created_ok is None or created_ok(e["created"])))

    return _page(ctx, ctx.store.all(EVENT_TYPE, ctx.livemode, where=keep), "/v2/core/events",
                 render_event)


@route("/v2/core/events/<obj_id>", ["GET"])
def retrieve_event(ctx, obj_id):
    return render_event(fetch(ctx, obj_id, EVENT_TYPE, "event"))


# --- event destinations -----------------------------------------------------------

INCLUDABLE = ("webhook_endpoint.signing_secret", "webhook_endpoint.url")


def render_destination(dest: dict, include=()) -> dict:
    out = {k: v for k, v in dest.items() if not k.startswith("_")}
    out["created"] = rfc3339(dest["created"])
    out["updated"] = rfc3339(dest["updated"])
    if dest["type"] == "webhook_endpoint":
        out["webhook_endpoint"] = {
            "signing_secret": (dest["_signing_secret"]
                               if "webhook_endpoint.signing_secret" in include else None),
            "url": dest["_url"] if "webhook_endpoint.url" in include else None}
    return out


def _include(ctx, allowed=INCLUDABLE) -> List[str]:
    include = _string_list(ctx, "include") or []
    for i, v in enumerate(include):
        if v not in allowed:
            raise InvalidRequest(f"Invalid include[{i}]: must be one of "
                                 f"{', '.join(allowed)}.", param=f"include[{i}]")
    return include


def _enabled_events(ctx) -> List[str]:
    events = _string_list(ctx, "enabled_events")
    if not events:
        raise InvalidRequest("Missing required param: enabled_events.",
                             code="parameter_missing", param="enabled_events")
    for i, name in enumerate(events):
        if name != "*" and not EVENT_NAME.match(name):
            raise InvalidRequest(f"Invalid event type: {name}", param=f"enabled_events[{i}]")
    return events


def _webhook_url(ctx) -> str:
    config = ctx.dict("webhook_endpoint")
    url = (config or {}).get("url")
    if not url:
        raise InvalidRequest("Missing required param: webhook_endpoint.url.",
                             code="parameter_missing", param="webhook_endpoint.url")
    if not isinstance(url, str) or not re.match(r"^https?://[^\s/]+", url):
        raise InvalidRequest(f"Invalid URL: {url}. URLs must begin with http:// or https://.",
                             param="webhook_endpoint.url")
    return url


@route("/v2/core/event_destinations", ["POST"],
       ("amazon_eventbridge", "azure_event_grid", "description", "enabled_events",
        "event_payload", "events_from", "include", "metadata", "name", "snapshot_api_version",
        "type", "webhook_endpoint"))
def create_destination(ctx):
    name = ctx.str("name", required=True, max_length=5000)
    dtype = ctx.str("type", required=True)
    if dtype != "webhook_endpoint":
        raise InvalidRequest(f"Event destinations of type {dtype!r} are not supported by the "
                             "local Stripe emulator (only webhook_endpoint).", param="type")
    payload = ctx.str("event_payload", required=True, choices=("snapshot", "thin"))
    include = _include(ctx)
    now = ctx.now()
    dest = {
        "id": _v2_id("ed", ctx.livemode), "object": DESTINATION_TYPE,
        "amazon_eventbridge": None, "azure_event_grid": None, "created": now,
        "description": ctx.str("description", max_length=5000) or "",
        "enabled_events": _enabled_events(ctx), "event_payload": payload,
        "events_from": _string_list(ctx, "events_from"), "livemode": ctx.livemode,
        "metadata": update_metadata(ctx, {}), "name": name,
        "snapshot_api_version": (ctx.str("snapshot_api_version") if payload == "snapshot"
                                 else None),
        "status": "enabled", "status_details": None, "type": dtype, "updated": now,
        "_url": _webhook_url(ctx),
        "_signing_secret": "whsec_" + ids.random_part(ids.LENGTHS["whsec"]),
    }
    ctx.store.insert(dest, DESTINATION_TYPE)
    return render_destination(dest, include)


@route("/v2/core/event_destinations", ["GET"], ("include", "limit", "page"))
def list_destinations(ctx):
    include = _include(ctx, ("webhook_endpoint.url",))
    return _page(ctx, ctx.store.all(DESTINATION_TYPE, ctx.livemode),
                 "/v2/core/event_destinations", lambda d: render_destination(d, include))


def _fetch_destination(ctx, obj_id):
    return fetch(ctx, obj_id, DESTINATION_TYPE, "event destination")


@route("/v2/core/event_destinations/<obj_id>", ["GET"], ("include",))
def retrieve_destination(ctx, obj_id):
    return render_destination(_fetch_destination(ctx, obj_id),
                              _include(ctx, ("webhook_endpoint.url",)))


@route("/v2/core/event_destinations/<obj_id>", ["DELETE"])
def delete_destination(ctx, obj_id):
    _fetch_destination(ctx, obj_id)
    ctx.store.delete(obj_id)
    return {"id": obj_id, "object": DESTINATION_TYPE, "deleted": True}


def _set_status(ctx, obj_id, status):
    dest = _fetch_destination(ctx, obj_id)
    dest["status"] = status
    dest["status_details"] = {"disabled": {"reason": "user"}} if status == "disabled" else None
    dest["updated"] = ctx.now()
    ctx.store.save(dest)
    return render_destination(dest)


@route("/v2/core/event_destinations/<obj_id>/disable", ["POST"])
def disable_destination(ctx, obj_id):
    return _set_status(ctx, obj_id, "disabled")


@route("/v2/core/event_destinations/<obj_id>/enable", ["POST"])
def enable_destination(ctx, obj_id):
    return _set_status(ctx, obj_id, "enabled")


@route("/v2/core/event_destinations/<obj_id>/ping", ["POST"])
def ping_destination(ctx, obj_id):
    """Sends a `v2.core.event_destination.ping` thin event to this destination only."""
    dest = _fetch_destination(ctx, obj_id)
    related = {"id": dest["id"], "type": DESTINATION_TYPE,
               "url": f"/v2/core/event_destinations/{dest['id']}"}
    reason = {"type": "request", "request": {"id": ctx.request_id,
                                             "idempotency_key": ctx.idempotency_key}}
    event = emit_thin(ctx.store, PING, ctx.livemode, related, None, ctx.now(), reason=reason,
                      only_destination=dest)
    return render_event(event)


# --- meter error reports ------------------------------------------------------------


def _summary(n: int) -> str:
    return f"There is 1 invalid event" if n == 1 else f"There are {n} invalid events"


def _report_data(errors: List[dict], end: int) -> dict:
    by_code: dict = {}
    for e in errors:
        by_code.setdefault(e["error_code"], []).append(e)
    return {
        "developer_message_summary": _summary(len(errors)),
        "reason": {"error_count": len(errors), "error_types": [
            {"code": code, "error_count": len(evs), "sample_errors": [
                {"error_message": e["error_message"] or code,
                 "request": {"identifier": e["identifier"]}}
                for e in evs[:MAX_SAMPLE_ERRORS]]}
            for code, evs in by_code.items()]},
        "validation_end": rfc3339(end),
        "validation_start": rfc3339(min(e["created"] for e in errors)),
    }


def run_validation(store) -> List[dict]:
    """Report the meter event errors stored since the last run; the emitted events."""
    out = []
    with store.transaction():
        cursor = int(store.meta_get(VALIDATION_CURSOR) or 0)
        errors = store.meter_events_after(cursor, status=ERROR)
        store.meta_set(VALIDATION_CURSOR, str(max(store.meter_event_max_seq(), cursor)))
        if not errors:
            return out
        now = store.now()
        groups: dict = {}
        for e in errors:
            key = (e["livemode"], None if e["error_code"] == "no_meter" else e["meter"])
            groups.setdefault(key, []).append(e)
        for (livemode, meter_id), evs in groups.items():
            if meter_id is None:
                out.append(emit_thin(store, NO_METER_FOUND, livemode, None,
                                     _report_data(evs, now), now))
            else:
                related = {"id": meter_id, "type": "billing.meter",
                           "url": f"/v1/billing/meters/{meter_id}"}
                out.append(emit_thin(store, ERROR_REPORT_TRIGGERED, livemode, related,
                                     _report_data(evs, now), now))
    return out
