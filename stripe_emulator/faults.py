"""Fault injection and Stripe's limits, as pipeline stages.

Everything here is off unless configured (`FaultConfig`), through
`EmulatorServer(faults=FaultConfig(...))` or keyword arguments, the CLI
(`--fault-429 0.2 ...`), the control API (`GET/POST /_emulator/faults`,
`GET /_emulator/stats`) or the pytest handle (`stripe_emulator.set_faults(...)`).

Where the stages sit (outermost first):

    log -> fault_stats -> errors -> params -> auth -> version
        -> fault_limits     rate limits (token buckets) and the one-call-per-
                            (customer, meter) rule: 429 + Stripe-Rate-Limited-Reason
        -> fault_inject     random 429, hangs (timeouts) that run nothing, latency,
                            and dropping the connection for a lost response
        -> idempotency
        -> fault_after      random 500 (nothing recorded), lost responses and
                            timeouts after the event is recorded
        -> dispatch

So, as on Stripe, a 429 (rate limit or injected) is answered before the
idempotency layer and never stored: retrying with the same key runs the
request. An injected 500 is answered from inside it (the request "began
executing"), so v1 stores and replays it, as Stripe documents ("Retries with
the same key return the saved response, including 500 errors"), with
`Stripe-Should-Retry: false` as Stripe sends on such 500s. v2 stores only
successes (retries of failed v2 requests run again). A lost response records
the event, stores the 200 under the key, then drops the connection (or answers
500, `lost_mode="500"`). Timeouts hang until the client goes away (or
`timeout_s`), then drop the connection; `rate_timeout` runs nothing,
`rate_timeout_recorded` runs the request first.

Random faults apply to `paths` (default: the two meter event endpoints; `None`
or `("*",)`: every API call). One uniform draw per request picks at most one
fault, from a `random.Random(seed)`, so a seeded run is reproducible for a
given order of requests.

Limits (token buckets with a one-second burst, real time):
* `rate_limit_test`: requests/s for all test-mode API calls (Stripe's basic
  sandbox limit is 25; meter events count toward it) -> `global-rate`.
* `rate_limit_live`: live-mode `POST /v1/billing/meter_events` per second
  (Stripe: 1,000, a separate limit) -> `endpoint-rate`.
* `rate_limit_v2_test` / `rate_limit_v2_live`: events/s on the v2 meter event
  stream (Stripe: 10,000 live) -> `endpoint-rate`; a batch takes as many
  tokens as it has events.
* `concurrency_limit`: a second concurrent `POST /v1/billing/meter_events`
  for the same customer and meter -> 429 `concurrency_reason`
  (`endpoint-concurrency` by default).

Counters (`stats()`): requests and responses by status, 429s by reason,
injected faults, in-flight peaks overall, for meter event calls and per
(mode, customer, event name) key, whether or not the rule is enforced (so
a test can check a client never overlaps calls for one key).
"""

from __future__ import annotations

import dataclasses
import random
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

from .context import ApiResponse, Ctx
from .errors import ApiError, StripeError

V1_METER_EVENTS = "/v1/billing/meter_events"
V2_STREAM = "/v2/billing/meter_event_stream"
METER_EVENT_PATHS = (V1_METER_EVENTS, V2_STREAM)
RATE_LIMIT_REASONS = ("global-rate", "global-concurrency", "endpoint-rate",
                      "endpoint-concurrency", "resource-specific")
LOST_MODES = ("drop", "500")
STAGES = ("fault_stats", "fault_limits", "fault_inject", "fault_after")

# Stripe's documented limits, for `FaultConfig.stripe_limits()` / `--stripe-limits`.
STRIPE_TEST_RATE = 25.0        # sandbox: 25 operations/s, meter events included
STRIPE_LIVE_METER_RATE = 1000.0  # live v1 meter events: 1,000 calls/s
STRIPE_LIVE_V2_RATE = 10000.0  # v2 meter event stream: 10,000/s in live mode


