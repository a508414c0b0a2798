"""The billing cycle: what happens when a customer's time passes a boundary.

A customer's time is its test clock's `frozen_time`, or the emulator clock
(clock.py) for customers without one. Two kinds of boundary:

* a subscription's `current_period_end` (a trial's end, or an earlier
  `cancel_at`): the items move to the next period, a draft invoice for the
  closed period is created, `latest_invoice` points at it, and
  `customer.subscription.updated` (previous_attributes: the old `items`,
  `latest_invoice`, and `status` when a trial ends) and `invoice.created` are
  emitted; a due `cancel_at` cancels instead (`customer.subscription.deleted`)
  with a final invoice for the last period's metered usage;
* a draft invoice's `automatically_finalizes_at`: it is finalized.

They are processed in time order, each stamped with its own time, however
far time jumped. Each changes the stored state that made it due, inside one
store transaction, so it happens exactly once per period whichever way time
moves: a test clock advancing, the emulator clock being set, or real time
passing (noticed by the scheduler's tick or lazily whenever a customer's
subscriptions, invoices or meter events are touched). Settling a customer
first asks the store for its earliest boundary (Store.earliest_boundaries, one
query for a whole meter event batch) and does nothing more when that is still
ahead of the customer's time, which is almost always the case.
"""

from __future__ import annotations

import copy
from typing import Callable, Dict, Optional

from . import render
from .resources import events

CLOSED = ("canceled", "incomplete_expired")


def customer_now(store, customer_id: Optional[str]) -> int:
    return _time_on(clock_of(store, customer_id), store.now())


def customer_times(store, customers: Dict[str, dict]) -> Dict[str, int]:
    """customer_now of customers already read ({id: document, or at least its
    `test_clock`}), each test clock read once: a meter event batch asks this for up
    to 100 customers at a time."""
    clocks: dict = {}
    now = store.now()
    out = {}
    for customer_id, customer in customers.items():
        clock_id = customer.get("test_clock")
        if clock_id and clock_id not in clocks:
            clocks[clock_id] = store.get(clock_id, "test_helpers.test_clock")
        out[customer_id] = _time_on(clocks[clock_id] if clock_id else None, now)
    return out


def _time_on(clock: Optional[dict], now: int) -> int:
    """A customer's time: its test clock's frozen_time, else the emulator clock's `now`."""
    return clock["frozen_time"] if clock else now


def clock_of(store, customer_id: Optional[str]) -> Optional[dict]:
    customer = store.get(customer_id, "customer") if customer_id else None
    clock_id = (customer or {}).get("test_clock")
    return store.get(clock_id, "test_helpers.test_clock") if clock_id else None


def settle_customer(store, customer_id: str) -> None:
    """Bring one customer's subscriptions and invoices up to its time."""
    with store.transaction():
        settle_customers(store, {customer_id: customer_now(store, customer_id)})


def settle_customers(store, now_by_customer: Dict[str, int]) -> None:
    """Bring customers up to their times ({id: customer_now}). One query
    (Store.earliest_boundaries) finds those with something possibly due; only they
    are processed, so settling the 100 customers of a meter event batch that have
    nothing due costs one query, not a dozen per customer."""
    with store.transaction():
        earliest = store.earliest_boundaries(now_by_customer)
        for customer_id, now in now_by_customer.items():
            at = earliest.get(customer_id)
            if at is not None and at <= now:
                _process(store, lambda c, cid=customer_id: c == cid, now,
                         customer_id=customer_id)


def settle_all(store) -> None:
    """Everything that follows the emulator clock (the scheduler's tick)."""
    with store.transaction():
        now = store.now()
        for customer_id in store.customers_with_due_boundaries(now):
            if clock_of(store, customer_id) is None:  # test clock customers move with their clock
                _process(store, lambda c, cid=customer_id: c == cid, now, customer_id=customer_id)


def advance_clock(store, clock_id: str, target: int) -> None:
    """Run a test clock's customers up to `target`, then mark the clock ready."""
    with store.transaction():
        clock = store.get(clock_id, "test_helpers.test_clock")
        if clock is None:
            return  # deleted (or the emulator was reset) meanwhile
        customers = {c["id"] for c in store.all("customer")
                     if c.get("test_clock") == clock_id}
        _process(store, lambda c: c in customers, target)
        clock.update({"frozen_time": target, "status": "ready", "status_details": {}})
        store.save(clock)
        ctx = events.SystemCtx(store, clock["livemode"])
        events.emit(ctx, "test_helpers.test_clock.ready", clock, created=target)


