"""Helpers shared by the resource modules."""

from __future__ import annotations

from typing import Optional

from .. import errors, render
from ..errors import InvalidRequest


def fetch(ctx, obj_id: str, type_name: str, kind: str, param: str = "id",
          allow_deleted: bool = False) -> dict:
    """The stored object of the caller's mode, or Stripe's 404 (with its test/live hint)."""
    obj = ctx.store.get(obj_id, type_name)
    if obj is not None and bool(obj.get("livemode")) != ctx.livemode:
        mode, other = ("test", "live") if obj.get("livemode") is False else ("live", "test")
        raise errors.no_such(
            kind, obj_id, param,
            f"; a similar object exists in {mode} mode, but a {other} mode key was used to "
            "make this request.")
    if obj is None or (obj.get("deleted") and not allow_deleted):
        raise errors.no_such(kind, obj_id, param)
    return obj


def respond(ctx, obj: dict) -> dict:
    return render.render(ctx, obj)


def base_fields(ctx, template: dict, obj_id: str) -> dict:
    template.update({"id": obj_id, "livemode": ctx.livemode, "created": ctx.now()})
    return template


def update_metadata(ctx, current: Optional[dict], param: str = "metadata") -> dict:
    """Stripe's metadata semantics: keys merge; `metadata[k]=` deletes k;
    `metadata=` (empty) clears all. Limits: 50 keys, key 40 chars, value 500."""
    result = dict(current or {})
    if param not in ctx.params:
        return result
    raw = ctx.raw(param)
    if raw == "":
        return {}
    if not isinstance(raw, dict):
        raise InvalidRequest("Invalid object", param=param)
    for key, value in raw.items():
        if isinstance(value, (dict, list)):
            raise InvalidRequest(
                f"Invalid value type: {{...}} must be a string", param=f"{param}[{key}]")
        if len(key) > 40:
            raise InvalidRequest(
                f"Metadata keys can have up to 40 characters; the key '{key}' has {len(key)}.",
                param=f"{param}[{key}]")
        if len(value) > 500:
            raise InvalidRequest(
                f"Metadata values can have up to 500 characters, but you passed in a value "
                f"that is {len(value)} characters. Invalid value: {value[:30]}...",
                param=f"{param}[{key}]")
        if value == "":
            result.pop(key, None)
        else:
            result[key] = value
    if len(result) > 50:
        raise InvalidRequest(
            "You can have at most 50 keys in metadata. You passed in "
            f"{len(result)} keys.", param=param)
    return result


def set_strings(ctx, obj: dict, names, max_length: int = 5000) -> None:
    """Optional string fields: present sets, empty string unsets (null)."""
    for name in names:
        if name in ctx.params:
            obj[name] = ctx.str(name, max_length=max_length)


def deleted(obj_id: str, object_name: str) -> dict:
    return {"id": obj_id, "object": object_name, "deleted": True}
