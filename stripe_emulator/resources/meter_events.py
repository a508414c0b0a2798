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

Both endpoints record through `record`, a batch (one event for v1, a v2 stream
call's up to 100): one function per rule (`_window_error`, `_digits_error`,
`_async_error`; the identifier dedupe in `record`), applied to each event in
order as if it had arrived alone, with the reads shared across the batch.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from .. import billing_cycle, fixtures
from ..errors import InvalidRequest
from ..routing import route
from ..store import ACCEPTED, CANCELED, ERROR

PAST_WINDOW = 35 * 86400
FUTURE_WINDOW = 5 * 60
DEDUPE_WINDOW = 24 * 3600
MAX_DIGITS = 15
NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")


@dataclass
class Incoming:
    """One meter event as received: v1's params, or one entry of a v2 stream call."""
    event_name: str
    payload: dict
    identifier: str
    timestamp: Optional[int]  # None: the customer's now


def significant_digits(value: str) -> int:
    """Digits from the first non-zero one on: '0.00120' -> 3, '1200' -> 4."""
    return max(len(value.lstrip("-").replace(".", "").lstrip("0")), 1)


def _meters_by_name(ctx, names) -> Dict[str, Tuple[Optional[dict], Optional[str]]]:
    """{event name: (meter or None, error code or None)}, like Stripe's async step:
    the newest active meter with the name, else the newest (`archived_meter`), else
    `no_meter`. The mode's meters are read once for the whole batch."""
    meters = ctx.store.all("billing.meter", ctx.livemode)  # newest first
    out = {}
    for name in names:
        named = [m for m in meters if m["event_name"] == name]
        active = [m for m in named if m["status"] == "active"]
        out[name] = ((active[0], None) if active else (named[0], "archived_meter") if named
                     else (None, "no_meter"))
    return out


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
    [recorded] = record(ctx, [Incoming(event_name, payload, identifier, timestamp)],
                        synchronous=True)
    event = fixtures.template("billing.meter_event")
    event.update({"created": recorded["now"], "event_name": event_name,
                  "identifier": identifier, "livemode": ctx.livemode, "payload": payload,
                  "timestamp": recorded["timestamp"]})
    return event


def record(ctx, events: Sequence[Incoming], *, synchronous: bool) -> List[Optional[dict]]:
    """Validate and store meter events, in order; the v1 endpoint (a batch of one)
    and the v2 stream (a call's up to 100 events) share it.

    Each event is judged exactly as if it arrived alone after the ones before it
    (the first of a batch wins an identifier); only the reads are shared, so a
    batch costs a handful of queries, not a dozen per event: the mode's meters,
    the customers (one query), each distinct customer's time (`customer_now`) and
    billing cycle (`settle_customers`, once per customer, before any insert, so a
    late event counts only while its invoice is still a draft), the identifiers
    seen in the last 24 hours (one query), and one insert.

    `synchronous` (v1): a timestamp outside the window, a reused identifier or
    too many digits is a 400 (nothing is stored). Otherwise (the v2 stream,
    which validates asynchronously): a reused identifier is dropped (None in the
    result) and the others are stored with `status: "error"` and the code
    Stripe's meter error reports use (`timestamp_too_far_in_past`,
    `timestamp_in_future`, `meter_event_value_too_many_digits`).
    Returns, per event, {"now", "timestamp", "status", "error_code"} or None.
    """
    store = ctx.store
    arrived = ctx.now()
    meters = _meters_by_name(ctx, {e.event_name for e in events})
    customer_keys = [_customer_key(meters[e.event_name][0]) for e in events]
    customer_ids = {e.payload.get(key) for e, key in zip(events, customer_keys)}
    known = {cid: c for cid, c in store.fields_of(customer_ids, "customer", CUSTOMER_FIELDS)
             .items() if _is_customer(ctx, c)}
    # The timestamp window follows the customer's time (its test clock, if any).
    now_of = billing_cycle.customer_times(store, known)
    seen = store.recent_meter_identifiers(ctx.livemode, (e.identifier for e in events),
                                          arrived - DEDUPE_WINDOW)
    results: List[Optional[dict]] = []
    rows, to_settle = [], {}
    for e, customer_key in zip(events, customer_keys):
        meter, meter_error = meters[e.event_name]
        customer = e.payload.get(customer_key)
        is_known = bool(customer) and customer in known
        now = now_of[customer] if is_known else arrived
        timestamp = now if e.timestamp is None else e.timestamp
        late_error, message = _window_error(timestamp, now, synchronous)
        if e.identifier in seen:
            if not synchronous:
                results.append(None)
                continue
            raise InvalidRequest(f"An event already exists with identifier {e.identifier}.",
                                 param="identifier", headers={"Stripe-Should-Retry": "false"})
        seen.add(e.identifier)
        value_key = _value_key(meter)
        value = e.payload.get(value_key)
        number = value is not None and NUMBER.fullmatch(value) is not None
        if late_error is None and number:
            late_error, message = _digits_error(value, value_key, synchronous)
        if late_error:
            error = late_error
        else:
            error, message = _async_error(e, meter, meter_error, customer_key, customer,
                                          is_known, value_key, value, number)
        if is_known:
            to_settle[customer] = now
        status = ERROR if error else ACCEPTED
        rows.append({"livemode": ctx.livemode, "identifier": e.identifier,
                     "event_name": e.event_name, "meter": meter["id"] if meter else None,
                     "customer": customer, "value": value if number else None,
                     "timestamp": timestamp, "created": arrived, "payload": e.payload,
                     "status": status, "error_code": error,
                     "error_message": message if error else None})
        results.append({"now": now, "timestamp": timestamp, "status": status,
                        "error_code": error})
    # An invoice whose grace period ended before these events arrived is final
    # first, so a late event counts only while the invoice is a draft.
    billing_cycle.settle_customers(store, to_settle)
    store.add_meter_events(rows)
    return results


