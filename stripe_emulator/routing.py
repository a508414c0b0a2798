"""The route table: resource modules register handlers with `@route`.

Each route lists the top-level params Stripe documents for the endpoint
(`params=`). A param outside that list is a 400 `parameter_unknown`, as on
Stripe; a documented one the emulator does not implement is accepted and
shown in the request log under `ignored_params`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, FrozenSet, List, Sequence

from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule


@dataclass(frozen=True)
class Route:
    rule: str
    methods: tuple
    handler: Callable
    params: FrozenSet[str]
    name: str


ROUTES: List[Route] = []

LIST_PARAMS = ("limit", "starting_after", "ending_before")


def route(rule: str, methods: Sequence[str] = ("GET",), params: Sequence[str] = ()):
    def deco(fn):
        ROUTES.append(Route(rule, tuple(m.upper() for m in methods), fn,
                            frozenset(params) | {"expand"}, f"{fn.__module__}.{fn.__name__}"))
        return fn
    return deco


class Router:
    def __init__(self, routes: List[Route]):
        self.routes = list(routes)
        self.map = Map(
            [Rule(r.rule, methods=list(r.methods), endpoint=i) for i, r in enumerate(self.routes)],
            strict_slashes=False, merge_slashes=False,
        )

    def match(self, method: str, path: str):
        """(Route, view_args), or None for an unknown URL or method."""
        adapter = self.map.bind("localhost", path_info=path)
        try:
            idx, args = adapter.match(path, method=method)
        except (NotFound, MethodNotAllowed):
            return None
        return self.routes[idx], args
