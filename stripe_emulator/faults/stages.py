"""The fault stages of the request pipeline, and the helpers they answer with.

Where they sit (outermost first; app.py builds the pipeline):

    log -> fault_stats -> errors -> params -> auth -> version
        -> fault_limits     rate limits (token buckets) and the one-call-per-
                            (customer, meter) rule: 429 + Stripe-Rate-Limited-Reason
        -> fault_inject     random 429, hangs (timeouts) that run nothing, latency,
                            and dropping the connection for a lost response
        -> idempotency
        -> fault_after      random 500 (nothing recorded), lost responses and
                            timeouts after the event is recorded
        -> dispatch

The order is the invariant: a 429 (rate limit or injected) is answered before
the idempotency layer and never stored, so retrying with the same key runs the
request, as on Stripe; an injected 500 is answered from inside it ("the
endpoint began executing"), so v1 stores and replays it. Each stage does
nothing until the configuration in force (`ctx.app.faults`) asks.
"""

from __future__ import annotations

import select
import socket
import time
from typing import Optional

from ..context import ApiResponse, Ctx
from ..errors import ApiError, StripeError
from .config import V1_METER_EVENTS, V2_STREAM


# --- helpers ------------------------------------------------------------------------


def is_v2(ctx: Ctx) -> bool:
    return ctx.path.startswith("/v2/")


def rate_limited(ctx: Ctx, reason: str, message: str) -> StripeError:
    ctx.app.faults.counters.rate_limited(reason)
    if is_v2(ctx):
        return StripeError(message, code="rate_limit", type="rate_limit", status=429,
                           headers={"Stripe-Rate-Limited-Reason": reason})
    return StripeError(message, code="rate_limit", type="invalid_request_error", status=429,
                       headers={"Stripe-Rate-Limited-Reason": reason})


RATE_MESSAGE = ("Request rate limit exceeded. Learn more about rate limits here "
                "https://stripe.com/docs/rate-limits.")
CONCURRENCY_MESSAGE = ("This request conflicts with another meter event request for the same "
                       "customer and meter that is still in progress: send one meter event "
                       "request at a time per customer and meter. Learn more about rate limits "
                       "here https://stripe.com/docs/rate-limits.")


def server_error(ctx: Ctx, message: str) -> ApiResponse:
    """A 500 api_error as Stripe sends it: v1 with Stripe-Should-Retry: false (the
    idempotency layer would replay it anyway), v2 without (v2 retries run again)."""
    from ..middleware import error_response

    headers = {} if is_v2(ctx) else {"Stripe-Should-Retry": "false"}
    return error_response(ctx, ApiError(message, headers=headers))


def _client_gone(sock) -> bool:
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def hang(ctx: Ctx, seconds: float) -> None:
    """Wait `seconds`, or until the client closes its side of the connection."""
    sock = ctx.request.environ.get("werkzeug.socket")
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        if sock is not None and _client_gone(sock):
            return
        time.sleep(min(0.02, left))


def drop_connection(ctx: Ctx) -> None:
    """Close the connection without an answer: the client sees it drop."""
    sock = ctx.request.environ.get("werkzeug.socket")
    ctx.notes["dropped"] = True
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _meter_event_key(ctx: Ctx) -> Optional[str]:
    """(mode, customer, meter) of a v1 meter event call, as a string key."""
    payload = ctx.params.get("payload")
    event_name = ctx.params.get("event_name")
    if not isinstance(payload, dict) or not isinstance(event_name, str):
        return None
    customer = payload.get("stripe_customer_id")
    if customer is None:
        # A meter may map the customer from another payload key.
        meters = ctx.store.all("billing.meter", ctx.livemode,
                               where=lambda m: m["event_name"] == event_name)
        if meters:
            customer = payload.get(meters[0]["customer_mapping"]["event_payload_key"])
    if not isinstance(customer, str):
        return None
    return f"{'live' if ctx.livemode else 'test'}:{customer}:{event_name}"


# --- the stages -------------------------------------------------------------------------


