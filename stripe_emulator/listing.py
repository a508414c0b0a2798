"""List objects, cursor pagination and the `created`-style range filters."""

from __future__ import annotations

from typing import Callable, List, Optional

from . import errors
from .context import coerce_int
from .errors import InvalidRequest


def list_object(url: str, data: List[dict], has_more: bool = False) -> dict:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


def paginate(ctx, items: List[dict], url: str, kind: str = "object",
             render: Optional[Callable] = None) -> dict:
    """Stripe's cursor pagination over `items` (already in list order, newest first)."""
    limit = ctx.int("limit", default=10, min=1, max=100)
    ctx.exclusive("starting_after", "ending_before")
    after = ctx.str("starting_after")
    before = ctx.str("ending_before")
    ids = [o["id"] for o in items]
    if after is not None:
        if after not in ids:
            raise errors.no_such(kind, after, param="starting_after")
        start = ids.index(after) + 1
        page = items[start:start + limit]
        has_more = start + limit < len(items)
    elif before is not None:
        if before not in ids:
            raise errors.no_such(kind, before, param="ending_before")
        end = ids.index(before)
        begin = max(0, end - limit)
        page = items[begin:end]
        has_more = begin > 0
    else:
        page = items[:limit]
        has_more = len(items) > limit
    if render is not None:
        page = [render(o) for o in page]
    return list_object(url, page, has_more)


def paginate_store(ctx, type: str, url: str, kind: str = "object", where: Optional[Callable] = None,
                   render: Optional[Callable] = None, prepare: Optional[Callable] = None) -> dict:
    """`paginate` over a type's stored objects in the request's mode, by cursor in SQL
    (Store.page; `prepare` brings each object read up to date before `where` sees it)."""
    limit = ctx.int("limit", default=10, min=1, max=100)
    ctx.exclusive("starting_after", "ending_before")
    after = ctx.str("starting_after")
    before = ctx.str("ending_before")
    found = ctx.store.page(type, ctx.livemode, limit=limit, after=after, before=before, where=where,
                           prepare=prepare)
    if found is None:
        param = "starting_after" if after is not None else "ending_before"
        raise errors.no_such(kind, after if after is not None else before, param=param)
    page, has_more = found
    if render is not None:
        page = [render(o) for o in page]
    return list_object(url, page, has_more)


def range_filter(ctx, name: str) -> Optional[Callable[[Optional[int]], bool]]:
    """`created=123` or `created[gte]=..&created[lt]=..` as a predicate."""
    spec = ctx.raw(name)
    if spec is None or spec == "":
        return None
    if isinstance(spec, str):
        exact = coerce_int(name, spec)
        return lambda v: v == exact
    if not isinstance(spec, dict):
        raise InvalidRequest("Invalid object", param=name)
    bounds = {}
    for op, raw in spec.items():
        if op not in ("gt", "gte", "lt", "lte"):
            raise errors.unknown_param(f"{name}[{op}]")
        bounds[op] = coerce_int(f"{name}[{op}]", raw)

    def ok(v):
        if v is None:
            return False
        return (("gt" not in bounds or v > bounds["gt"])
                and ("gte" not in bounds or v >= bounds["gte"])
                and ("lt" not in bounds or v < bounds["lt"])
                and ("lte" not in bounds or v <= bounds["lte"]))
    return ok
