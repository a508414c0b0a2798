"""Subscriptions and subscription items.

/v1/subscriptions (create, retrieve, update, cancel via DELETE, list),
/v1/subscription_items (list by subscription, retrieve).

Since 2025-03-31.basil the billing period lives on each item
(`current_period_start`/`current_period_end`), not on the subscription.
Periods are counted from `billing_cycle_anchor` (periods.py); during a trial
the trial is the current period. They move on through the billing cycle
(billing_cycle.py): each period end makes a draft invoice, sets
`latest_invoice` and emits `customer.subscription.updated`, once, when the
customer's time (its test clock, or the emulator clock) passes it; reads
settle the customer first (a list, each subscription it reads whose boundary
has passed: `settled`). No invoice is made when a subscription is created
(Stripe makes one with `billing_reason: subscription_create`; the emulator
leaves `latest_invoice` null until the first period closes).

Updates: `items` (remove, replace a price keeping the item id, add),
`proration_behavior`, `billing_cycle_anchor=now` and `trial_end` (`now` ends a
trial) close the current period early with a `subscription_update` invoice;
`billing_mode` (create only) decides whether a removed metered price's usage is
billed (flexible) or not (classic). Cancel with `invoice_now` drafts a final
invoice. What Stripe's docs leave open is listed in the README.
"""

from __future__ import annotations

import copy
from typing import List

from .. import billing_cycle, errors, expand, fixtures, ids, periods, render
from ..context import MISSING, coerce_bool, coerce_int, coerce_str
from ..errors import InvalidRequest
from ..listing import list_object, paginate, paginate_store, range_filter
from ..render import renderer
from ..routing import LIST_PARAMS, route
from . import events, invoices
from .common import fetch, respond, update_metadata
from .prices import plan_for

CREATE_PARAMS = ("add_invoice_items", "application_fee_percent", "automatic_tax",
                 "backdate_start_date", "billing_cycle_anchor", "billing_cycle_anchor_config",
                 "billing_mode", "billing_schedules", "billing_thresholds", "cancel_at",
                 "cancel_at_period_end", "collection_method", "currency", "customer",
                 "customer_account", "days_until_due", "default_payment_method",
                 "default_source", "default_tax_rates", "description", "discounts", "items",
                 "metadata", "off_session", "on_behalf_of", "payment_behavior",
                 "payment_settings", "pending_invoice_item_interval", "proration_behavior",
                 "transfer_data", "trial_end", "trial_from_plan", "trial_period_days",
                 "trial_settings")
UPDATE_PARAMS = ("add_invoice_items", "application_fee_percent", "automatic_tax",
                 "billing_cycle_anchor", "billing_schedules", "billing_thresholds", "cancel_at",
                 "cancel_at_period_end", "cancellation_details", "collection_method",
                 "days_until_due", "default_payment_method", "default_source",
                 "default_tax_rates", "description", "discounts", "invoice_settings", "items",
                 "metadata", "off_session", "on_behalf_of", "pause_collection",
                 "payment_behavior", "payment_settings", "pending_invoice_item_interval",
                 "proration_behavior", "proration_date", "transfer_data", "trial_end",
                 "trial_from_plan", "trial_settings")
ITEM_FIELDS_ON_CREATE = ("price", "quantity", "metadata")
ITEM_FIELDS_ON_UPDATE = ("id", "deleted", "clear_usage", "price", "quantity", "metadata")
PRORATION_BEHAVIORS = ("always_invoice", "create_prorations", "none")
# Stripe's documented billing_reason values have no cancellation reason; a final
# invoice made by a cancel request (invoice_now) is "subscription_update", one made
# when a scheduled cancellation (cancel_at, cancel_at_period_end) is reached is
# "subscription_cycle" (README: assumptions).
CANCEL_NOW_BILLING_REASON = "subscription_update"
SCHEDULED_CANCEL_BILLING_REASON = "subscription_cycle"
# 2025-09-30.clover made flexible billing mode the default for new subscriptions.
FLEXIBLE_DEFAULT_SINCE = "2025-09-30"

for _field in ("customer", "latest_invoice", "default_payment_method", "default_source",
               "pending_setup_intent", "schedule", "test_clock", "on_behalf_of", "application"):
    expand.expandable("subscription", _field)
expand.expandable("plan", "product")


# --- rendering ----------------------------------------------------------------


