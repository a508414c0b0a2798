"""`expand[]`: replace ids with objects, and fill "includable" fields.

Paths are dotted (`items.data.price.product`); lists are entered with
`data`. Like Stripe: only fields Stripe marks expandable can be expanded
(others are a 400 "This property cannot be expanded"), expansion goes at most
four levels deep, a null stays null, and on a list response paths must start
with `data.`.
"""

from __future__ import annotations

from typing import Callable, Dict, Union

from . import render as rendering
from .errors import InvalidRequest

REF = "ref"  # an id to replace by the object it names

# type -> dotted path (relative to an object of that type) -> REF or a
# function (ctx, obj) giving the value of an includable field.
EXPANDABLE: Dict[str, Dict[str, Union[str, Callable]]] = {}

MAX_DEPTH = 4


def expandable(type_name: str, path: str, how: Union[str, Callable] = REF) -> None:
    EXPANDABLE.setdefault(type_name, {})[path] = how


def apply(ctx, body: dict, paths) -> dict:
    for path in paths:
        parts = path.split(".")
        if len(parts) > MAX_DEPTH:
            raise InvalidRequest(
                f"You cannot expand more than {MAX_DEPTH} levels of a property. "
                f"Property: {path}", param="expand")
        if body.get("object") == "list" and parts[0] != "data":
            raise InvalidRequest(
                f"This property cannot be expanded ({path}). You may want to try "
                f"expanding 'data.{path}' instead.", param="expand")
        _expand(ctx, body, None, "", parts, path)
    return body


def _expand(ctx, node, owner_type, rel, parts, full):
    """Walk `parts` from `node`; `owner_type`/`rel` locate node in its typed object."""
    if node is None or not parts:
        return
    if isinstance(node, dict) and node.get("object") == "list":
        if parts[0] != "data":
            raise _cannot(full)
        for item in node.get("data") or []:
            _expand(ctx, item, None, "", parts[1:], full)
        return
    if not isinstance(node, dict):
        raise _cannot(full)
    if node.get("object") and not rel:
        owner_type, rel = node["object"], ""
    key, rest = parts[0], parts[1:]
    path = f"{rel}.{key}" if rel else key
    how = EXPANDABLE.get(owner_type, {}).get(path)
    value = node.get(key)
    if how is not None:
        if how == REF:
            if isinstance(value, str):
                loaded = rendering.load(ctx, value)
                if loaded is not None:
                    node[key] = value = loaded
        else:
            node[key] = value = how(ctx, node)
    elif not rest or not isinstance(value, dict):
        # Only expandable fields can end a path; others can only be walked through.
        raise _cannot(full)
    if rest:
        if isinstance(value, dict) and value.get("object") and value.get("object") != "list":
            _expand(ctx, value, value["object"], "", rest, full)
        elif isinstance(value, dict) and value.get("object"):
            _expand(ctx, value, None, "", rest, full)
        elif isinstance(value, dict):
            _expand(ctx, value, owner_type, path, rest, full)
        elif value is not None:
            raise _cannot(full)


def _cannot(path: str) -> InvalidRequest:
    return InvalidRequest(f"This property cannot be expanded ({path}).", param="expand")
