"""Many customers, each subscribed to a price, made at once for benchmarks
(`POST /_emulator/bulk_subscriptions`, control.py).

Invariant: what this makes is exactly what the API would make for the same
calls. Each customer and subscription is created by the API's own handler
(`POST /v1/customers`, then `POST /v1/subscriptions` with `items[0][price]`),
dispatched by the API pipeline's innermost stage (`middleware.dispatch`: route,
documented-param check, handler, store transaction) with a request context of
its own (its own request id, the price's mode, the given Stripe-Version), so
the objects, the `customer.created` and `customer.subscription.created` events
and their webhook deliveries are those of the API. What is skipped is the HTTP
around it: no key check, no rate limits, faults or latency, no idempotency
key (the events' `request.idempotency_key` is null), no entry in the request
log (a debugging aid, which 2N entries would flood).

Why: through HTTP a customer and its subscription cost two requests (~15 ms a
pair, one commit each plus an idempotency write); here `batch` pairs share one
store transaction, a few ms a pair. Batches commit one by one, so other
requests (and webhooks) interleave between them; an error stops at the failing
pair, whose batch is rolled back (the earlier batches stay).
"""

from __future__ import annotations

import time
from typing import Optional

from . import ids, middleware
from .context import DEFAULT_API_VERSION, Ctx
from .errors import StripeError

MAX_COUNT = 1_000_000
DEFAULT_BATCH = 200


class BulkError(Exception):
    """A pair could not be made: the API's error, and how many pairs were made before it."""

    def __init__(self, error: StripeError, made: dict):
        super().__init__(error.message)
        self.error, self.made = error, made


class InternalCtx(Ctx):
    """A request context for a call made inside the emulator (no HTTP request)."""

    def __init__(self, app, method: str, path: str, params: dict, *, livemode: bool,
                 stripe_version: str):
        self.app = app
        self.store = app.store
        self.request = None
        self.request_id = ids.request_id()
        self.method = method
        self.path = path
        self.params = params
        self.query_params = {} if method == "POST" else params
        self.body_params = params if method == "POST" else {}
        self.api_key = None
        self.livemode = livemode
        self.stripe_version = stripe_version
        self.idempotency_key = None
        self.idempotent_replayed = False
        self.route = None
        self.view_args = {}
        self.used = set()
        self.notes = {}

    @property
    def base_url(self) -> str:
        return ""


def call(app, method: str, path: str, params: dict, *, livemode: bool,
         stripe_version: str = DEFAULT_API_VERSION) -> dict:
    """The API's answer to one call (raises the API's StripeError)."""
    ctx = InternalCtx(app, method, path, params, livemode=livemode,
                      stripe_version=stripe_version)
    response = middleware.dispatch(ctx)
    return response.body


def bulk_subscriptions(app, *, count: int, price: str, email_prefix: str = "bulk",
                       email_domain: str = "example.com", start: int = 0,
                       metadata_n: bool = False, batch: int = DEFAULT_BATCH,
                       stripe_version: Optional[str] = None) -> dict:
    """
    `count` customers numbered `start` .. `start + count - 1`, customer n with email
    `{email_prefix}{n}@{email_domain}` (and `metadata[n] = n` if `metadata_n`), each
    subscribed to `price` (its mode decides the objects' mode). Returns
    {"count", "customers", "subscriptions", "seconds"}, ids in the order of n.
    Raises BulkError (with what was made) on the first pair the API refuses.
    """
    store = app.store
    version = stripe_version or DEFAULT_API_VERSION
    stored = store.get(price, "price")
    livemode = bool(stored.get("livemode")) if stored else False
    made = {"count": 0, "customers": [], "subscriptions": []}
    started = time.monotonic()
    n, end = start, start + count
    while n < end:
        upto = min(n + batch, end)
        customers, subscriptions = [], []
        try:
            with store.transaction():
                for k in range(n, upto):
                    params = {"email": f"{email_prefix}{k}@{email_domain}"}
                    if metadata_n:
                        params["metadata"] = {"n": str(k)}
                    customer = call(app, "POST", "/v1/customers", params, livemode=livemode,
                                    stripe_version=version)
                    subscription = call(app, "POST", "/v1/subscriptions",
                                        {"customer": customer["id"], "items": [{"price": price}]},
                                        livemode=livemode, stripe_version=version)
                    customers.append(customer["id"])
                    subscriptions.append(subscription["id"])
        except StripeError as e:
            made["seconds"] = round(time.monotonic() - started, 3)
            raise BulkError(e, made) from None
        made["customers"] += customers
        made["subscriptions"] += subscriptions
        made["count"] += len(customers)
        n = upto
    made["seconds"] = round(time.monotonic() - started, 3)
    return made