def items_of(store, sub_id: str) -> List[dict]:
    items = store.by_field("subscription_item", "subscription", sub_id)
    return list(reversed(items))  # in the order they were added


def _items_of(ctx, sub_id: str) -> List[dict]:
    return items_of(ctx.store, sub_id)


@renderer("subscription_item")
def render_item(ctx, item: dict) -> dict:
    out = {k: v for k, v in item.items() if not k.startswith("_")}  # _: emulator bookkeeping
    out.pop("livemode", None)  # stored for mode checks; items carry no livemode on Stripe
    price = ctx.store.get(item["price"], "price")
    out["price"] = price
    out["plan"] = plan_for(price)
    if (price.get("recurring") or {}).get("usage_type") == "metered":
        out.pop("quantity", None)  # Stripe has no quantity on metered items
    return out


@renderer("subscription")
def render_subscription(ctx, sub: dict) -> dict:
    out = dict(sub)
    out["items"] = list_object(f"/v1/subscription_items?subscription={sub['id']}",
                               [render_item(ctx, i) for i in _items_of(ctx, sub["id"])])
    return out


# --- the clock: periods and scheduled cancellation -------------------------------


def settle(ctx, sub: dict) -> dict:
    """The subscription once its customer's billing cycle has caught up with its time."""
    billing_cycle.settle_customer(ctx.store, sub["customer"])
    return ctx.store.get(sub["id"], "subscription")


def settled(store, sub: dict) -> dict:
    """
    The subscription as a read must show it: when its own next boundary (period end, or
    an earlier `cancel_at`) is at or before its customer's time, the customer is settled
    (billing_cycle.settle_customer) and the subscription read again; else it is returned
    as it is. Costs one lookup of its items (and of its test clock, if any), not a scan:
    a list settles each subscription it reads this way, so a page costs the same however
    many customers exist.
    """
    if sub["status"] in billing_cycle.CLOSED:
        return sub
    at = billing_cycle.next_boundary(store, sub)
    if at is None:
        return sub
    now = billing_cycle.customer_now(store, sub["customer"]) if sub.get("test_clock") else store.now()
    if at > now:
        return sub
    billing_cycle.settle_customer(store, sub["customer"])
    return store.get(sub["id"], "subscription")


def period_at(store, sub: dict, item: dict, t: int):
    price = store.get(item["price"], "price")
    rec = price["recurring"]
    anchor = sub["billing_cycle_anchor"]
    trial_start, trial_end = sub.get("trial_start"), sub.get("trial_end")
    if trial_start is not None and trial_end is not None and t < trial_end:
        return trial_start, trial_end  # the trial is the current period
    if t < anchor:
        # Before the anchor: the first, shortened period from the start (or trial end).
        start = trial_end if trial_end is not None and trial_end <= t else sub["start_date"]
        return start, anchor
    return periods.period_containing(anchor, rec["interval"], rec["interval_count"], t)


def _period_at(ctx, sub: dict, item: dict, t: int):
    return period_at(ctx.store, sub, item, t)


def cancel_subscription(ctx, sub: dict, at: int = None, reason: str = "cancellation_requested",
                        comment=None, feedback=None) -> dict:
    at = ctx.now() if at is None else at
    sub.update({"status": "canceled", "canceled_at": at, "ended_at": at})
    details = dict(sub.get("cancellation_details") or {})
    details.update({"reason": reason})
    if comment is not None:
        details["comment"] = comment
    if feedback is not None:
        details["feedback"] = feedback
    sub["cancellation_details"] = details
    ctx.store.save(sub)
    return sub


def closing_draft(store, sub: dict, at: int, billing_reason: str, *, final: bool,
                  **build):
    """(invoice or None, new periods) for the subscription's span closing at `at`,
    not stored: metered usage from each item's period start (or from when its
    metered price was added) up to `at`, the pending lines of removed metered
    prices, and unless `final` the licensed items for the new period in advance.
    The billing cycle stores it (close_period, final_invoice); the invoice
    preview (invoices.preview) only shows it."""
    items = items_of(store, sub["id"])
    new_periods = None if final else {i["id"]: period_at(store, sub, i, at) for i in items}
    start = min([i["current_period_start"] for i in items] or [at])
    invoice = invoices.build_draft(store, sub, items, created=at, billing_reason=billing_reason,
                                   closed_end=at, new_periods=new_periods, period=(start, at),
                                   **build)
    return invoice, new_periods


