"""From stored document to API object.

Most objects are returned as stored. Some embed live state of other objects
when rendered (a subscription's `items` list, an item's `price` and `plan`),
as Stripe does; those types register a renderer here.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

RENDERERS: Dict[str, Callable] = {}


def renderer(type_name: str):
    def deco(fn):
        RENDERERS[type_name] = fn
        return fn
    return deco


def render(ctx, obj: dict) -> dict:
    if obj.get("deleted"):
        return {"id": obj["id"], "object": obj["object"], "deleted": True}
    fn = RENDERERS.get(obj.get("object"))
    return obj if fn is None else fn(ctx, obj)


def load(ctx, obj_id: str, type_name: Optional[str] = None) -> Optional[dict]:
    """A rendered object of the caller's mode, or None."""
    obj = ctx.store.get(obj_id, type_name)
    if obj is None or bool(obj.get("livemode")) != ctx.livemode:
        return None
    return render(ctx, obj)
