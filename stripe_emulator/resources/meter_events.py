"""Meter events (POST /v1/billing/meter_events) and adjustments.

Checked when the request arrives (400 like Stripe):
  * `event_name` and `payload` present; `identifier` and `event_name` at most
    100 characters; payload values are strings;
  * `timestamp` within the past 35 days (exactly 35*86400 s, as Stripe's
    error "Expected a timestamp greater than or equal to ..." shows) and at
    most 5 minutes ahead;
  * `identifier` not used by another event in the last 24 hours ("An event
    already exists with identifier ...", with Stripe-Should-Retry: false);
  * the value has at most 15 significant digits (2026-04-22.dahlia).

Checked later by Stripe and reported through meter error reports, so
accepted here with 200 and recorded with `status: "error"` and Stripe's
error code, visible in /_emulator/meter_events: no meter for the event name
(`no_meter`), deactivated meter (`archived_meter`), missing customer key
(`meter_event_no_customer_defined`), unknown customer
(`meter_event_customer_not_found`), missing or non-numeric value
(`meter_event_value_not_found`, `meter_event_invalid_value`). Such events
count in no summary; validation runs report them as thin events
(`v1.billing.meter.error_report_triggered`, `v1.billing.meter.no_meter_found`;
v2_events.py).

Values are kept as the exact strings sent. Negative values are allowed
(Stripe documents them for corrections); decimals are allowed.
"""

from __future__ import annotations

import re
import uuid

from .. import billing_cycle, fixtures
from ..errors import InvalidRequest
from ..routing import route
from ..store import ACCEPTED, CANCELED, ERROR

PAST_WINDOW = 35 * 86400
FUTURE_WINDOW = 5 * 60
DEDUPE_WINDOW = 24 * 3600
MAX_DIGITS = 15
NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def significant_digits(value: str) -> int:
    """Digits from the first non-zero one on: '0.00120' -> 3, '1200' -> 4."""
    return max(len(value.lstrip("-").replace(".", "").lstrip("0")), 1)


def _find_meter(ctx, event_name: str):
    """(meter or None, error code or None) for an event name, like Stripe's async step."""
    meters = ctx.store.all("billing.meter", ctx.livemode,
                           where=lambda m: m["event_name"] == event_name)
    active = [m for m in meters if m["status"] == "active"]
    if active:
        return active[0], None
    if meters:
        return meters[0], "archived_meter"
    return None, "no_meter"


@route("/v1/billing/meter_events", ["POST"], ("event_name", "identifier", "payload",
                                              "timestamp"))
def create(ctx):
    event_name = ctx.str("event_name", required=True, max_length=100)
    payload = ctx.dict("payload", required=True)
    for key, value in payload.items():
        if not isinstance(value, str):
            raise InvalidRequest("Invalid string: {...}", param=f"payload[{key}]")
    identifier = ctx.str("identifier", max_length=100) or str(uuid.uuid4())
    timestamp = ctx.int("timestamp")
    recorded = record(ctx, event_name=event_name, payload=payload, identifier=identifier,
                      timestamp=timestamp, synchronous=True)
    event = fixtures.template("billing.meter_event")
    event.update({"created": recorded["now"], "event_name": event_name,
                  "identifier": identifier, "livemode": ctx.livemode, "payload": payload,
                  "timestamp": recorded["timestamp"]})
    return event