def _store_draft(ctx, sub: dict, invoice) -> None:
    if invoice is not None:
        invoices.store_draft(ctx, sub, invoice)
        sub["latest_invoice"] = invoice["id"]


def close_period(ctx, sub: dict, at: int, billing_reason: str):
    """End the items' current period at `at` and start the next one there.

    The draft invoice is `closing_draft`'s. `billing_cycle_anchor` (and a trial's
    end) must already say where the new period starts. Returns the invoice (None
    if it would have no line)."""
    store = ctx.store
    invoice, new_periods = closing_draft(store, sub, at, billing_reason, final=False)
    _store_draft(ctx, sub, invoice)
    for item in items_of(store, sub["id"]):
        item["current_period_start"], item["current_period_end"] = new_periods[item["id"]]
        item.pop("_usage_start", None)
        store.save(item)
    store.save(sub)
    return invoice


def final_invoice(ctx, sub: dict, at: int, billing_reason: str):
    """The last invoice of a subscription ending at `at`: its un-invoiced metered
    usage and pending lines (nothing in advance). None if there is nothing to bill."""
    invoice, _ = closing_draft(ctx.store, sub, at, billing_reason, final=True)
    if invoice is not None:
        _store_draft(ctx, sub, invoice)
        ctx.store.save(sub)
    return invoice


def _fetch_settled(ctx, obj_id: str) -> dict:
    return settle(ctx, fetch(ctx, obj_id, "subscription", "subscription"))


# --- endpoints ----------------------------------------------------------------


def _recurring_price(ctx, price_id: str, param: str) -> dict:
    price = fetch(ctx, price_id, "price", "price", param=param)
    if price["type"] != "recurring":
        raise InvalidRequest(
            "The price specified is set to `type=one_time` but this field only accepts "
            "prices with `type=recurring`.", param=param)
    if not price["active"]:
        raise InvalidRequest(
            "The price specified is inactive. This field only accepts active prices.",
            param=param)
    return price


def _is_metered(price: dict) -> bool:
    return (price.get("recurring") or {}).get("usage_type") == "metered"


def _parse_items(ctx) -> List[dict]:
    raw = ctx.list("items", required=True)
    if not raw:
        raise InvalidRequest("Missing required param: items.", code="parameter_missing",
                             param="items")
    out, seen = [], set()
    for i, entry in enumerate(raw):
        p = f"items[{i}]"
        if not isinstance(entry, dict):
            raise InvalidRequest("Invalid object", param=p)
        for key in entry:
            if key not in ITEM_FIELDS_ON_CREATE:
                if key in ("discounts", "plan", "price_data", "tax_rates",
                           "billing_thresholds"):
                    raise InvalidRequest(
                        f"{p}[{key}] is not supported by the local Stripe emulator.",
                        param=f"{p}[{key}]")
                raise errors.unknown_param(f"{p}[{key}]")
        price_id = coerce_str(f"{p}[price]", entry.get("price", MISSING), required=True)
        price = _recurring_price(ctx, price_id, f"{p}[price]")
        if price_id in seen:
            raise InvalidRequest(
                f"Cannot add multiple subscription items with the same price: {price_id}",
                param=f"{p}[price]")
        seen.add(price_id)
        metered = price["recurring"]["usage_type"] == "metered"
        quantity = coerce_int(f"{p}[quantity]", entry.get("quantity", MISSING), min=0)
        if metered and quantity is not None:
            raise InvalidRequest(
                f"Quantity should not be specified where usage_type is `metered`. Remove "
                f"quantity from `{p}`.", param=f"{p}[quantity]")
        metadata = entry.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise InvalidRequest("Invalid object", param=f"{p}[metadata]")
        out.append({"price": price, "quantity": None if metered else (
            1 if quantity is None else quantity),
            "metadata": {k: v for k, v in metadata.items() if v != ""}})
    first = out[0]["price"]
    for i, item in enumerate(out[1:], start=1):
        pr = item["price"]
        if pr["currency"] != first["currency"]:
            raise InvalidRequest("All prices on a subscription must have the same currency.",
                                 param=f"items[{i}][price]")
        if (pr["recurring"]["interval"], pr["recurring"]["interval_count"]) != (
                first["recurring"]["interval"], first["recurring"]["interval_count"]):
            raise InvalidRequest(
                "All prices on a subscription must have the same `recurring.interval` and "
                "`recurring.interval_count`.", param=f"items[{i}][price]")
    return out


