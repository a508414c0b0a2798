"""Prices: /v1/prices (create, retrieve, update, list).

Rules mirrored from Stripe: exactly one of `unit_amount` /
`unit_amount_decimal` (at most 12 decimal places); `product` or
`product_data`; since 2025-03-31.basil a `metered` price needs
`recurring[meter]` (an existing meter) and a meter is only allowed on metered
prices; a `lookup_key` belongs to one price unless `transfer_lookup_key=true`
moves it. Tiered prices, `custom_unit_amount` and `currency_options` are not
emulated.
"""

from __future__ import annotations

import copy
import re

from .. import errors, expand, fixtures, ids
from ..context import (MISSING, check_keys, coerce_bool, coerce_decimal, coerce_int,
                       coerce_str)
from ..errors import InvalidRequest
from ..listing import paginate_store, range_filter
from ..routing import LIST_PARAMS, route
from ..store import format_decimal
from . import events
from .common import fetch, respond, update_metadata

CREATE_PARAMS = ("active", "billing_scheme", "currency", "currency_options",
                 "custom_unit_amount", "lookup_key", "metadata", "nickname", "product",
                 "product_data", "recurring", "tax_behavior", "tiers", "tiers_mode",
                 "transfer_lookup_key", "transform_quantity", "unit_amount",
                 "unit_amount_decimal")
UPDATE_PARAMS = ("active", "currency_options", "lookup_key", "metadata", "nickname",
                 "tax_behavior", "transfer_lookup_key")

INTERVAL_MAX = {"day": 365, "week": 52, "month": 12, "year": 1}


def _currency_options(ctx, price):
    return {price["currency"]: {"custom_unit_amount": None,
                                "tax_behavior": price["tax_behavior"],
                                "unit_amount": price["unit_amount"],
                                "unit_amount_decimal": price["unit_amount_decimal"]}}


expand.expandable("price", "product")
expand.expandable("price", "currency_options", _currency_options)
expand.expandable("price", "tiers", lambda ctx, price: None)  # tiered prices aren't emulated


def _p(prefix: str, name: str) -> str:
    return f"{prefix}[{name}]" if prefix else name


def _get(src: dict, name: str):
    return src.get(name, MISSING)


def build_price(ctx, src: dict, prefix: str = "", product_id: str = None) -> dict:
    """A new price from params `src` (top-level or nested under `prefix`)."""
    currency = coerce_str(_p(prefix, "currency"), _get(src, "currency"), required=True)
    if not re.fullmatch(r"[A-Za-z]{3}", currency):
        raise InvalidRequest(f"Invalid currency: {currency}.", param=_p(prefix, "currency"))
    scheme = coerce_str(_p(prefix, "billing_scheme"), _get(src, "billing_scheme"),
                        default="per_unit", choices=("per_unit", "tiered"))
    if scheme == "tiered" or "tiers" in src:
        raise InvalidRequest("Tiered prices are not supported by the local Stripe emulator.",
                             param=_p(prefix, "billing_scheme"))
    if src.get("custom_unit_amount"):
        raise InvalidRequest("custom_unit_amount is not supported by the local Stripe emulator.",
                             param=_p(prefix, "custom_unit_amount"))
    present = [n for n in ("unit_amount", "unit_amount_decimal") if n in src]
    if len(present) > 1:
        raise InvalidRequest(
            "You may only specify one of these parameters: unit_amount, unit_amount_decimal.",
            code="parameters_exclusive", param=_p(prefix, "unit_amount_decimal"))
    if not present:
        raise errors.missing_param(_p(prefix, "unit_amount"))
    if present[0] == "unit_amount":
        amount = coerce_int(_p(prefix, "unit_amount"), src["unit_amount"], required=True,
                            min=0, max=99999999)
        unit_amount, unit_amount_decimal = amount, str(amount)
    else:
        dec = coerce_decimal(_p(prefix, "unit_amount_decimal"), src["unit_amount_decimal"],
                             required=True, max_places=12)
        if dec < 0:
            raise InvalidRequest("This value must be greater than or equal to 0.",
                                 param=_p(prefix, "unit_amount_decimal"))
        unit_amount_decimal = format_decimal(dec)
        unit_amount = int(dec) if dec == dec.to_integral_value() else None

    recurring = _recurring(ctx, src.get("recurring"), _p(prefix, "recurring"))
    price = fixtures.template("price")
    price.update({
        "id": ids.new_id("price"), "livemode": ctx.livemode, "created": ctx.now(),
        "currency": currency.lower(), "billing_scheme": scheme,
        "unit_amount": unit_amount, "unit_amount_decimal": unit_amount_decimal,
        "recurring": recurring, "type": "recurring" if recurring else "one_time",
        "product": product_id,
        "active": coerce_bool(_p(prefix, "active"), _get(src, "active"), default=True),
        "nickname": coerce_str(_p(prefix, "nickname"), _get(src, "nickname"), max_length=5000),
        "tax_behavior": coerce_str(_p(prefix, "tax_behavior"), _get(src, "tax_behavior"),
                                   default="unspecified",
                                   choices=("exclusive", "inclusive", "unspecified")),
    })
    tq = src.get("transform_quantity")
    if tq:
        tq_param = _p(prefix, "transform_quantity")
        if not isinstance(tq, dict):
            raise InvalidRequest("Invalid object", param=tq_param)
        check_keys(tq, ("divide_by", "round"), tq_param)
        price["transform_quantity"] = {
            "divide_by": coerce_int(f"{tq_param}[divide_by]", _get(tq, "divide_by"),
                                    required=True, min=1),
            "round": coerce_str(f"{tq_param}[round]", _get(tq, "round"), required=True,
                                choices=("down", "up")),
        }
    return price