def record(ctx, *, event_name: str, payload: dict, identifier: str, timestamp,
           synchronous: bool):
    """Validate and store one meter event; the v1 endpoint and the v2 stream share it.

    `synchronous` (v1): a timestamp outside the window, a reused identifier or
    too many digits is a 400. Otherwise (the v2 stream, which validates
    asynchronously): a reused identifier is dropped (returns None) and the
    others are stored with `status: "error"` and the code Stripe's meter error
    reports use (`timestamp_too_far_in_past`, `timestamp_in_future`,
    `meter_event_value_too_many_digits`).
    Returns {"now", "timestamp", "status", "error_code"} or None.
    """
    meter, error = _find_meter(ctx, event_name)
    value_key = meter["value_settings"]["event_payload_key"] if meter else "value"
    customer_key = (meter["customer_mapping"]["event_payload_key"] if meter
                    else "stripe_customer_id")
    customer = payload.get(customer_key)
    known = bool(customer) and _customer_exists(ctx, customer)
    # The timestamp window follows the customer's time (its test clock, if any).
    now = billing_cycle.customer_now(ctx.store, customer) if known else ctx.now()
    if timestamp is None:
        timestamp = now
    message = None
    late_error = None
    if timestamp < now - PAST_WINDOW:
        message = ("The event timestamp cannot be more than 35 days in past. Expected a "
                   f"timestamp greater than or equal to {now - PAST_WINDOW}.")
        if synchronous:
            raise InvalidRequest(message, param="timestamp")
        late_error = "timestamp_too_far_in_past"
    elif timestamp > now + FUTURE_WINDOW:
        message = ("The event timestamp cannot be more than 5 minutes in the future. Expected "
                   f"a timestamp less than or equal to {now + FUTURE_WINDOW}.")
        if synchronous:
            raise InvalidRequest(message, param="timestamp")
        late_error = "timestamp_in_future"
    if ctx.store.recent_meter_event(ctx.livemode, identifier, ctx.now() - DEDUPE_WINDOW):
        if not synchronous:
            return None
        raise InvalidRequest(f"An event already exists with identifier {identifier}.",
                             param="identifier", headers={"Stripe-Should-Retry": "false"})

    value = payload.get(value_key)
    if value is not None and NUMBER.fullmatch(value) and significant_digits(value) > MAX_DIGITS \
            and late_error is None:
        message = (f"The value in the event payload can have at most {MAX_DIGITS} digits. "
                   f"Received {value}.")
        if synchronous:
            raise InvalidRequest(message, code="meter_event_value_too_many_digits",
                                 param=f"payload[{value_key}]")
        late_error = "meter_event_value_too_many_digits"
    if late_error:
        error = late_error
    elif error == "no_meter":
        message = f"No active meter was found for event_name '{event_name}'."
    elif error == "archived_meter":
        message = f"The meter {meter['id']} for event_name '{event_name}' is deactivated."
    elif not customer:
        error = "meter_event_no_customer_defined"
        # Stripe's documented error report sample message.
        message = f"Customer mapping key {customer_key} not found in payload."
    elif not known:
        error, message = "meter_event_customer_not_found", f"No such customer: '{customer}'."
    elif meter["default_aggregation"]["formula"] != "count":
        if value is None:
            error = "meter_event_value_not_found"
            message = f"The event payload has no value under the key '{value_key}'."
        elif not NUMBER.fullmatch(value):
            error = "meter_event_invalid_value"
            message = f"The value '{value}' in the event payload is not a number."
    if known:
        # An invoice whose grace period ended before this event arrived is final
        # first, so a late event counts only while the invoice is a draft.
        billing_cycle.settle_customer(ctx.store, customer)
    status = ERROR if error else ACCEPTED
    ctx.store.add_meter_event(
        livemode=ctx.livemode, identifier=identifier, event_name=event_name,
        meter=meter["id"] if meter else None, customer=customer,
        value=value if value is not None and NUMBER.fullmatch(value) else None,
        timestamp=timestamp, created=ctx.now(), payload=payload,
        status=status, error_code=error, error_message=message if error else None)
    return {"now": now, "timestamp": timestamp, "status": status, "error_code": error}


def _customer_exists(ctx, customer_id: str) -> bool:
    c = ctx.store.get(customer_id, "customer")
    return c is not None and not c.get("deleted") and bool(c.get("livemode")) == ctx.livemode


@route("/v1/billing/meter_event_adjustments", ["POST"], ("cancel", "event_name", "type"))
def create_adjustment(ctx):
    event_name = ctx.str("event_name", required=True, max_length=100)
    ctx.str("type", required=True, choices=("cancel",))
    cancel = ctx.dict("cancel") or {}
    identifier = cancel.get("identifier")
    if not identifier:
        raise InvalidRequest("Missing required param: cancel[identifier].",
                             code="parameter_missing", param="cancel[identifier]")
    # Stripe only cancels events it received within the last 24 hours.
    event = ctx.store.recent_meter_event(ctx.livemode, identifier, ctx.now() - DEDUPE_WINDOW)
    if event is None or event["event_name"] != event_name:
        raise InvalidRequest(
            f"No meter event with identifier {identifier} and event_name {event_name} was "
            "received in the last 24 hours.", param="cancel[identifier]")
    if event["customer"]:
        billing_cycle.settle_customer(ctx.store, event["customer"])  # as for new events
    ctx.store.set_meter_event_status(event["seq"], CANCELED)
    adj = fixtures.template("billing.meter_event_adjustment")
    adj.update({"cancel": {"identifier": identifier}, "event_name": event_name,
                "livemode": ctx.livemode, "status": "pending"})
    return adj