@route("/v1/subscriptions", ["POST"], CREATE_PARAMS)
def create(ctx):
    customer_id = ctx.str("customer", required=True)
    fetch(ctx, customer_id, "customer", "customer", param="customer")
    items = _parse_items(ctx)
    now = billing_cycle.customer_now(ctx.store, customer_id)  # its test clock's time, if any
    clock = billing_cycle.clock_of(ctx.store, customer_id)
    rec = items[0]["price"]["recurring"]
    natural_end = periods.boundary(now, rec["interval"], rec["interval_count"], 1)
    trial_end = _trial_end_on_create(ctx, now)
    anchor = ctx.int("billing_cycle_anchor")
    if trial_end is not None:
        natural_end = periods.boundary(trial_end, rec["interval"], rec["interval_count"], 1)
        if anchor is not None and anchor < trial_end:
            raise InvalidRequest("billing_cycle_anchor cannot be earlier than trial_end.",
                                 param="billing_cycle_anchor")
    if anchor is None:
        anchor = now if trial_end is None else trial_end
    elif anchor < now:
        raise InvalidRequest("billing_cycle_anchor cannot be in the past.",
                             param="billing_cycle_anchor")
    elif anchor > natural_end:
        raise InvalidRequest(
            f"billing_cycle_anchor cannot be later than next natural billing date "
            f"({natural_end}) for plan", param="billing_cycle_anchor")

    sub = fixtures.template("subscription")
    sub.update({
        "id": ids.new_id("sub"), "livemode": ctx.livemode, "created": now, "start_date": now,
        "billing_cycle_anchor": anchor, "customer": customer_id,
        "test_clock": clock["id"] if clock else None,
        "currency": items[0]["price"]["currency"],
        "description": ctx.str("description", max_length=500),
        "metadata": update_metadata(ctx, {}),
        "collection_method": ctx.str("collection_method", default="charge_automatically",
                                     choices=("charge_automatically", "send_invoice")),
    })
    if sub["collection_method"] == "send_invoice":
        sub["days_until_due"] = ctx.int("days_until_due", min=0)
    sub["billing_mode"] = _billing_mode(ctx, now)
    if trial_end is not None:
        sub.update({"status": "trialing", "trial_start": now, "trial_end": trial_end})
    ctx.store.insert(sub)
    for spec in items:
        item = fixtures.template("subscription_item")
        item.update({"id": ids.new_id("si"), "created": now, "subscription": sub["id"],
                     "price": spec["price"]["id"], "quantity": spec["quantity"],
                     "metadata": spec["metadata"]})
        item["current_period_start"], item["current_period_end"] = _period_at(ctx, sub, item, now)
        item["livemode"] = ctx.livemode  # for mode checks; not part of Stripe's shape
        ctx.store.insert(item, "subscription_item")
    _apply_cancel_params(ctx, sub)
    ctx.store.save(sub)
    events.created(ctx, sub, at=now)
    return respond(ctx, sub)


def _trial_end_on_create(ctx, now: int):
    """trial_end (a timestamp, or `now`: no trial) or trial_period_days, as a timestamp."""
    ctx.exclusive("trial_end", "trial_period_days")
    if ctx.has("trial_from_plan") and ctx.bool("trial_from_plan"):
        raise InvalidRequest("trial_from_plan is not supported by the local Stripe emulator.",
                             param="trial_from_plan")
    if ctx.has("trial_period_days"):
        days = ctx.int("trial_period_days", min=0, max=730)
        return None if not days else now + days * 86400
    if ctx.has("trial_end"):
        if ctx.raw("trial_end") == "now":
            return None
        end = ctx.int("trial_end")
        if end is not None and end <= now:
            raise InvalidRequest("Invalid timestamp: must be an integer Unix timestamp in the "
                                 "future.", param="trial_end")
        if end is not None and end > now + 730 * 86400:
            raise InvalidRequest("trial_end can be at most two years from "
                                 "billing_cycle_anchor.", param="trial_end")
        return end
    return None


