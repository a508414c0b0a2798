"""Billing meters: /v1/billing/meters (create, retrieve, update, list, deactivate,
reactivate) and their event summaries.

Event summaries: `start_time` (inclusive) and `end_time` (exclusive) must be
on minute boundaries, and on hour / UTC-day boundaries when
`value_grouping_window` is `hour` / `day`. Without a grouping window one
summary covers the whole range; with one, there is one summary per window,
oldest first, empty windows included with 0 (Stripe's docs do not say how it
orders or whether it omits empty windows; this is the emulator's choice).
"""

from __future__ import annotations

import bisect
import hashlib
import string

from .. import aggregation, fixtures, ids
from ..context import MISSING, check_keys, coerce_str
from ..errors import InvalidRequest
from ..listing import paginate
from ..routing import LIST_PARAMS, route
from .common import fetch, respond

CREATE_PARAMS = ("customer_mapping", "default_aggregation", "display_name", "event_name",
                 "event_time_window", "value_settings")
FORMULAS = ("count", "last", "sum")
ALIGN = {None: 60, "hour": 3600, "day": 86400}
_B62 = string.digits + string.ascii_letters


def _fetch_meter(ctx, obj_id: str) -> dict:
    return fetch(ctx, obj_id, "billing.meter", "billing meter")


@route("/v1/billing/meters", ["POST"], CREATE_PARAMS)
def create(ctx):
    display_name = ctx.str("display_name", required=True, max_length=250)
    event_name = ctx.str("event_name", required=True, max_length=100)
    agg = ctx.dict("default_aggregation", required=True)
    check_keys(agg, ("formula",), "default_aggregation")
    formula = _nested_str(agg, "default_aggregation", "formula", required=True, choices=FORMULAS)
    meter = fixtures.template("billing.meter")
    now = ctx.now()
    meter.update({"id": ids.new_id("mtr", ctx.livemode), "livemode": ctx.livemode,
                  "created": now, "updated": now, "display_name": display_name,
                  "event_name": event_name, "default_aggregation": {"formula": formula},
                  "event_time_window": ctx.str("event_time_window", choices=("day", "hour"))})
    mapping = ctx.dict("customer_mapping")
    if mapping is not None:
        check_keys(mapping, ("event_payload_key", "type"), "customer_mapping")
        meter["customer_mapping"] = {
            "event_payload_key": _nested_str(mapping, "customer_mapping", "event_payload_key",
                                             required=True, max_length=100),
            "type": _nested_str(mapping, "customer_mapping", "type", required=True,
                                choices=("by_id",)),
        }
    settings = ctx.dict("value_settings")
    if settings is not None:
        check_keys(settings, ("event_payload_key",), "value_settings")
        meter["value_settings"] = {
            "event_payload_key": _nested_str(settings, "value_settings", "event_payload_key",
                                             required=True, max_length=100)}
    # "You can only use an event name with a single meter."
    for other in ctx.store.all("billing.meter", ctx.livemode):
        if other["event_name"] == event_name and other["status"] == "active":
            raise InvalidRequest(
                f"An active meter with event_name `{event_name}` already exists "
                f"({other['id']}). An event name can only be used with a single meter.",
                param="event_name")
    ctx.store.insert(meter)
    return respond(ctx, meter)


def _nested_str(src: dict, parent: str, key: str, **kw):
    return coerce_str(f"{parent}[{key}]", src.get(key, MISSING), **kw)


@route("/v1/billing/meters/<obj_id>", ["GET"])
def retrieve(ctx, obj_id):
    return respond(ctx, _fetch_meter(ctx, obj_id))


@route("/v1/billing/meters/<obj_id>", ["POST"], ("display_name",))
def update(ctx, obj_id):
    meter = _fetch_meter(ctx, obj_id)
    if ctx.has("display_name"):
        meter["display_name"] = ctx.str("display_name", required=True, max_length=250)
    meter["updated"] = ctx.now()
    ctx.store.save(meter)
    return respond(ctx, meter)


