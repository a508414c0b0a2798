"""
The JSONPath subset meters use to point into an event's `data`: `$.key`, `$.a.b`
and `$['key']` / `$["key"]` (member access only; no wildcards, filters or indexes).

A path is parsed once into a tuple of keys, which the database expressions
(`expressions.py`) and the ingest validation (`validation.py`) both walk, so they
agree on what a path means.
"""

import functools
import re

_SEGMENT = re.compile(
    r"""\.(?P<dot>[A-Za-z0-9_-]+)"""
    r"""|\[\s*(?:'(?P<single>[^'\\]*)'|"(?P<double>[^"\\]*)")\s*\]"""
)

MISSING = object()


@functools.lru_cache(maxsize=256)  # pure; ingest parses each meter's path per event
def parse(path: str) -> tuple[str, ...]:
    """The keys of `path`, or ValueError naming what is unsupported."""
    if not isinstance(path, str) or not path.startswith("$"):
        raise ValueError(f"JSONPath {path!r} must start with '$', e.g. $.billed_seconds")
    keys, pos = [], 1
    while pos < len(path):
        match = _SEGMENT.match(path, pos)
        if not match:
            raise ValueError(
                f"unsupported JSONPath {path!r}: only member access like $.key, "
                f"$.a.b or $['key'] is supported"
            )
        keys.append(next(g for g in match.group("dot", "single", "double") if g is not None))
        pos = match.end()
    if not keys:
        raise ValueError(f"JSONPath {path!r} must name a property, e.g. $.billed_seconds")
    return tuple(keys)


def lookup(data, keys: tuple[str, ...]):
    """The value at `keys` in `data`, or MISSING."""
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return MISSING
        data = data[key]
    return data