def _process(store, in_scope: Callable[[str], bool], now: int, customer_id: Optional[str] = None) -> None:
    while True:
        due = _next_due(store, in_scope, now, customer_id)
        if due is None:
            return
        at, kind, obj = due
        ctx = events.SystemCtx(store, bool(obj.get("livemode")))
        if kind == "finalize":
            from .resources import invoices
            invoices.finalize(ctx, obj, at)
        else:
            _roll(ctx, obj, at)


def _next_due(store, in_scope, now: int, customer_id: Optional[str] = None):
    """(time, kind, object) of the earliest boundary at or before `now`, if any."""
    def of_type(type, where):
        # One customer's objects through the index, not a scan of every customer's.
        objects = store.by_field(type, "customer", customer_id) if customer_id else store.all(type)
        return [o for o in objects if where(o)]

    best = None
    for invoice in of_type("invoice", lambda i: i["status"] == "draft"
                           and i.get("auto_advance")
                           and i.get("automatically_finalizes_at") is not None):
        at = invoice["automatically_finalizes_at"]
        if at <= now and in_scope(invoice["customer"]) and (best is None or at < best[0]):
            best = (at, "finalize", invoice)
    for sub in of_type("subscription", lambda s: s["status"] not in CLOSED):
        if not in_scope(sub["customer"]):
            continue
        at = next_boundary(store, sub)
        if at is not None and at <= now and (best is None or at < best[0]):
            best = (at, "roll", sub)
    return best


def next_boundary(store, sub: dict) -> Optional[int]:
    """When the subscription's current period ends (or its `cancel_at`, if earlier);
    None for a subscription without items."""
    from .resources.subscriptions import items_of

    items = items_of(store, sub["id"])
    if not items:
        return None
    at = min(i["current_period_end"] for i in items)
    if sub.get("cancel_at") is not None:
        at = min(at, sub["cancel_at"])
    return at


def _cancels(sub: dict, at: int) -> bool:
    return sub.get("cancel_at") is not None and sub["cancel_at"] <= at


def upcoming_invoice(store, sub: dict, **build) -> Optional[dict]:
    """The draft the subscription's next boundary will make, built as `_roll` builds
    it but stored nowhere (the invoice preview); None if there will be none."""
    from .resources import subscriptions

    if sub["status"] in CLOSED:
        return None
    at = next_boundary(store, sub)
    if at is None:
        return None
    final = _cancels(sub, at)
    reason = subscriptions.SCHEDULED_CANCEL_BILLING_REASON if final else "subscription_cycle"
    invoice, _ = subscriptions.closing_draft(store, sub, at, reason, final=final, **build)
    return invoice


def _roll(ctx, sub: dict, at: int) -> None:
    from .resources import subscriptions

    store = ctx.store
    if _cancels(sub, at):
        # Stripe: "Any metered usage is charged for in a final invoice when the
        # subscription cancels at the end of the billing period."
        at = sub["cancel_at"]
        invoice = subscriptions.final_invoice(ctx, sub, at,
                                              subscriptions.SCHEDULED_CANCEL_BILLING_REASON)
        subscriptions.cancel_subscription(ctx, sub, at=at, reason="cancellation_requested")
        events.deleted(ctx, sub, at=at)
        if invoice is not None:
            events.emit(ctx, "invoice.created", invoice, created=at)
        return
    before = render.render(ctx, copy.deepcopy(sub))
    if sub["status"] == "trialing" and sub.get("trial_end") is not None \
            and sub["trial_end"] <= at:
        sub["status"] = "active"  # the trial is over: the first paid period starts
    invoice = subscriptions.close_period(ctx, sub, at, "subscription_cycle")
    after = render.render(ctx, copy.deepcopy(sub))
    # dahlia: the periods are on the items, so that is what changed (and latest_invoice).
    events.emit(ctx, "customer.subscription.updated", sub, created=at,
                previous_attributes=events.diff(before, after))
    if invoice is not None:
        events.emit(ctx, "invoice.created", invoice, created=at)