def fault_stats(ctx: Ctx, call_next) -> ApiResponse:
    """Outermost counting stage: requests, statuses, overall concurrency."""
    counters = ctx.app.faults.counters
    counters.request_started(ctx.method, ctx.path)
    status = "error"
    try:
        resp = call_next()
        status = "dropped" if ctx.notes.get("dropped") else str(resp.status)
        return resp
    finally:
        counters.request_finished(status)


def fault_limits(ctx: Ctx, call_next) -> ApiResponse:
    """Token buckets and the one-call-per-(customer, meter) rule."""
    f = ctx.app.faults
    c = f.config
    buckets = f.buckets
    if buckets:
        if not ctx.livemode and "test" in buckets and not buckets["test"].take():
            raise rate_limited(ctx, "global-rate", RATE_MESSAGE)
        if ctx.method == "POST" and ctx.path.rstrip("/") == V1_METER_EVENTS and ctx.livemode \
                and "live_meter_events" in buckets \
                and not buckets["live_meter_events"].take():
            raise rate_limited(ctx, "endpoint-rate", RATE_MESSAGE)
        if ctx.method == "POST" and ctx.path.rstrip("/") == V2_STREAM:
            bucket = buckets.get("v2_live" if ctx.livemode else "v2_test")
            events = ctx.params.get("events")
            n = len(events) if isinstance(events, list) and events else 1
            if bucket is not None and not bucket.take(n):
                raise rate_limited(ctx, "endpoint-rate", RATE_MESSAGE)

    if ctx.method != "POST" or ctx.path.rstrip("/") != V1_METER_EVENTS:
        return call_next()
    key = _meter_event_key(ctx)
    if not f.counters.meter_event_started(key, exclusive=c.concurrency_limit):
        raise rate_limited(ctx, c.concurrency_reason, CONCURRENCY_MESSAGE)
    try:
        return call_next()
    finally:
        f.counters.meter_event_finished(key)


def fault_inject(ctx: Ctx, call_next) -> ApiResponse:
    """Before idempotency: injected 429s, unrecorded timeouts, latency; then, after
    the inner stages ran, drops the connection when they asked for it."""
    f = ctx.app.faults
    if not f.selected(ctx.path):
        return call_next()
    fault, latency = f.draw()
    if latency > 0:
        f.sleep(latency)
    if fault == "429":
        f.counters.injected("429")
        ctx.notes["fault"] = "429"
        raise rate_limited(ctx, f.config.reason_429, RATE_MESSAGE)
    if fault == "timeout":
        f.counters.injected("timeout")
        ctx.notes["fault"] = "timeout"
        hang(ctx, f.config.timeout_s)
        drop_connection(ctx)
        # The client is gone; this answer is only for the request log.
        return server_error(ctx, "Injected timeout: nothing was run.")
    ctx.notes["planned_fault"] = fault
    resp = call_next()
    after = ctx.notes.get("after")
    if after == "timeout_recorded":
        hang(ctx, f.config.timeout_s)
        drop_connection(ctx)
    elif after == "lost_drop":
        drop_connection(ctx)
    return resp


def fault_after(ctx: Ctx, call_next) -> ApiResponse:
    """After idempotency (inside "the endpoint began executing")."""
    fault = ctx.notes.get("planned_fault")
    if fault is None:
        return call_next()
    f = ctx.app.faults
    if fault == "500":
        f.counters.injected("500")
        ctx.notes["fault"] = "500"
        # Returned, not raised, so that the idempotency layer stores it (v1).
        return server_error(ctx, "An unknown error occurred (injected by the emulator: "
                                 "nothing was recorded).")
    resp = call_next()
    if resp.status >= 400:
        return resp  # nothing recorded: no "lost" success to simulate
    if fault == "lost":
        f.counters.injected("lost")
        ctx.notes["fault"] = "lost"
        if f.config.lost_mode == "500":
            return server_error(ctx, "An unknown error occurred (injected by the emulator "
                                     "after the request was recorded).")
        ctx.notes["after"] = "lost_drop"
    elif fault == "timeout_recorded":
        f.counters.injected("timeout_recorded")
        ctx.notes["fault"] = "timeout_recorded"
        ctx.notes["after"] = "timeout_recorded"
    return resp