def _customer_key(meter: Optional[dict]) -> str:
    return meter["customer_mapping"]["event_payload_key"] if meter else "stripe_customer_id"


def _value_key(meter: Optional[dict]) -> str:
    return meter["value_settings"]["event_payload_key"] if meter else "value"


def _window_error(timestamp: int, now: int, synchronous: bool):
    """(error code, message) for a timestamp outside [now - 35 days, now + 5 minutes]
    by the customer's time, else (None, None); synchronous (v1): a 400."""
    if timestamp < now - PAST_WINDOW:
        code = "timestamp_too_far_in_past"
        message = ("The event timestamp cannot be more than 35 days in past. Expected a "
                   f"timestamp greater than or equal to {now - PAST_WINDOW}.")
    elif timestamp > now + FUTURE_WINDOW:
        code = "timestamp_in_future"
        message = ("The event timestamp cannot be more than 5 minutes in the future. Expected "
                   f"a timestamp less than or equal to {now + FUTURE_WINDOW}.")
    else:
        return None, None
    if synchronous:
        raise InvalidRequest(message, param="timestamp")
    return code, message


def _digits_error(value: str, value_key: str, synchronous: bool):
    """(error code, message) for a number with more than 15 significant digits, else
    (None, None); synchronous (v1): a 400."""
    if len(value) <= MAX_DIGITS or significant_digits(value) <= MAX_DIGITS:
        return None, None  # (at most 15 characters: at most 15 digits)
    message = (f"The value in the event payload can have at most {MAX_DIGITS} digits. "
               f"Received {value}.")
    if synchronous:
        raise InvalidRequest(message, code="meter_event_value_too_many_digits",
                             param=f"payload[{value_key}]")
    return "meter_event_value_too_many_digits", message


def _async_error(e: Incoming, meter, meter_error, customer_key, customer, is_known,
                 value_key, value, number: bool):
    """(code, message) of what Stripe's asynchronous validation rejects, first rule
    first, or (None, None) for an event that counts."""
    if meter_error == "no_meter":
        return meter_error, f"No active meter was found for event_name '{e.event_name}'."
    if meter_error == "archived_meter":
        return meter_error, (f"The meter {meter['id']} for event_name '{e.event_name}' is "
                             "deactivated.")
    if not customer:
        # Stripe's documented error report sample message.
        return ("meter_event_no_customer_defined",
                f"Customer mapping key {customer_key} not found in payload.")
    if not is_known:
        return "meter_event_customer_not_found", f"No such customer: '{customer}'."
    if meter["default_aggregation"]["formula"] != "count":
        if value is None:
            return ("meter_event_value_not_found",
                    f"The event payload has no value under the key '{value_key}'.")
        if not number:
            return ("meter_event_invalid_value",
                    f"The value '{value}' in the event payload is not a number.")
    return None, None


# What the checks need of a customer (not the whole document).
CUSTOMER_FIELDS = ("deleted", "livemode", "test_clock")


def _is_customer(ctx, c: dict) -> bool:
    """A customer events can be for: not deleted, and of the request's mode."""
    return not c.get("deleted") and bool(c.get("livemode")) == ctx.livemode


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

