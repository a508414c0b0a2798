"""Products: /v1/products (create, retrieve, update, delete, list, features)."""

from __future__ import annotations

import copy
import re

from .. import errors, expand, fixtures, ids
from ..errors import InvalidRequest
from ..listing import paginate, paginate_store, range_filter
from ..routing import LIST_PARAMS, route
from . import events
from .common import base_fields, deleted, fetch, respond, set_strings, update_metadata

CREATE_PARAMS = ("active", "default_price_data", "description", "id", "images",
                 "marketing_features", "metadata", "name", "package_dimensions", "shippable",
                 "statement_descriptor", "tax_code", "type", "unit_label", "url")
UPDATE_PARAMS = ("active", "default_price", "description", "images", "marketing_features",
                 "metadata", "name", "package_dimensions", "shippable", "statement_descriptor",
                 "tax_code", "unit_label", "url")


expand.expandable("product", "default_price")
expand.expandable("product", "tax_code")


def _apply_common(ctx, product: dict) -> None:
    set_strings(ctx, product, ("description", "statement_descriptor", "unit_label", "url",
                               "tax_code"))
    if ctx.has("active"):
        product["active"] = ctx.bool("active", default=True)
    if ctx.has("shippable"):
        product["shippable"] = ctx.bool("shippable")
    if ctx.has("images"):
        product["images"] = [str(i) for i in ctx.list("images")]
    if ctx.has("marketing_features"):
        feats = ctx.list("marketing_features")
        product["marketing_features"] = [{"name": f.get("name")} for f in feats
                                         if isinstance(f, dict)]
    if ctx.has("package_dimensions"):
        dims = ctx.dict("package_dimensions")
        product["package_dimensions"] = (
            {k: float(dims[k]) for k in ("height", "length", "weight", "width")} if dims else None)
    product["metadata"] = update_metadata(ctx, product.get("metadata"))


@route("/v1/products", ["POST"], CREATE_PARAMS)
def create(ctx):
    name = ctx.str("name", required=True, max_length=5000)
    obj_id = ctx.str("id")
    if obj_id is not None:
        if not re.fullmatch(r"[A-Za-z0-9_\-]{1,250}", obj_id):
            raise errors.invalid_param("id", f"Invalid product id: {obj_id}")
        if ctx.store.get(obj_id) is not None:
            raise InvalidRequest("Product already exists.", code="resource_already_exists",
                                 param="id")
    product = base_fields(ctx, fixtures.template("product"), obj_id or ids.new_id("prod"))
    product["name"] = name
    product["updated"] = product["created"]
    product["type"] = ctx.str("type", default="service", choices=("good", "service"))
    _apply_common(ctx, product)
    ctx.store.insert(product)
    price = None
    if ctx.has("default_price_data"):
        from .prices import create_price_from_data
        price = create_price_from_data(ctx, ctx.dict("default_price_data"), product["id"],
                                       "default_price_data")
        product["default_price"] = price["id"]
        ctx.store.save(product)
    events.created(ctx, product)
    if price is not None:
        events.created(ctx, price)
    return respond(ctx, product)


@route("/v1/products/<obj_id>", ["GET"])
def retrieve(ctx, obj_id):
    return respond(ctx, fetch(ctx, obj_id, "product", "product"))


@route("/v1/products/<obj_id>", ["POST"], UPDATE_PARAMS)
def update(ctx, obj_id):
    product = fetch(ctx, obj_id, "product", "product")
    before = copy.deepcopy(product)
    if ctx.has("name"):
        product["name"] = ctx.str("name", required=True, max_length=5000)
    if ctx.has("default_price"):
        price_id = ctx.str("default_price")
        if price_id is not None:
            price = fetch(ctx, price_id, "price", "price", param="default_price")
            if price["product"] != obj_id:
                raise InvalidRequest(
                    f"The price {price_id} does not belong to product {obj_id}.",
                    param="default_price")
        product["default_price"] = price_id
    _apply_common(ctx, product)
    product["updated"] = ctx.now()
    ctx.store.save(product)
    events.updated(ctx, before, product)
    return respond(ctx, product)


@route("/v1/products/<obj_id>", ["DELETE"])
def delete(ctx, obj_id):
    product = fetch(ctx, obj_id, "product", "product")
    if ctx.store.all("price", ctx.livemode, where=lambda p: p["product"] == obj_id):
        raise InvalidRequest(
            "This product cannot be deleted because it has one or more user-created prices.")
    ctx.store.delete(obj_id)
    events.deleted(ctx, product)
    return deleted(obj_id, "product")


@route("/v1/products", ["GET"],
       LIST_PARAMS + ("active", "created", "ids", "shippable", "type", "url"))
def list_products(ctx):
    active = ctx.bool("active")
    shippable = ctx.bool("shippable")
    ptype = ctx.str("type", choices=("good", "service"))
    url = ctx.str("url")
    wanted_ids = ctx.list("ids")
    created = range_filter(ctx, "created")

    def keep(p):
        return ((active is None or p["active"] is active)
                and (shippable is None or p["shippable"] is shippable)
                and (ptype is None or p["type"] == ptype)
                and (url is None or p["url"] == url)
                and (wanted_ids is None or p["id"] in wanted_ids)
                and (created is None or created(p["created"])))

    return paginate_store(ctx, "product", "/v1/products", "product", where=keep, render=lambda o: respond(ctx, o))


@route("/v1/products/<obj_id>/features", ["GET"], LIST_PARAMS)
def list_features(ctx, obj_id):
    # Entitlement features are not emulated: every product has none.
    fetch(ctx, obj_id, "product", "product")
    return paginate(ctx, [], f"/v1/products/{obj_id}/features", "product_feature")
