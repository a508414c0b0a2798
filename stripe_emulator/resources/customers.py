"""Customers: /v1/customers (create, retrieve, update, delete, list).

Deleting a customer leaves a tombstone: retrieving it answers
`{"id", "object": "customer", "deleted": true}` as Stripe does, and its
subscriptions are canceled.
"""

from __future__ import annotations

import copy
import secrets

from .. import billing_cycle, expand, fixtures, ids
from ..errors import InvalidRequest
from ..listing import list_object, paginate_store, range_filter
from ..routing import LIST_PARAMS, route
from . import events
from .common import base_fields, deleted, fetch, respond, set_strings, update_metadata

CREATE_PARAMS = ("address", "balance", "business_name", "cash_balance", "description", "email",
                 "individual_name", "invoice_prefix", "invoice_settings", "metadata", "name",
                 "next_invoice_sequence", "payment_method", "phone", "preferred_locales",
                 "shipping", "source", "tax", "tax_exempt", "tax_id_data", "test_clock",
                 "validate")
UPDATE_PARAMS = tuple(p for p in CREATE_PARAMS
                      if p not in ("payment_method", "tax_id_data", "test_clock")) + (
    "default_source",)

ADDRESS_KEYS = ("city", "country", "line1", "line2", "postal_code", "state")

expand.expandable("customer", "default_source")
expand.expandable("customer", "test_clock")
expand.expandable("customer", "invoice_settings.default_payment_method")
expand.expandable("customer", "sources", lambda ctx, c: list_object(
    f"/v1/customers/{c['id']}/sources", []))
expand.expandable("customer", "tax_ids", lambda ctx, c: list_object(
    f"/v1/customers/{c['id']}/tax_ids", []))
expand.expandable("customer", "subscriptions", lambda ctx, c: list_object(
    f"/v1/customers/{c['id']}/subscriptions",
    [respond(ctx, s) for s in ctx.store.all(
        "subscription", ctx.livemode,
        where=lambda s: s["customer"] == c["id"] and s["status"] != "canceled")]))


def _apply(ctx, customer: dict) -> None:
    set_strings(ctx, customer, ("description", "email", "name", "phone"), max_length=512)
    if ctx.has("address"):
        addr = ctx.dict("address")
        customer["address"] = ({k: addr.get(k) or None for k in ADDRESS_KEYS}
                               if addr else None)
    if ctx.has("balance"):
        customer["balance"] = ctx.int("balance", default=0)
    if ctx.has("invoice_prefix"):
        prefix = ctx.str("invoice_prefix")
        if prefix is not None and not (3 <= len(prefix) <= 12 and prefix.isalnum()):
            raise InvalidRequest("Invoice prefix must be 3-12 uppercase letters or numbers.",
                                 param="invoice_prefix")
        customer["invoice_prefix"] = prefix.upper() if prefix else customer["invoice_prefix"]
    if ctx.has("next_invoice_sequence"):
        customer["next_invoice_sequence"] = ctx.int("next_invoice_sequence", min=1)
    if ctx.has("preferred_locales"):
        customer["preferred_locales"] = [str(x) for x in ctx.list("preferred_locales")]
    if ctx.has("tax_exempt"):
        customer["tax_exempt"] = ctx.str("tax_exempt", default="none",
                                         choices=("exempt", "none", "reverse"))
    if ctx.has("invoice_settings"):
        settings = ctx.dict("invoice_settings") or {}
        merged = dict(customer["invoice_settings"])
        for key in ("default_payment_method", "footer"):
            if key in settings:
                merged[key] = settings[key] or None
        customer["invoice_settings"] = merged
    customer["metadata"] = update_metadata(ctx, customer.get("metadata"))


@route("/v1/customers", ["POST"], CREATE_PARAMS)
def create(ctx):
    customer = base_fields(ctx, fixtures.template("customer"), ids.new_id("cus"))
    customer["invoice_prefix"] = secrets.token_hex(4).upper()
    clock_id = ctx.str("test_clock")
    if clock_id is not None:
        # The customer lives on the clock's time from its creation on.
        clock = fetch(ctx, clock_id, "test_helpers.test_clock", "test clock",
                      param="test_clock")
        customer.update({"test_clock": clock_id, "created": clock["frozen_time"]})
    _apply(ctx, customer)
    ctx.store.insert(customer)
    events.created(ctx, customer, at=customer["created"])
    return respond(ctx, customer)


@route("/v1/customers/<obj_id>", ["GET"])
def retrieve(ctx, obj_id):
    return respond(ctx, fetch(ctx, obj_id, "customer", "customer", allow_deleted=True))


@route("/v1/customers/<obj_id>", ["POST"], UPDATE_PARAMS)
def update(ctx, obj_id):
    customer = fetch(ctx, obj_id, "customer", "customer")
    before = copy.deepcopy(customer)
    _apply(ctx, customer)
    ctx.store.save(customer)
    events.updated(ctx, before, customer, at=billing_cycle.customer_now(ctx.store, obj_id))
    return respond(ctx, customer)


@route("/v1/customers/<obj_id>", ["DELETE"])
def delete(ctx, obj_id):
    from .subscriptions import cancel_subscription

    customer = fetch(ctx, obj_id, "customer", "customer")
    billing_cycle.settle_customer(ctx.store, obj_id)
    at = billing_cycle.customer_now(ctx.store, obj_id)
    for sub in ctx.store.all("subscription", ctx.livemode,
                             where=lambda s: s["customer"] == obj_id
                             and s["status"] not in ("canceled", "incomplete_expired")):
        cancel_subscription(ctx, sub, at=at, reason="cancellation_requested")
        events.deleted(ctx, sub, at=at)
    events.deleted(ctx, customer, at=at)
    tomb = deleted(obj_id, "customer")
    tomb["livemode"] = ctx.livemode  # kept for mode checks; stripped from the response
    ctx.store.save(tomb)
    return deleted(obj_id, "customer")


@route("/v1/customers", ["GET"], LIST_PARAMS + ("created", "email", "test_clock"))
def list_customers(ctx):
    email = ctx.str("email", max_length=512)
    test_clock = ctx.str("test_clock")
    created = range_filter(ctx, "created")

    def keep(c):
        return (not c.get("deleted")
                and (email is None or c.get("email") == email)  # case-sensitive, like Stripe
                and (test_clock is None or c.get("test_clock") == test_clock)
                and (created is None or created(c["created"])))

    return paginate_store(ctx, "customer", "/v1/customers", "customer", where=keep, render=lambda o: respond(ctx, o))
