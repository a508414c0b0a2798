"""Webhook endpoints: /v1/webhook_endpoints (create, retrieve, update, delete, list).

The signing `secret` (whsec_...) is in the create response only, as on
Stripe; it is stored for signing deliveries (webhooks.py) and never shown
again. `enabled_events` are event type names or `*`.
"""

from __future__ import annotations

import re

from .. import fixtures, ids, middleware
from ..errors import InvalidRequest
from ..listing import paginate
from ..render import renderer
from ..routing import LIST_PARAMS, route
from .common import deleted, fetch, respond, update_metadata

EVENT_TYPE = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")


@renderer("webhook_endpoint")
def render_endpoint(ctx, endpoint: dict) -> dict:
    out = dict(endpoint)
    out.pop("secret", None)
    return out


def _url(ctx, required: bool) -> str:
    url = ctx.str("url", required=required, max_length=5000)
    if url is not None and not re.match(r"^https?://[^\s/]+", url):
        raise InvalidRequest(f"Invalid URL: {url}. URLs must begin with http:// or https://.",
                             param="url")
    return url


def _enabled_events(ctx) -> list:
    events = [str(e) for e in ctx.list("enabled_events", required=True)]
    if not events:
        raise InvalidRequest("Missing required param: enabled_events.",
                             code="parameter_missing", param="enabled_events")
    for i, name in enumerate(events):
        if name != "*" and not EVENT_TYPE.match(name):
            raise InvalidRequest(f"Invalid event type: {name}", param=f"enabled_events[{i}]")
    return events


@route("/v1/webhook_endpoints", ["POST"], ("api_version", "connect", "description",
                                           "enabled_events", "metadata", "url"))
def create(ctx):
    endpoint = fixtures.template("webhook_endpoint")
    api_version = ctx.str("api_version")
    if api_version is not None and not middleware.VERSION_RE.match(api_version):
        raise InvalidRequest(f"Invalid Stripe API version: {api_version}", param="api_version")
    if ctx.bool("connect"):
        raise InvalidRequest("Connect webhook endpoints are not supported by the local Stripe "
                             "emulator.", param="connect")
    endpoint.update({
        "id": ids.new_id("we"), "livemode": ctx.livemode, "created": ctx.now(),
        "url": _url(ctx, required=True), "enabled_events": _enabled_events(ctx),
        "api_version": api_version, "description": ctx.str("description", max_length=5000),
        "metadata": update_metadata(ctx, {}),
        "secret": "whsec_" + ids.random_part(ids.LENGTHS["whsec"]),
    })
    ctx.store.insert(endpoint)
    out = respond(ctx, endpoint)
    out["secret"] = endpoint["secret"]  # shown once, on create
    return out


@route("/v1/webhook_endpoints/<obj_id>", ["GET"])
def retrieve(ctx, obj_id):
    return respond(ctx, fetch(ctx, obj_id, "webhook_endpoint", "webhook endpoint"))


@route("/v1/webhook_endpoints/<obj_id>", ["POST"], ("description", "disabled", "enabled_events",
                                                    "metadata", "url"))
def update(ctx, obj_id):
    endpoint = fetch(ctx, obj_id, "webhook_endpoint", "webhook endpoint")
    if ctx.has("url"):
        endpoint["url"] = _url(ctx, required=True)
    if ctx.has("enabled_events"):
        endpoint["enabled_events"] = _enabled_events(ctx)
    if ctx.has("description"):
        endpoint["description"] = ctx.str("description", max_length=5000)
    if ctx.has("disabled"):
        endpoint["status"] = "disabled" if ctx.bool("disabled") else "enabled"
    endpoint["metadata"] = update_metadata(ctx, endpoint.get("metadata"))
    ctx.store.save(endpoint)
    return respond(ctx, endpoint)


@route("/v1/webhook_endpoints/<obj_id>", ["DELETE"])
def delete(ctx, obj_id):
    fetch(ctx, obj_id, "webhook_endpoint", "webhook endpoint")
    ctx.store.delete(obj_id)
    return deleted(obj_id, "webhook_endpoint")


@route("/v1/webhook_endpoints", ["GET"], LIST_PARAMS)
def list_endpoints(ctx):
    return paginate(ctx, ctx.store.all("webhook_endpoint", ctx.livemode),
                    "/v1/webhook_endpoints", "webhook endpoint",
                    render=lambda o: respond(ctx, o))