def _billing_mode(ctx, now: int) -> dict:
    raw = ctx.dict("billing_mode")
    if raw is None:
        version = getattr(ctx, "stripe_version", "") or ""
        kind = "flexible" if version[:10] >= FLEXIBLE_DEFAULT_SINCE else "classic"
        return {"flexible": None, "type": kind, "updated_at": now}
    for key in raw:
        if key not in ("type", "flexible"):
            raise errors.unknown_param(f"billing_mode[{key}]")
    kind = coerce_str("billing_mode[type]", raw.get("type", MISSING), required=True,
                      choices=("classic", "flexible"))
    flexible = raw.get("flexible")
    if flexible is not None:
        if kind != "flexible" or not isinstance(flexible, dict):
            raise InvalidRequest("billing_mode[flexible] can only be set with "
                                 "billing_mode[type]=flexible.", param="billing_mode[flexible]")
        flexible = {"proration_discounts": coerce_str(
            "billing_mode[flexible][proration_discounts]",
            flexible.get("proration_discounts", MISSING), choices=("included", "itemized"))}
    return {"flexible": flexible, "type": kind, "updated_at": now}


def _current_period_end(ctx, sub: dict) -> int:
    return max(i["current_period_end"] for i in _items_of(ctx, sub["id"]))


def _apply_cancel_params(ctx, sub: dict) -> None:
    ctx.exclusive("cancel_at", "cancel_at_period_end")
    if ctx.has("cancel_at_period_end"):
        flag = bool(ctx.bool("cancel_at_period_end", default=False))
        sub["cancel_at_period_end"] = flag
        sub["cancel_at"] = _current_period_end(ctx, sub) if flag else None
    if ctx.has("cancel_at"):
        at = ctx.int("cancel_at")
        if at is not None and at < billing_cycle.customer_now(ctx.store, sub["customer"]):
            raise InvalidRequest("cancel_at cannot be in the past.", param="cancel_at")
        sub["cancel_at"] = at
        sub["cancel_at_period_end"] = False


@route("/v1/subscriptions/<obj_id>", ["GET"])
def retrieve(ctx, obj_id):
    return respond(ctx, _fetch_settled(ctx, obj_id))


@route("/v1/subscriptions/<obj_id>", ["POST"], UPDATE_PARAMS)
def update(ctx, obj_id):
    sub = _fetch_settled(ctx, obj_id)
    store = ctx.store
    now = billing_cycle.customer_now(store, sub["customer"])
    before = render.render(ctx, copy.deepcopy(sub))  # items are read from the store
    if sub["status"] == "canceled":
        extra = [k for k in ctx.params if k not in ("metadata", "cancellation_details", "expand")]
        if extra:
            raise InvalidRequest(
                "A canceled subscription can only update its cancellation_details and metadata.",
                param=extra[0])
    proration = ctx.str("proration_behavior", default="create_prorations",
                        choices=PRORATION_BEHAVIORS)
    ctx.raw("proration_date")  # prorations of licensed prices are not modeled
    anchor = ctx.str("billing_cycle_anchor", choices=("now", "unchanged")) if ctx.has(
        "billing_cycle_anchor") else None
    trial_end = _trial_end_on_update(ctx, sub, now)
    made = []  # invoices drafted by this update, announced after the subscription event
    if ctx.has("items"):
        _apply_items(ctx, sub, now, proration)
    if ctx.has("description"):
        sub["description"] = ctx.str("description", max_length=500)
    if ctx.has("cancellation_details"):
        details = ctx.dict("cancellation_details") or {}
        merged = dict(sub["cancellation_details"])
        for key in ("comment", "feedback"):
            if key in details:
                merged[key] = details[key] or None
        sub["cancellation_details"] = merged
    sub["metadata"] = update_metadata(ctx, sub.get("metadata"))
    if trial_end is not None:
        if trial_end <= now:  # trial_end=now: the trial ends, a paid period starts now
            sub.update({"trial_end": now, "billing_cycle_anchor": now, "status": "active"})
            made.append(close_period(ctx, sub, now, "subscription_update"))
        else:  # a new end for the running trial
            sub.update({"trial_end": trial_end, "billing_cycle_anchor": trial_end})
            for item in items_of(store, sub["id"]):
                item["current_period_end"] = trial_end
                store.save(item)
    elif anchor == "now":
        sub["billing_cycle_anchor"] = now
        made.append(close_period(ctx, sub, now, "subscription_update"))
    if proration == "always_invoice" and invoices.pending_lines(store, sub["id"]):
        made.append(invoices.draft_for_subscription(
            ctx, sub, [], created=now, billing_reason="subscription_update"))
        sub["latest_invoice"] = made[-1]["id"]
    if sub["status"] != "canceled":
        _apply_cancel_params(ctx, sub)
    store.save(sub)
    after = render.render(ctx, copy.deepcopy(sub))
    previous = events.diff(before, after)
    if set(previous) - {"updated"}:
        events.emit(ctx, "customer.subscription.updated", sub, previous_attributes=previous,
                    created=now)
    for invoice in made:
        if invoice is not None:
            events.emit(ctx, "invoice.created", invoice, created=now)
    return respond(ctx, settle(ctx, sub))


