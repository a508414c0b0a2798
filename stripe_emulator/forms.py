"""Stripe's bracketed form encoding, both ways.

`items[0][price]=price_1&metadata[k]=v&expand[]=product` <-> nested dicts/lists.
stripe-python sends indexed arrays (`expand[0]=x`); curl users send `expand[]=x`;
both decode to lists. Every leaf stays a string: handlers coerce types so that
they can answer with Stripe's own "Invalid integer" style errors.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, List, Tuple
from urllib.parse import parse_qsl, urlencode

from .errors import InvalidRequest

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")

# A marker for `[]` segments while building, resolved into list appends.
_APPEND = object()


def parse_key(key: str) -> List[Any]:
    m = _KEY.match(key)
    if not m:
        raise InvalidRequest(f"Invalid parameter name: {key}", param=key)
    parts: List[Any] = [m.group(1)]
    for seg in _PART.findall(m.group(2)):
        parts.append(_APPEND if seg == "" else seg)
    return parts


def decode_pairs(pairs: Iterable[Tuple[str, str]]) -> dict:
    root: dict = {}
    for key, value in pairs:
        _assign(root, parse_key(key), value, key)
    return _listify(root)


def decode(body: str) -> dict:
    return decode_pairs(parse_qsl(body, keep_blank_values=True))


def _assign(node: dict, parts: List[Any], value: str, full_key: str) -> None:
    head, rest = parts[0], parts[1:]
    if not rest:
        if isinstance(node.get(head), (dict, list)):
            raise InvalidRequest(f"Invalid value for {full_key}: expected a hash or array.", param=full_key)
        node[head] = value
        return
    nxt = rest[0]
    if nxt is _APPEND:
        arr = node.setdefault(head, [])
        if not isinstance(arr, list):
            raise InvalidRequest(f"Invalid array: {full_key}", param=full_key)
        tail = rest[1:]
        if not tail:
            arr.append(value)
            return
        # `items[][price]=a&items[][quantity]=1`: like Rack, start a new element
        # when the last one already has this key.
        if not arr or not isinstance(arr[-1], dict) or tail[0] in arr[-1]:
            arr.append({})
        _assign(arr[-1], tail, value, full_key)
        return
    child = node.setdefault(head, {})
    if not isinstance(child, dict):
        raise InvalidRequest(f"Invalid hash: {full_key}", param=full_key)
    _assign(child, rest, value, full_key)


def _listify(value: Any) -> Any:
    """Dicts keyed only by digits (`items[0]`, `items[1]`) become lists."""
    if isinstance(value, list):
        return [_listify(v) for v in value]
    if isinstance(value, dict):
        converted = {k: _listify(v) for k, v in value.items()}
        if converted and all(isinstance(k, str) and k.isdigit() for k in converted):
            return [converted[k] for k in sorted(converted, key=int)]
        return converted
    return value


def encode(params: dict) -> str:
    """The inverse, for tests and clients: nested values to a bracketed query."""
    return urlencode(list(_flatten("", params)))


def _flatten(prefix: str, value: Any):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flatten(f"{prefix}[{k}]" if prefix else str(k), v)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _flatten(f"{prefix}[{i}]", v)
    elif value is None:
        return
    elif isinstance(value, bool):
        yield prefix, "true" if value else "false"
    else:
        yield prefix, str(value)