@route("/v1/billing/meters/<obj_id>/deactivate", ["POST"])
def deactivate(ctx, obj_id):
    meter = _fetch_meter(ctx, obj_id)
    if meter["status"] != "inactive":
        now = ctx.now()
        meter.update({"status": "inactive", "updated": now,
                      "status_transitions": {"deactivated_at": now}})
        ctx.store.save(meter)
    return respond(ctx, meter)


@route("/v1/billing/meters/<obj_id>/reactivate", ["POST"])
def reactivate(ctx, obj_id):
    meter = _fetch_meter(ctx, obj_id)
    if meter["status"] != "active":
        for other in ctx.store.all("billing.meter", ctx.livemode):
            if other["event_name"] == meter["event_name"] and other["status"] == "active":
                raise InvalidRequest(
                    f"An active meter with event_name `{meter['event_name']}` already exists "
                    f"({other['id']}).", param="id")
        meter.update({"status": "active", "updated": ctx.now(),
                      "status_transitions": {"deactivated_at": None}})
        ctx.store.save(meter)
    return respond(ctx, meter)


@route("/v1/billing/meters", ["GET"], LIST_PARAMS + ("status",))
def list_meters(ctx):
    status = ctx.str("status", choices=("active", "inactive"))
    items = ctx.store.all("billing.meter", ctx.livemode,
                          where=lambda m: status is None or m["status"] == status)
    return paginate(ctx, items, "/v1/billing/meters", "billing meter")


# --- event summaries -----------------------------------------------------------


def summary_id(meter_id: str, customer: str, start: int, end: int, livemode: bool) -> str:
    digest = int.from_bytes(
        hashlib.sha256(f"{meter_id}|{customer}|{start}|{end}".encode()).digest(), "big")
    chars = []
    for _ in range(32):
        digest, r = divmod(digest, 62)
        chars.append(_B62[r])
    return ("mtrusg_" if livemode else "mtrusg_test_") + "".join(chars)


@route("/v1/billing/meters/<obj_id>/event_summaries", ["GET"],
       LIST_PARAMS + ("customer", "end_time", "start_time", "value_grouping_window"))
def event_summaries(ctx, obj_id):
    meter = _fetch_meter(ctx, obj_id)
    customer = ctx.str("customer", required=True)
    start = ctx.int("start_time", required=True)
    end = ctx.int("end_time", required=True)
    window = ctx.str("value_grouping_window", choices=("day", "hour"))
    align = ALIGN[window]
    boundary = {60: "minute", 3600: "hour", 86400: "UTC day"}[align]
    for name, value in (("start_time", start), ("end_time", end)):
        if value % align:
            raise InvalidRequest(f"{name} must be aligned with {boundary} boundaries.",
                                 param=name)
    if end <= start:
        raise InvalidRequest("end_time must be after start_time.", param="end_time")
    windows = ([(start, end)] if window is None else
               [(t, min(t + align, end)) for t in range(start, end, align)])
    if len(windows) > 10000:
        raise InvalidRequest("The requested range has too many grouping windows.",
                             param="value_grouping_window")
    rows = ctx.store.aggregation_rows(meter["id"], customer, start, end)  # by timestamp
    stamps = [r[1] for r in rows]
    formula = meter["default_aggregation"]["formula"]
    summaries = []
    for w_start, w_end in windows:
        in_window = rows[bisect.bisect_left(stamps, w_start):bisect.bisect_left(stamps, w_end)]
        summaries.append({
            "aggregated_value": aggregation.aggregate(in_window, formula,
                                                      meter.get("event_time_window")),
            "end_time": w_end,
            "id": summary_id(meter["id"], customer, w_start, w_end, ctx.livemode),
            "livemode": ctx.livemode,
            "meter": meter["id"],
            "object": "billing.meter_event_summary",
            "start_time": w_start,
        })
    return paginate(ctx, summaries, f"/v1/billing/meters/{obj_id}/event_summaries",
                    "billing meter event summary")