def _trial_end_on_update(ctx, sub: dict, now: int):
    """The requested trial end as a timestamp (`now` -> now), or None if not given."""
    if not ctx.has("trial_end"):
        return None
    if ctx.bool("trial_from_plan"):
        raise InvalidRequest("trial_from_plan is not supported by the local Stripe emulator.",
                             param="trial_from_plan")
    raw = ctx.raw("trial_end")
    end = now if raw == "now" else ctx.int("trial_end")
    if sub["status"] != "trialing":
        if raw == "now":
            return None  # no trial to end
        raise InvalidRequest("Adding a trial to a subscription that is not trialing is not "
                             "supported by the local Stripe emulator.", param="trial_end")
    if end < now:
        raise InvalidRequest("Invalid timestamp: must be an integer Unix timestamp in the "
                             "future.", param="trial_end")
    if end > sub["trial_start"] + 730 * 86400:
        raise InvalidRequest("trial_end can be at most two years from billing_cycle_anchor.",
                             param="trial_end")
    return end


def _apply_items(ctx, sub: dict, now: int, proration: str) -> None:
    """items[n]: {id, deleted} removes, {id, price} replaces the price (the item keeps
    its id), {id, quantity/metadata} edits, {price} adds an item.

    Metered usage of a removed or replaced price: billing_mode=flexible puts a line
    for it (period start up to now) on the next invoice (always_invoice: on one drafted
    now; none: not billed); classic does not bill it. A metered price added mid-period
    bills usage from now."""
    store = ctx.store
    raw = ctx.list("items") or []
    current = {i["id"]: i for i in items_of(store, sub["id"])}
    changes = []
    for n, entry in enumerate(raw):
        p = f"items[{n}]"
        if not isinstance(entry, dict):
            raise InvalidRequest("Invalid object", param=p)
        for key in entry:
            if key not in ITEM_FIELDS_ON_UPDATE:
                if key in ("discounts", "plan", "price_data", "tax_rates", "billing_thresholds"):
                    raise InvalidRequest(
                        f"{p}[{key}] is not supported by the local Stripe emulator.",
                        param=f"{p}[{key}]")
                raise errors.unknown_param(f"{p}[{key}]")
        item_id = coerce_str(f"{p}[id]", entry.get("id", MISSING))
        deleted = bool(coerce_bool(f"{p}[deleted]", entry.get("deleted", MISSING),
                                   default=False))
        coerce_bool(f"{p}[clear_usage]", entry.get("clear_usage", MISSING))  # no effect on meters
        price_id = coerce_str(f"{p}[price]", entry.get("price", MISSING))
        if item_id is not None and item_id not in current:
            raise errors.no_such("subscription item", item_id, f"{p}[id]")
        if item_id is None and deleted:
            raise InvalidRequest(f"Missing required param: {p}[id].", code="parameter_missing",
                                 param=f"{p}[id]")
        if item_id is None and price_id is None:
            raise InvalidRequest(f"Missing required param: {p}[price].",
                                 code="parameter_missing", param=f"{p}[price]")
        price = _recurring_price(ctx, price_id, f"{p}[price]") if price_id and not deleted \
            else None
        quantity = coerce_int(f"{p}[quantity]", entry.get("quantity", MISSING), min=0)
        target = price or (store.get(current[item_id]["price"], "price") if item_id else None)
        if quantity is not None and target is not None and _is_metered(target):
            raise InvalidRequest(
                f"Quantity should not be specified where usage_type is `metered`. Remove "
                f"quantity from `{p}`.", param=f"{p}[quantity]")
        metadata = entry.get("metadata", MISSING)
        if metadata is not MISSING and metadata != "" and not isinstance(metadata, dict):
            raise InvalidRequest("Invalid object", param=f"{p}[metadata]")
        changes.append({"param": p, "id": item_id, "deleted": deleted, "price": price,
                        "quantity": quantity, "metadata": metadata})

    # What the subscription would hold afterwards, checked before anything changes.
    result = {i: store.get(it["price"], "price") for i, it in current.items()}
    added = []
    for c in changes:
        if c["deleted"]:
            result.pop(c["id"], None)
        elif c["id"] is not None and c["price"] is not None:
            result[c["id"]] = c["price"]
        elif c["id"] is None:
            added.append(c)
    final = list(result.values()) + [c["price"] for c in added]
    if not final:
        raise InvalidRequest("A subscription must have at least one item; cancel it instead.",
                             param="items")
    seen = set()
    interval = None
    for it in current.values():
        rec = store.get(it["price"], "price")["recurring"]
        interval = (rec["interval"], rec["interval_count"])
        break
    for price in final:
        if price["id"] in seen:
            raise InvalidRequest(
                f"Cannot add multiple subscription items with the same price: {price['id']}",
                param="items")
        seen.add(price["id"])
        if price["currency"] != sub["currency"]:
            raise InvalidRequest("All prices on a subscription must have the same currency.",
                                 param="items")
        rec = price["recurring"]
        if interval is not None and (rec["interval"], rec["interval_count"]) != interval:
            raise InvalidRequest(
                "Changing a subscription's billing interval is not supported by the local "
                "Stripe emulator: all prices must keep `recurring.interval` and "
                "`recurring.interval_count`.", param="items")

    flexible = (sub.get("billing_mode") or {}).get("type") == "flexible"

    def bill_removed_usage(item, old_price):
        if not _is_metered(old_price) or not flexible or proration == "none":
            return  # classic: usage before the change is not billed
        start, end, billed = invoices.usage_window(sub, item, now)
        if billed and start < end:
            invoices.add_pending_line(ctx, sub, item["id"], old_price, (start, end))

    for c in changes:
        item = current.get(c["id"]) if c["id"] else None
        if item is not None and c["deleted"]:
            bill_removed_usage(item, store.get(item["price"], "price"))
            store.delete(item["id"])
            current.pop(item["id"])
            continue
        if item is not None:
            old_price = store.get(item["price"], "price")
            if c["price"] is not None and c["price"]["id"] != old_price["id"]:
                bill_removed_usage(item, old_price)
                item["price"] = c["price"]["id"]
                if _is_metered(c["price"]):
                    item["quantity"] = None
                    item["_usage_start"] = now
                else:
                    item["quantity"] = 1 if c["quantity"] is None else c["quantity"]
                    item.pop("_usage_start", None)
            elif c["quantity"] is not None:
                item["quantity"] = c["quantity"]
            if c["metadata"] is not MISSING:
                item["metadata"] = _merge_metadata(item.get("metadata"), c["metadata"])
            store.save(item)
            continue
        price = c["price"]
        metered = _is_metered(price)
        item = fixtures.template("subscription_item")
        item.update({"id": ids.new_id("si"), "created": now, "subscription": sub["id"],
                     "price": price["id"],
                     "quantity": None if metered else (
                         1 if c["quantity"] is None else c["quantity"]),
                     "metadata": _merge_metadata({}, c["metadata"])})
        item["current_period_start"], item["current_period_end"] = period_at(store, sub, item, now)
        if metered and now > item["current_period_start"]:
            item["_usage_start"] = now
        item["livemode"] = sub["livemode"]
        store.insert(item, "subscription_item")


