"""Stripe's search query language, for /v1/{customers,products,prices,subscriptions}/search.

A query is up to 10 clauses `field<op>value`, joined by spaces or `AND`, or
by `OR` (AND and OR cannot be mixed; no parentheses). Ops: `:` exact match,
`~` substring (at least 3 characters), and `>`, `<`, `>=`, `<=` on numeric
fields. A leading `-` negates a clause. Metadata is `metadata['key']:'value'`
(single or double quotes). String matching here is case-insensitive.

Unlike Stripe, results are immediately consistent (Stripe's search index lags
up to a minute), which only makes read-after-write flows look better here
than they will against Stripe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from .errors import InvalidRequest

MAX_CLAUSES = 10

# Field types: how a clause compares.
STRING, TOKEN, NUMBER, BOOLEAN = "string", "token", "number", "boolean"

_WS = re.compile(r"\s+")
_CONNECTOR = re.compile(r"(AND|OR)(?=\s)", re.IGNORECASE)
_FIELD = re.compile(r"""metadata\[(?:'((?:\\.|[^'\\])*)'|"((?:\\.|[^"\\])*)")\]|[A-Za-z_][A-Za-z0-9_.]*""")
_OP = re.compile(r">=|<=|:|~|>|<")
_VALUE = re.compile(r"""'((?:\\.|[^'\\])*)'|"((?:\\.|[^"\\])*)"|([^\s'"]+)""")


@dataclass
class Clause:
    field: str
    metadata_key: Optional[str]
    op: str
    value: Optional[str]  # None for the bare word null
    quoted: bool
    negated: bool


def _unescape(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s)


def _bad(detail: str) -> InvalidRequest:
    return InvalidRequest(
        f"We were unable to parse your search query: {detail}. Try using the format "
        "`metadata[\"key\"]:\"value\"` to query for metadata or `key:\"value\"` to query "
        "for other fields.", param="query")


def parse(query: str):
    """(clauses, "AND"|"OR")."""
    clauses: List[Clause] = []
    connectors = set()
    pos, n = 0, len(query)
    expect_clause = True
    while True:
        m = _WS.match(query, pos)
        if m:
            pos = m.end()
        if pos >= n:
            break
        if not expect_clause or clauses:
            m = _CONNECTOR.match(query, pos)
            if m and clauses:
                connectors.add(m.group(1).upper())
                pos = m.end()
                expect_clause = True
                continue
        negated = query.startswith("-", pos)
        if negated:
            pos += 1
        m = _FIELD.match(query, pos)
        if not m:
            raise _bad(f"expected a field at position {pos}")
        if m.group(0).startswith("metadata["):
            field, key = "metadata", _unescape(m.group(1) if m.group(1) is not None else m.group(2))
        else:
            field, key = m.group(0), None
        pos = m.end()
        m = _OP.match(query, pos)
        if not m:
            raise _bad(f"expected an operator after '{field}'")
        op = m.group(0)
        pos = m.end()
        m = _VALUE.match(query, pos)
        if not m:
            raise _bad(f"expected a value after '{field}{op}'")
        pos = m.end()
        if m.group(3) is not None:
            raw, quoted = m.group(3), False
            value = None if raw == "null" else raw
        else:
            raw = m.group(1) if m.group(1) is not None else m.group(2)
            value, quoted = _unescape(raw), True
        clauses.append(Clause(field, key, op, value, quoted, negated))
        expect_clause = False
    if not clauses:
        raise InvalidRequest("Missing required param: query.", code="parameter_missing",
                             param="query")
    if len(connectors) > 1:
        raise _bad("AND and OR cannot be combined in one query")
    if len(clauses) > MAX_CLAUSES:
        raise _bad(f"a query can have at most {MAX_CLAUSES} clauses")
    return clauses, (connectors.pop() if connectors else "AND")


def matcher(query: str, fields: Dict[str, str]) -> Callable[[dict], bool]:
    """A predicate over objects for `query`, given the resource's searchable fields."""
    clauses, mode = parse(query)
    tests = [_clause_test(c, fields) for c in clauses]
    if mode == "OR":
        return lambda obj: any(t(obj) for t in tests)
    return lambda obj: all(t(obj) for t in tests)


def _clause_test(c: Clause, fields: Dict[str, str]) -> Callable[[dict], bool]:
    if c.field == "metadata":
        if "metadata" not in fields:
            raise _bad("metadata is not a searchable field for this resource")
        kind = STRING
        get = lambda obj: (obj.get("metadata") or {}).get(c.metadata_key)
    else:
        if c.field not in fields:
            raise _bad(f"'{c.field}' is not a supported search field; supported fields are "
                       + ", ".join(sorted(fields)))
        kind = fields[c.field]
        path = c.field.split(".")

        def get(obj):
            for part in path:
                obj = obj.get(part) if isinstance(obj, dict) else None
            return obj

    if c.op in (">", "<", ">=", "<=") and kind != NUMBER:
        raise _bad(f"'{c.field}' does not support the {c.op} operator")
    if c.op == "~":
        if kind not in (STRING,):
            raise _bad(f"'{c.field}' does not support substring (~) matching")
        if c.value is None or len(c.value) < 3:
            raise _bad("substring (~) matching needs at least 3 characters")

    def test(obj) -> bool:
        actual = get(obj)
        if c.value is None:
            result = actual is None
        elif kind == NUMBER:
            try:
                want = float(c.value)
            except ValueError:
                raise _bad(f"'{c.field}' expects a number")
            if actual is None:
                result = False
            else:
                result = {":": actual == want, ">": actual > want, "<": actual < want,
                          ">=": actual >= want, "<=": actual <= want}[c.op]
        elif kind == BOOLEAN:
            result = actual is (c.value.lower() == "true")
        elif actual is None:
            result = False
        elif c.op == "~":
            result = c.value.lower() in str(actual).lower()
        elif kind == TOKEN:
            result = str(actual) == c.value
        else:
            result = str(actual).lower() == c.value.lower()
        return not result if c.negated else result

    return test
