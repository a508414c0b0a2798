"""Test clocks: /v1/test_helpers/test_clocks (create, retrieve, list, delete, advance).

A customer created with `test_clock=clock_...` lives on the clock's
`frozen_time`: its subscriptions' periods, invoices and their finalization,
and the timestamp window of its meter events (billing_cycle.py).

Advancing (as documented by Stripe): `frozen_time` must be after the
current one, and at most two intervals of the clock's shortest active
subscription ahead of it (two years without subscriptions). The call
answers at once with `status: advancing` (and `status_details.advancing.
target_frozen_time`); the scheduler thread then runs the billing cycle of
the clock's customers up to the target and sets `status: ready` (event
`test_helpers.test_clock.ready`), or `internal_failure` if that failed.
Poll the clock until it is ready, as with Stripe. Deleting a clock deletes
its customers and cancels their subscriptions, without events for them.
"""

from __future__ import annotations

import traceback

from .. import billing_cycle, fixtures, ids, periods
from ..errors import InvalidRequest
from ..listing import paginate
from ..routing import LIST_PARAMS, route
from . import events
from .common import deleted, fetch, respond

TYPE = "test_helpers.test_clock"
DELETES_AFTER = 7 * 86400  # as in Stripe's example: created + 7 days
NO_SUBSCRIPTION_LIMIT = ("year", 1)


def _fetch_clock(ctx, obj_id: str) -> dict:
    return fetch(ctx, obj_id, TYPE, "test clock")


@route("/v1/test_helpers/test_clocks", ["POST"], ("frozen_time", "name"))
def create(ctx):
    clock = fixtures.template(TYPE)
    now = ctx.now()
    clock.update({"id": ids.new_id("clock"), "livemode": ctx.livemode, "created": now,
                  "deletes_after": now + DELETES_AFTER,
                  "frozen_time": ctx.int("frozen_time", required=True),
                  "name": ctx.str("name", max_length=300)})
    ctx.store.insert(clock)
    events.created(ctx, clock)
    return respond(ctx, clock)


@route("/v1/test_helpers/test_clocks/<obj_id>", ["GET"])
def retrieve(ctx, obj_id):
    return respond(ctx, _fetch_clock(ctx, obj_id))


@route("/v1/test_helpers/test_clocks", ["GET"], LIST_PARAMS)
def list_clocks(ctx):
    return paginate(ctx, ctx.store.all(TYPE, ctx.livemode), "/v1/test_helpers/test_clocks",
                    "test clock")


@route("/v1/test_helpers/test_clocks/<obj_id>", ["DELETE"])
def delete(ctx, obj_id):
    from .subscriptions import cancel_subscription

    clock = _fetch_clock(ctx, obj_id)
    for customer in ctx.store.all("customer", where=lambda c: c.get("test_clock") == obj_id):
        for sub in ctx.store.all("subscription", where=lambda s: s["customer"] == customer["id"]
                                 and s["status"] not in billing_cycle.CLOSED):
            cancel_subscription(ctx, sub, at=clock["frozen_time"])
        tomb = deleted(customer["id"], "customer")
        tomb["livemode"] = customer["livemode"]
        ctx.store.save(tomb)
    ctx.store.delete(obj_id)
    events.deleted(ctx, clock)
    return deleted(obj_id, TYPE)


def advance_limit(ctx, clock: dict) -> int:
    """Two intervals of the clock's shortest subscription past its frozen time."""
    from .subscriptions import items_of

    frozen = clock["frozen_time"]
    customers = {c["id"] for c in ctx.store.all("customer")
                 if c.get("test_clock") == clock["id"] and not c.get("deleted")}
    limits = []
    for sub in ctx.store.all("subscription", where=lambda s: s["customer"] in customers
                             and s["status"] not in billing_cycle.CLOSED):
        for item in items_of(ctx.store, sub["id"]):
            rec = ctx.store.get(item["price"], "price")["recurring"]
            limits.append(periods.boundary(frozen, rec["interval"], rec["interval_count"], 2))
    if not limits:
        limits.append(periods.boundary(frozen, *NO_SUBSCRIPTION_LIMIT, 2))
    return min(limits)


@route("/v1/test_helpers/test_clocks/<obj_id>/advance", ["POST"], ("frozen_time",))
def advance(ctx, obj_id):
    clock = _fetch_clock(ctx, obj_id)
    target = ctx.int("frozen_time", required=True)
    if clock["status"] == "advancing":
        raise InvalidRequest("The test clock is already advancing. Wait until its status is "
                             "`ready` before advancing it again.", param="frozen_time")
    if target <= clock["frozen_time"]:
        raise InvalidRequest(
            f"The frozen_time ({target}) must be after the test clock's current frozen time "
            f"({clock['frozen_time']}); test clocks only move forward.", param="frozen_time")
    limit = advance_limit(ctx, clock)
    if target > limit:
        raise InvalidRequest(
            f"Cannot advance the test clock to {target} ({periods.iso(target)}): that is more "
            "than two intervals of the shortest subscription on this clock (or two years "
            f"without subscriptions) ahead. Advance to {limit} ({periods.iso(limit)}) or "
            "earlier, then advance again.", param="frozen_time")
    clock.update({"status": "advancing",
                  "status_details": {"advancing": {"target_frozen_time": target}}})
    ctx.store.save(clock)
    events.emit(ctx, "test_helpers.test_clock.advancing", clock)
    scheduler = ctx.app.scheduler
    ctx.store.after_commit(lambda: scheduler.submit(lambda: _run_advance(ctx.store, obj_id,
                                                                         target)))
    return respond(ctx, clock)


def _run_advance(store, clock_id: str, target: int) -> None:
    try:
        billing_cycle.advance_clock(store, clock_id, target)
    except Exception:
        traceback.print_exc()
        with store.transaction():
            clock = store.get(clock_id, TYPE)
            if clock is not None:
                clock.update({"status": "internal_failure", "status_details": {}})
                store.save(clock)