def _merge_metadata(current, given) -> dict:
    if given is MISSING:
        return dict(current or {})
    if given == "":
        return {}
    out = dict(current or {})
    for key, value in given.items():
        if value == "":
            out.pop(key, None)
        else:
            out[key] = value
    return out


@route("/v1/subscriptions/<obj_id>", ["DELETE"], ("cancellation_details", "invoice_now",
                                                  "prorate"))
def cancel(ctx, obj_id):
    """Cancel now. invoice_now=true drafts a final invoice for the un-invoiced metered
    usage (and pending lines); without it that usage is not billed. `prorate` credits
    unused licensed time on Stripe; licensed prorations are not modeled here."""
    sub = _fetch_settled(ctx, obj_id)
    if sub["status"] == "canceled":
        raise InvalidRequest(f"The subscription {obj_id} is already canceled.",
                             param="id")
    details = ctx.dict("cancellation_details") or {}
    invoice_now = bool(ctx.bool("invoice_now", default=False))
    ctx.bool("prorate")
    at = billing_cycle.customer_now(ctx.store, sub["customer"])
    invoice = None
    if invoice_now:
        invoice = final_invoice(ctx, sub, at, CANCEL_NOW_BILLING_REASON)
    else:
        invoices.drop_pending_lines(ctx.store, sub["id"])
    sub = cancel_subscription(ctx, sub, at=at, reason="cancellation_requested",
                              comment=details.get("comment") or None,
                              feedback=details.get("feedback") or None)
    events.deleted(ctx, sub, at=at)
    if invoice is not None:
        events.emit(ctx, "invoice.created", invoice, created=at)
    return respond(ctx, sub)