def _recurring(ctx, raw, param: str):
    if raw is None or raw == "":
        return None
    if not isinstance(raw, dict):
        raise InvalidRequest("Invalid object", param=param)
    check_keys(raw, ("interval", "interval_count", "meter", "trial_period_days", "usage_type"),
               param)
    interval = coerce_str(f"{param}[interval]", _get(raw, "interval"), required=True,
                          choices=("day", "week", "month", "year"))
    count = coerce_int(f"{param}[interval_count]", _get(raw, "interval_count"), default=1, min=1)
    if count > INTERVAL_MAX[interval]:
        raise InvalidRequest(
            "The maximum billing frequency is one year. Provide an interval (with optional "
            "interval_count) that is at most one year.", param=f"{param}[interval_count]")
    usage_type = coerce_str(f"{param}[usage_type]", _get(raw, "usage_type"),
                            default="licensed", choices=("licensed", "metered"))
    meter_id = coerce_str(f"{param}[meter]", _get(raw, "meter"))
    if usage_type == "metered" and meter_id is None:
        # 2025-03-31.basil removed legacy usage-based billing (metered without a meter).
        raise InvalidRequest(
            "A meter is required for prices with `recurring[usage_type]=metered`. Create a "
            "billing meter and pass its id as `recurring[meter]`.", param=f"{param}[meter]")
    if meter_id is not None:
        if usage_type != "metered":
            raise InvalidRequest(
                "`recurring[meter]` can only be set when `recurring[usage_type]` is `metered`.",
                param=f"{param}[meter]")
        fetch(ctx, meter_id, "billing.meter", "billing meter", param=f"{param}[meter]")
    return {
        "interval": interval, "interval_count": count, "meter": meter_id,
        "trial_period_days": coerce_int(f"{param}[trial_period_days]",
                                        _get(raw, "trial_period_days"), min=0),
        "usage_type": usage_type,
    }


def _claim_lookup_key(ctx, price: dict, key, transfer: bool) -> None:
    if key is None:
        price["lookup_key"] = None
        return
    holders = ctx.store.all("price", ctx.livemode,
                            where=lambda p: p.get("lookup_key") == key and p["id"] != price["id"])
    for other in holders:
        if not transfer:
            raise InvalidRequest(f"A price (`{other['id']}`) already uses that lookup key.",
                                 param="lookup_key")
        other["lookup_key"] = None
        ctx.store.save(other)
    price["lookup_key"] = key


def create_price_from_data(ctx, data: dict, product_id: str, prefix: str) -> dict:
    """Used by products' `default_price_data`."""
    price = build_price(ctx, data, prefix, product_id)
    price["metadata"] = {}
    ctx.store.insert(price)
    return price


@route("/v1/prices", ["POST"], CREATE_PARAMS)
def create(ctx):
    ctx.used.update(("currency", "unit_amount", "unit_amount_decimal", "recurring", "active",
                     "nickname", "tax_behavior", "transform_quantity", "billing_scheme",
                     "custom_unit_amount", "tiers"))
    ctx.exclusive("product", "product_data")
    product_id = ctx.str("product")
    product_data = ctx.dict("product_data")
    if product_id is None and product_data is None:
        raise errors.missing_param("product")
    if product_id is not None:
        fetch(ctx, product_id, "product", "product", param="product")
    price = build_price(ctx, ctx.params, "", product_id)
    price["metadata"] = update_metadata(ctx, {})
    lookup_key = ctx.str("lookup_key", max_length=200)
    if product_data is not None:
        price["product"] = _create_product(ctx, product_data)
    _claim_lookup_key(ctx, price, lookup_key, bool(ctx.bool("transfer_lookup_key")))
    ctx.store.insert(price)
    if product_data is not None:
        events.created(ctx, ctx.store.get(price["product"], "product"))
    events.created(ctx, price)
    return respond(ctx, price)


