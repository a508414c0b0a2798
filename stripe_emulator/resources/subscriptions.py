"""Subscriptions and subscription items.

/v1/subscriptions (create, retrieve, update, cancel via DELETE, list, search),
/v1/subscription_items (list by subscription, retrieve).

Since 2025-03-31.basil the billing period lives on each item
(`current_period_start`/`current_period_end`), not on the subscription.
Periods are counted from `billing_cycle_anchor` (periods.py). They move on
through the billing cycle (billing_cycle.py): each period end makes a draft
invoice, sets `latest_invoice` and emits `customer.subscription.updated`,
once, when the customer's time (its test clock, or the emulator clock)
passes it; reads settle the customer first. No invoice is made when a
subscription is created (Stripe makes one with `billing_reason:
subscription_create`; the emulator leaves `latest_invoice` null until the
first period closes).
"""

from __future__ import annotations

import copy
from typing import List

from .. import billing_cycle, errors, expand, fixtures, ids, periods, search
from ..context import MISSING, coerce_int, coerce_str
from ..errors import InvalidRequest
from ..listing import list_object, paginate, range_filter, search_page
from ..render import renderer
from ..routing import LIST_PARAMS, route
from . import events
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
SEARCH_FIELDS = {"created": search.NUMBER, "metadata": search.STRING, "status": search.TOKEN,
                 "canceled_at": search.NUMBER}
ITEM_FIELDS_ON_CREATE = ("price", "quantity", "metadata")

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
    out = dict(item)
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


def _all_settled(ctx) -> List[dict]:
    for customer in {s["customer"] for s in ctx.store.all("subscription", ctx.livemode)}:
        billing_cycle.settle_customer(ctx.store, customer)
    return ctx.store.all("subscription", ctx.livemode)


def period_at(store, sub: dict, item: dict, t: int):
    price = store.get(item["price"], "price")
    rec = price["recurring"]
    anchor = sub["billing_cycle_anchor"]
    if t < anchor:
        # Before the anchor: the first, shortened period from the start date.
        return sub["start_date"], anchor
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


def _fetch_settled(ctx, obj_id: str) -> dict:
    return settle(ctx, fetch(ctx, obj_id, "subscription", "subscription"))


# --- endpoints ----------------------------------------------------------------


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
        price = fetch(ctx, price_id, "price", "price", param=f"{p}[price]")
        if price["type"] != "recurring":
            raise InvalidRequest(
                "The price specified is set to `type=one_time` but this field only accepts "
                "prices with `type=recurring`.", param=f"{p}[price]")
        if not price["active"]:
            raise InvalidRequest(
                "The price specified is inactive. This field only accepts active prices.",
                param=f"{p}[price]")
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
    anchor = ctx.int("billing_cycle_anchor")
    if anchor is None:
        anchor = now
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
    before = copy.deepcopy(sub)
    if sub["status"] == "canceled":
        extra = [k for k in ctx.params if k not in ("metadata", "cancellation_details", "expand")]
        if extra:
            raise InvalidRequest(
                "A canceled subscription can only update its cancellation_details and metadata.",
                param=extra[0])
    if ctx.has("items"):
        raise InvalidRequest("Changing items is not supported by the local Stripe emulator yet.",
                             param="items")
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
    if sub["status"] != "canceled":
        _apply_cancel_params(ctx, sub)
    ctx.store.save(sub)
    events.updated(ctx, before, sub, at=billing_cycle.customer_now(ctx.store, sub["customer"]))
    return respond(ctx, settle(ctx, sub))


@route("/v1/subscriptions/<obj_id>", ["DELETE"], ("cancellation_details", "invoice_now",
                                                  "prorate"))
def cancel(ctx, obj_id):
    sub = _fetch_settled(ctx, obj_id)
    if sub["status"] == "canceled":
        raise InvalidRequest(f"The subscription {obj_id} is already canceled.",
                             param="id")
    details = ctx.dict("cancellation_details") or {}
    ctx.bool("invoice_now")
    ctx.bool("prorate")
    at = billing_cycle.customer_now(ctx.store, sub["customer"])
    sub = cancel_subscription(ctx, sub, at=at, reason="cancellation_requested",
                              comment=details.get("comment") or None,
                              feedback=details.get("feedback") or None)
    events.deleted(ctx, sub, at=at)
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
    subs = _all_settled(ctx)

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

    items = [s for s in subs if keep(s)]
    return paginate(ctx, items, "/v1/subscriptions", "subscription",
                    render=lambda o: respond(ctx, o))


@route("/v1/subscriptions/search", ["GET"], ("limit", "page", "query"))
def search_subscriptions(ctx):
    test = search.matcher(ctx.str("query", required=True), SEARCH_FIELDS)
    subs = _all_settled(ctx)
    return search_page(ctx, [s for s in subs if test(s)], "/v1/subscriptions/search",
                       render=lambda o: respond(ctx, o))


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
