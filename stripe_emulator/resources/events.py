"""Events: /v1/events (list, retrieve), and how the rest of the emulator emits them.

An event's `data.object` is the object rendered when the event happened (a
snapshot, never expanded); updates carry `data.previous_attributes` with the
old values of what changed. Event types come from the object's type
(EVENT_PREFIX), so resources only say created / updated / deleted, or name
another verb (`invoice.finalized`). Events made by a request carry its
request id and idempotency key; those made by the billing cycle or a test
clock carry `{"id": null, "idempotency_key": null}`, as on Stripe.

Each stored event is published after its transaction commits, with the
webhook endpoints it is for (webhooks.py delivers it); `pending_webhooks`
counts those not yet delivered.
"""

from __future__ import annotations

import copy
import fnmatch
from typing import Optional

from .. import fixtures, ids, render
from ..context import DEFAULT_API_VERSION
from ..listing import paginate, range_filter
from ..routing import LIST_PARAMS, route
from . import v2_events
from .common import fetch

# object type -> event type prefix (`<prefix>.created` and so on).
EVENT_PREFIX = {
    "customer": "customer",
    "product": "product",
    "price": "price",
    "subscription": "customer.subscription",
    "invoice": "invoice",
    "billing.meter": "billing.meter",
    "test_helpers.test_clock": "test_helpers.test_clock",
}


class SystemCtx:
    """Enough of a request context to render objects and emit events when no
    request is running (the billing cycle, a test clock advancing)."""

    request_id = None
    idempotency_key = None
    params: dict = {}

    def __init__(self, store, livemode: bool = False):
        self.store = store
        self.livemode = livemode

    def now(self) -> int:
        return self.store.now()


def emit(ctx, type: str, obj: dict, previous_attributes: Optional[dict] = None,
         created: Optional[int] = None) -> dict:
    store = ctx.store
    livemode = bool(obj.get("livemode", ctx.livemode))
    event = fixtures.template("event")
    data = {"object": render.render(ctx, copy.deepcopy(obj))}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    endpoints = [e for e in store.all("webhook_endpoint", livemode)
                 if e["status"] == "enabled" and _enabled_for(e, type)]
    # v2 event destinations with `event_payload: snapshot` get v1 events too.
    endpoints += v2_events.snapshot_destinations(store, livemode, type)
    event.update({
        "id": ids.new_id("evt"), "api_version": DEFAULT_API_VERSION,
        "created": ctx.now() if created is None else int(created), "data": data,
        "livemode": livemode, "pending_webhooks": len(endpoints), "type": type,
        "request": {"id": getattr(ctx, "request_id", None),
                    "idempotency_key": getattr(ctx, "idempotency_key", None)},
    })
    store.insert(event)
    store.publish("event", {"event": event, "endpoints": [
        {"id": e["id"], "url": e["url"], "secret": e["secret"]} for e in endpoints]})
    return event


def _enabled_for(endpoint: dict, type: str) -> bool:
    enabled = endpoint.get("enabled_events") or []
    return "*" in enabled or type in enabled


def created(ctx, obj: dict, at: Optional[int] = None) -> dict:
    return emit(ctx, f"{EVENT_PREFIX[obj['object']]}.created", obj, created=at)


def deleted(ctx, obj: dict, at: Optional[int] = None) -> dict:
    return emit(ctx, f"{EVENT_PREFIX[obj['object']]}.deleted", obj, created=at)


def updated(ctx, before: dict, after: dict, at: Optional[int] = None) -> Optional[dict]:
    """`<type>.updated` with what changed, or nothing if nothing did (as on Stripe)."""
    old = render.render(ctx, copy.deepcopy(before))
    new = render.render(ctx, copy.deepcopy(after))
    previous = diff(old, new)
    if set(previous) <= {"updated"}:  # a bare touch is not a change
        return None
    return emit(ctx, f"{EVENT_PREFIX[after['object']]}.updated", after,
                previous_attributes=previous, created=at)


def diff(old: dict, new: dict) -> dict:
    """Stripe's previous_attributes: old values of changed keys; inside plain
    hashes (metadata, settings) only the changed keys, a key that was absent
    shows as null. Lists and list objects are given whole."""
    out = {}
    for key in set(old) | set(new):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict) and "object" not in a:
            out[key] = diff(a, b)
        else:
            out[key] = a
    return out


# --- endpoints ------------------------------------------------------------------


@route("/v1/events/<obj_id>", ["GET"])
def retrieve(ctx, obj_id):
    return fetch(ctx, obj_id, "event", "event")


@route("/v1/events", ["GET"], LIST_PARAMS + ("created", "delivery_success", "type", "types"))
def list_events(ctx):
    ctx.exclusive("type", "types")
    patterns = [ctx.str("type")] if ctx.has("type") else [str(t) for t in ctx.list("types") or []]
    patterns = [p for p in patterns if p]
    created_ok = range_filter(ctx, "created")
    delivered = ctx.bool("delivery_success")

    def keep(e):
        return ((not patterns or any(fnmatch.fnmatchcase(e["type"], p) for p in patterns))
                and (created_ok is None or created_ok(e["created"]))
                and (delivered is None or (e["pending_webhooks"] == 0) == delivered))

    return paginate(ctx, ctx.store.all("event", ctx.livemode, where=keep), "/v1/events", "event")