@route("/v1/subscriptions", ["GET"],
       LIST_PARAMS + ("automatic_tax", "collection_method", "created", "current_period_end",
                      "current_period_start", "customer", "customer_account", "plan", "price",
                      "status", "test_clock"))
def list_subscriptions(ctx):
    customer = ctx.str("customer")
    price = ctx.str("price") or ctx.str("plan")
    status = ctx.str("status", choices=("active", "all", "canceled", "ended", "incomplete",
                                        "incomplete_expired", "past_due", "paused", "trialing",
                                        "unpaid"))
    collection = ctx.str("collection_method")
    test_clock = ctx.str("test_clock")
    created = range_filter(ctx, "created")

    def status_ok(s):
        if status is None:
            return s["status"] != "canceled"
        if status == "all":
            return True
        if status == "ended":
            return s["status"] in ("canceled", "incomplete_expired")
        return s["status"] == status

    def keep(s):
        return (status_ok(s)
                and (customer is None or s["customer"] == customer)
                and (collection is None or s["collection_method"] == collection)
                and (test_clock is None or s.get("test_clock") == test_clock)
                and (created is None or created(s["created"]))
                and (price is None or any(i["price"] == price
                                          for i in _items_of(ctx, s["id"]))))

    # Each subscription read is caught up with its customer's time before it is filtered
    # (a due period rolled, a due cancel_at canceled): the page's, not every customer's.
    return paginate_store(ctx, "subscription", "/v1/subscriptions", "subscription", where=keep,
                          render=lambda o: respond(ctx, o),
                          prepare=lambda s: settled(ctx.store, s))


@route("/v1/subscription_items", ["GET"], LIST_PARAMS + ("subscription",))
def list_items(ctx):
    sub_id = ctx.str("subscription", required=True)
    sub = settle(ctx, fetch(ctx, sub_id, "subscription", "subscription", param="subscription"))
    items = list(reversed(_items_of(ctx, sub["id"])))
    return paginate(ctx, items, f"/v1/subscription_items?subscription={sub_id}",
                    "subscription item", render=lambda o: respond(ctx, o))


@route("/v1/subscription_items/<obj_id>", ["GET"])
def retrieve_item(ctx, obj_id):
    item = fetch(ctx, obj_id, "subscription_item", "subscription item")
    settle(ctx, fetch(ctx, item["subscription"], "subscription", "subscription"))
    return respond(ctx, ctx.store.get(obj_id, "subscription_item"))


# --- test-only control (control.py, pytest_plugin.py) -----------------------------

CONTROL_STATUSES = ("active", "past_due", "unpaid", "incomplete_expired")


def force_status(store, sub_id: str, status: str) -> dict:
    """Set a subscription's status as failed payments would (there are no payment
    methods in the emulator), emitting `customer.subscription.updated`. Not a Stripe
    API: a test control. `incomplete_expired` ends the subscription (`ended_at`)."""
    if status not in CONTROL_STATUSES:
        raise ValueError(f"status must be one of {', '.join(CONTROL_STATUSES)}, got {status!r}")
    sub = store.get(sub_id, "subscription")
    if sub is None:
        raise LookupError(f"No such subscription: {sub_id}")
    billing_cycle.settle_customer(store, sub["customer"])
    with store.transaction():
        sub = store.get(sub_id, "subscription")
        if sub["status"] in billing_cycle.CLOSED:
            raise ValueError(f"The subscription {sub_id} is {sub['status']}.")
        ctx = events.SystemCtx(store, bool(sub.get("livemode")))
        at = billing_cycle.customer_now(store, sub["customer"])
        before = copy.deepcopy(sub)
        sub["status"] = status
        if status == "incomplete_expired":
            sub["ended_at"] = at
        store.save(sub)
        events.updated(ctx, before, sub, at=at)
    return store.get(sub_id, "subscription")