def _create_product(ctx, data: dict) -> str:
    check_keys(data, ("active", "id", "metadata", "name", "statement_descriptor", "tax_code",
                      "unit_label"), "product_data")
    product = fixtures.template("product")
    product.update({
        "id": coerce_str("product_data[id]", _get(data, "id")) or ids.new_id("prod"),
        "livemode": ctx.livemode, "created": ctx.now(), "updated": ctx.now(),
        "name": coerce_str("product_data[name]", _get(data, "name"), required=True),
        "active": coerce_bool("product_data[active]", _get(data, "active"), default=True),
        "statement_descriptor": coerce_str("product_data[statement_descriptor]",
                                           _get(data, "statement_descriptor")),
        "tax_code": coerce_str("product_data[tax_code]", _get(data, "tax_code")),
        "unit_label": coerce_str("product_data[unit_label]", _get(data, "unit_label")),
        "metadata": {k: v for k, v in (data.get("metadata") or {}).items() if v != ""},
    })
    ctx.store.insert(product)
    return product["id"]


@route("/v1/prices/<obj_id>", ["GET"])
def retrieve(ctx, obj_id):
    return respond(ctx, fetch(ctx, obj_id, "price", "price"))


@route("/v1/prices/<obj_id>", ["POST"], UPDATE_PARAMS)
def update(ctx, obj_id):
    price = fetch(ctx, obj_id, "price", "price")
    before = copy.deepcopy(price)
    if ctx.has("active"):
        price["active"] = ctx.bool("active", default=price["active"])
    if ctx.has("nickname"):
        price["nickname"] = ctx.str("nickname", max_length=5000)
    if ctx.has("tax_behavior"):
        price["tax_behavior"] = ctx.str("tax_behavior",
                                        choices=("exclusive", "inclusive", "unspecified"))
    if ctx.has("lookup_key"):
        _claim_lookup_key(ctx, price, ctx.str("lookup_key", max_length=200),
                          bool(ctx.bool("transfer_lookup_key")))
    price["metadata"] = update_metadata(ctx, price.get("metadata"))
    ctx.store.save(price)
    events.updated(ctx, before, price)
    return respond(ctx, price)


@route("/v1/prices", ["GET"],
       LIST_PARAMS + ("active", "created", "currency", "lookup_keys", "product", "recurring",
                      "type"))
def list_prices(ctx):
    active = ctx.bool("active")
    currency = ctx.str("currency")
    product = ctx.str("product")
    ptype = ctx.str("type", choices=("one_time", "recurring"))
    lookup_keys = ctx.list("lookup_keys")
    if lookup_keys is not None and len(lookup_keys) > 10:
        raise InvalidRequest("You can pass at most 10 lookup_keys.", param="lookup_keys")
    recurring = ctx.dict("recurring") or {}
    created = range_filter(ctx, "created")

    def keep(p):
        rec = p.get("recurring") or {}
        return ((active is None or p["active"] is active)
                and (currency is None or p["currency"] == currency.lower())
                and (product is None or p["product"] == product)
                and (ptype is None or p["type"] == ptype)
                and (lookup_keys is None or p.get("lookup_key") in lookup_keys)
                and all(rec.get(k) == v for k, v in recurring.items()
                        if k in ("interval", "meter", "usage_type"))
                and (not recurring or p.get("recurring") is not None)
                and (created is None or created(p["created"])))

    return paginate_store(ctx, "price", "/v1/prices", "price", where=keep, render=lambda o: respond(ctx, o))


def plan_for(price: dict) -> dict:
    """The legacy `plan` view of a recurring price, as embedded in subscription items."""
    plan = fixtures.template("plan")
    rec = price.get("recurring") or {}
    plan.update({
        "id": price["id"], "active": price["active"], "amount": price["unit_amount"],
        "amount_decimal": price["unit_amount_decimal"], "billing_scheme": price["billing_scheme"],
        "created": price["created"], "currency": price["currency"],
        "interval": rec.get("interval"), "interval_count": rec.get("interval_count"),
        "livemode": price["livemode"], "metadata": price.get("metadata") or {},
        "meter": rec.get("meter"), "nickname": price.get("nickname"),
        "product": price["product"], "tiers_mode": price.get("tiers_mode"),
        "transform_usage": price.get("transform_quantity"),
        "trial_period_days": rec.get("trial_period_days"), "usage_type": rec.get("usage_type"),
    })
    return plan