@dataclass
class FaultConfig:
    rate_429: float = 0.0            # probability of an injected 429 (nothing recorded)
    reason_429: str = "global-rate"  # its Stripe-Rate-Limited-Reason
    rate_500: float = 0.0            # probability of a 500 api_error (nothing recorded)
    rate_lost: float = 0.0           # recorded, then the answer is lost
    lost_mode: str = "drop"          # "drop": close the connection; "500": answer 500
    rate_timeout: float = 0.0        # hang, run nothing, drop
    rate_timeout_recorded: float = 0.0  # run (recorded), then hang and drop
    timeout_s: float = 30.0          # the longest a hang lasts (it ends early if the client leaves)
    latency_ms: float = 0.0          # added to every selected call
    jitter_ms: float = 0.0           # plus uniform 0..jitter_ms
    seed: Optional[int] = None
    paths: Optional[Tuple[str, ...]] = METER_EVENT_PATHS  # None: all API calls
    concurrency_limit: bool = False
    concurrency_reason: str = "endpoint-concurrency"
    rate_limit_test: float = 0.0     # requests/s, test mode, all calls (0: off)
    rate_limit_live: float = 0.0     # live v1 meter event calls/s (0: off)
    rate_limit_v2_test: float = 0.0  # v2 stream events/s, test mode (0: off)
    rate_limit_v2_live: float = 0.0  # v2 stream events/s, live mode (0: off)

    @classmethod
    def stripe_limits(cls, **overrides) -> "FaultConfig":
        """Stripe's documented limits on, no random faults."""
        base = dict(rate_limit_test=STRIPE_TEST_RATE, rate_limit_live=STRIPE_LIVE_METER_RATE,
                    rate_limit_v2_live=STRIPE_LIVE_V2_RATE, concurrency_limit=True)
        base.update(overrides)
        return cls(**base).validated()

    def validated(self) -> "FaultConfig":
        for name in ("rate_429", "rate_500", "rate_lost", "rate_timeout",
                     "rate_timeout_recorded"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be a probability between 0 and 1, got {v}")
        total = (self.rate_429 + self.rate_500 + self.rate_lost + self.rate_timeout
                 + self.rate_timeout_recorded)
        if total > 1.0 + 1e-9:
            raise ValueError(f"the fault probabilities add up to {total} > 1")
        for name in ("timeout_s", "latency_ms", "jitter_ms", "rate_limit_test",
                     "rate_limit_live", "rate_limit_v2_test", "rate_limit_v2_live"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("reason_429", "concurrency_reason"):
            if getattr(self, name) not in RATE_LIMIT_REASONS:
                raise ValueError(f"{name} must be one of {', '.join(RATE_LIMIT_REASONS)}")
        if self.lost_mode not in LOST_MODES:
            raise ValueError("lost_mode must be 'drop' or '500'")
        if self.paths is not None:
            paths = tuple(self.paths)
            self.paths = None if paths in ((), ("*",), ("all",)) else paths
        return self

    def replace(self, **changes) -> "FaultConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown fault option(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes).validated()

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["paths"] = list(self.paths) if self.paths is not None else None
        return d


def coerce_options(raw: dict) -> dict:
    """Control API / CLI strings to FaultConfig field types."""
    types = {f.name: f.type for f in dataclasses.fields(FaultConfig)}
    out = {}
    for name, value in raw.items():
        if name not in types:
            raise TypeError(f"unknown fault option: {name}")
        t = str(types[name])
        if name == "paths":
            if value is None or value in ("", "all", "*", "null", "none"):
                out[name] = None
            elif isinstance(value, (list, tuple)):
                out[name] = tuple(value)
            else:
                out[name] = tuple(p.strip() for p in str(value).split(",") if p.strip())
        elif name == "seed":
            out[name] = None if value in (None, "", "null", "none") else int(value)
        elif t == "bool":
            out[name] = value if isinstance(value, bool) else \
                str(value).lower() in ("1", "true", "yes", "on")
        elif t == "float":
            out[name] = float(value)
        else:
            out[name] = str(value)
    return out


class TokenBucket:
    """`rate` tokens a second, at most `rate` banked (a one-second burst)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.clock = clock
        self.tokens = rate
        self.stamp = clock()
        self.lock = threading.Lock()

    def take(self, n: float = 1.0) -> bool:
        with self.lock:
            now = self.clock()
            self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            # A batch larger than the burst can still pass when the bucket is full.
            if self.tokens >= min(n, self.rate):
                self.tokens -= n
                return True
            return False


class Faults:
    """The configuration, the RNG, the buckets, the in-flight table and the counters."""

    def __init__(self, config: Optional[FaultConfig] = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.initial = (config or FaultConfig()).validated()
        self.clock = clock
        self.sleep = sleep  # how injected latency waits (tests record it instead)
        self._lock = threading.Lock()
        self.configure(self.initial)
        self.reset_stats()

    # --- configuration -------------------------------------------------------

    def configure(self, config: FaultConfig) -> FaultConfig:
        config = config.validated()
        with self._lock:
            self.config = config
            self.rng = random.Random(config.seed)
            self.buckets: Dict[str, TokenBucket] = {}
            for name, rate in (("test", config.rate_limit_test),
                               ("live_meter_events", config.rate_limit_live),
                               ("v2_test", config.rate_limit_v2_test),
                               ("v2_live", config.rate_limit_v2_live)):
                if rate > 0:
                    self.buckets[name] = TokenBucket(rate, self.clock)
        return config

    def set(self, **changes) -> FaultConfig:
        return self.configure(self.config.replace(**changes))

    def reset(self) -> None:
        """Back to the configuration the server started with; counters cleared."""
        self.configure(self.initial)
        self.reset_stats()

    # --- counters ----------------------------------------------------------------

    def reset_stats(self) -> None:
        with self._lock:
            self.by_status: Dict[str, int] = {}
            self.by_path: Dict[str, int] = {}
            self.rate_limited: Dict[str, int] = {}
            self.injected: Dict[str, int] = {}
            self.requests = 0
            self.in_flight = 0
            self.peak_in_flight = 0
            self.me_in_flight = 0
            self.peak_me_in_flight = 0
            self.key_in_flight: Dict[str, int] = {}
            self.peak_by_key: Dict[str, int] = {}
            self.v2_events: Dict[str, int] = {"received": 0, "duplicates": 0}

    def _bump(self, table: dict, key: str, n: int = 1) -> None:
        with self._lock:
            table[key] = table.get(key, 0) + n

    def count_v2(self, received: int, duplicates: int) -> None:
        with self._lock:
            self.v2_events["received"] += received
            self.v2_events["duplicates"] += duplicates

    def stats(self, store=None) -> dict:
        with self._lock:
            out = {
                "requests": self.requests,
                "by_status": dict(sorted(self.by_status.items())),
                "by_path": dict(sorted(self.by_path.items())),
                "rate_limited": dict(sorted(self.rate_limited.items())),
                "rate_limited_total": sum(self.rate_limited.values()),
                "faults_injected": dict(sorted(self.injected.items())),
                "in_flight": self.in_flight,
                "peak_concurrency": {
                    "overall": self.peak_in_flight,
                    "meter_events": self.peak_me_in_flight,
                    "max_per_key": max(self.peak_by_key.values(), default=0),
                    "by_key": dict(sorted(self.peak_by_key.items())),
                },
                "v2_stream_events": dict(self.v2_events),
            }
        if store is not None:
            out["meter_events"] = store.meter_event_counts()
        return out

    # --- decisions -----------------------------------------------------------------

    def selected(self, path: str) -> bool:
        paths = self.config.paths
        if paths is None:
            return True
        path = path.rstrip("/") or "/"
        for p in paths:
            if p.endswith("*") and path.startswith(p[:-1]):
                return True
            if path == p.rstrip("/"):
                return True
        return False

    def draw(self) -> Tuple[Optional[str], float]:
        """(fault or None, latency seconds) for one selected request."""
        c = self.config
        with self._lock:
            u = self.rng.random()
            jitter = self.rng.random() * c.jitter_ms if c.jitter_ms else 0.0
        fault = None
        for name, p in (("429", c.rate_429), ("500", c.rate_500), ("lost", c.rate_lost),
                        ("timeout", c.rate_timeout),
                        ("timeout_recorded", c.rate_timeout_recorded)):
            if u < p:
                fault = name
                break
            u -= p
        return fault, (c.latency_ms + jitter) / 1000.0


# --- helpers ------------------------------------------------------------------------


def is_v2(ctx: Ctx) -> bool:
    return ctx.path.startswith("/v2/")


def rate_limited(ctx: Ctx, reason: str, message: str) -> StripeError:
    ctx.app.faults._bump(ctx.app.faults.rate_limited, reason)
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
    from .middleware import error_response

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
    f = ctx.app.faults
    with f._lock:
        f.requests += 1
        f.in_flight += 1
        f.peak_in_flight = max(f.peak_in_flight, f.in_flight)
        f.by_path[f"{ctx.method} {ctx.path}"] = f.by_path.get(f"{ctx.method} {ctx.path}", 0) + 1
    status = "error"
    try:
        resp = call_next()
        status = "dropped" if ctx.notes.get("dropped") else str(resp.status)
        return resp
    finally:
        with f._lock:
            f.in_flight -= 1
            f.by_status[status] = f.by_status.get(status, 0) + 1


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
    with f._lock:
        if key is not None and c.concurrency_limit and f.key_in_flight.get(key, 0) >= 1:
            refused = True
        else:
            refused = False
            f.me_in_flight += 1
            f.peak_me_in_flight = max(f.peak_me_in_flight, f.me_in_flight)
            if key is not None:
                n = f.key_in_flight.get(key, 0) + 1
                f.key_in_flight[key] = n
                if n > f.peak_by_key.get(key, 0):
                    f.peak_by_key[key] = n
    if refused:
        raise rate_limited(ctx, c.concurrency_reason, CONCURRENCY_MESSAGE)
    try:
        return call_next()
    finally:
        with f._lock:
            f.me_in_flight -= 1
            if key is not None:
                n = f.key_in_flight.get(key, 1) - 1
                if n:
                    f.key_in_flight[key] = n
                else:
                    f.key_in_flight.pop(key, None)


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
        f._bump(f.injected, "429")
        ctx.notes["fault"] = "429"
        raise rate_limited(ctx, f.config.reason_429, RATE_MESSAGE)
    if fault == "timeout":
        f._bump(f.injected, "timeout")
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
        f._bump(f.injected, "500")
        ctx.notes["fault"] = "500"
        # Returned, not raised, so that the idempotency layer stores it (v1).
        return server_error(ctx, "An unknown error occurred (injected by the emulator: "
                                 "nothing was recorded).")
    resp = call_next()
    if resp.status >= 400:
        return resp  # nothing recorded: no "lost" success to simulate
    if fault == "lost":
        f._bump(f.injected, "lost")
        ctx.notes["fault"] = "lost"
        if f.config.lost_mode == "500":
            return server_error(ctx, "An unknown error occurred (injected by the emulator "
                                     "after the request was recorded).")
        ctx.notes["after"] = "lost_drop"
    elif fault == "timeout_recorded":
        f._bump(f.injected, "timeout_recorded")
        ctx.notes["fault"] = "timeout_recorded"
        ctx.notes["after"] = "timeout_recorded"
    return resp
