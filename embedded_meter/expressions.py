"""
Database expressions that read a meter's value out of Event.data at query time,
exactly, on SQLite and PostgreSQL alike.

Values travel as decimal text, never as floats: PostgreSQL casts the text to
numeric (exact) and sums there; SQLite has no decimal type (its SUM would turn
0.1 + 0.2 into a float), so on SQLite the sum and max run in small Python aggregates
over Decimal, registered on every new connection (see apps.py), the same way Django
registers its own SQLite functions. SQLite's `->` operator returns a number's JSON
text as it was stored, so no digit is lost on the way.
"""

import decimal
import json

from django.db import NotSupportedError
from django.db.models import Aggregate, F, Func, TextField

from .validation import NUMERIC_PATTERN

# Enough digits for any value ingest accepts (exponent up to 999): sums never round,
# and if one ever had to, Inexact raises instead of returning a wrong total.
EXACT = decimal.Context(prec=2200, Emax=999999, Emin=-999999, traps=[decimal.Inexact, decimal.InvalidOperation])


def sqlite_path(keys: tuple[str, ...]) -> str:
    # Always quoted member names: a key like "0" stays a key, not an array index.
    return "$" + "".join("." + json.dumps(key) for key in keys)


class _JsonValue(Func):
    """Base: a scalar read from the `data` column at a path of keys."""

    output_field = TextField()

    def __init__(self, keys: tuple[str, ...], data="data"):
        super().__init__(F(data))
        self.keys = tuple(keys)

    def as_sql(self, compiler, connection, **extra_context):
        raise NotSupportedError("the embedded meter supports SQLite and PostgreSQL")

    def _data(self, compiler):
        return compiler.compile(self.source_expressions[0])


class NumericValue(_JsonValue):
    """Exact decimal text of the number or numeric string at the path; NULL otherwise."""

    def as_sqlite(self, compiler, connection, **extra_context):
        data, p = self._data(compiler)
        path = sqlite_path(self.keys)
        # `->` (SQLite 3.38+) keeps the stored digits; JSON_EXTRACT would give a float.
        number = f"({data} -> %s)" if connection.Database.sqlite_version_info >= (3, 38) else f"JSON_EXTRACT({data}, %s)"
        sql = (
            f"CASE JSON_TYPE({data}, %s) WHEN 'integer' THEN {number} WHEN 'real' THEN {number} "
            f"WHEN 'text' THEN CASE WHEN JSON_EXTRACT({data}, %s) REGEXP %s "
            f"THEN JSON_EXTRACT({data}, %s) END END"
        )
        params = (*p, path, *p, path, *p, path, *p, path, NUMERIC_PATTERN, *p, path)
        return sql, params

    def as_postgresql(self, compiler, connection, **extra_context):
        data, p = self._data(compiler)
        keys = list(self.keys)
        sql = (
            f"CASE jsonb_typeof({data} #> %s::text[]) WHEN 'number' THEN ({data} #>> %s::text[]) "
            f"WHEN 'string' THEN CASE WHEN ({data} #>> %s::text[]) ~ %s "
            f"THEN ({data} #>> %s::text[]) END END"
        )
        params = (*p, keys, *p, keys, *p, keys, NUMERIC_PATTERN, *p, keys)
        return sql, params


class StringValue(_JsonValue):
    """The string at the path (what UNIQUE_COUNT counts); NULL for anything else."""

    def as_sqlite(self, compiler, connection, **extra_context):
        data, p = self._data(compiler)
        path = sqlite_path(self.keys)
        return (
            f"CASE WHEN JSON_TYPE({data}, %s) = 'text' THEN JSON_EXTRACT({data}, %s) END",
            (*p, path, *p, path),
        )

    def as_postgresql(self, compiler, connection, **extra_context):
        data, p = self._data(compiler)
        keys = list(self.keys)
        return (
            f"CASE WHEN jsonb_typeof({data} #> %s::text[]) = 'string' THEN ({data} #>> %s::text[]) END",
            (*p, keys, *p, keys),
        )


class GroupValue(_JsonValue):
    """Any scalar at the path as text (strings unquoted), for group-by; NULL if missing or null."""

    def as_sqlite(self, compiler, connection, **extra_context):
        data, p = self._data(compiler)
        path = sqlite_path(self.keys)
        other = f"({data} -> %s)" if connection.Database.sqlite_version_info >= (3, 38) else f"JSON_EXTRACT({data}, %s)"
        sql = (
            f"CASE JSON_TYPE({data}, %s) WHEN 'text' THEN JSON_EXTRACT({data}, %s) "
            f"WHEN 'null' THEN NULL ELSE {other} END"
        )
        return sql, (*p, path, *p, path, *p, path)

    def as_postgresql(self, compiler, connection, **extra_context):
        data, p = self._data(compiler)
        return f"({data} #>> %s::text[])", (*p, list(self.keys))


class _ExactAggregate(Aggregate):
    """An aggregate of decimal text that returns decimal text (NULL over no values)."""

    output_field = TextField()
    sqlite_function: str

    def as_sql(self, compiler, connection, **extra_context):
        raise NotSupportedError("the embedded meter supports SQLite and PostgreSQL")

    def as_postgresql(self, compiler, connection, **extra_context):
        template = f"CAST({self.function}(CAST(%(expressions)s AS numeric)) AS text)"
        return super().as_sql(compiler, connection, template=template, **extra_context)

    def as_sqlite(self, compiler, connection, **extra_context):
        return super().as_sql(compiler, connection, function=self.sqlite_function, **extra_context)


class DecimalSum(_ExactAggregate):
    function = "SUM"
    name = "DecimalSum"
    sqlite_function = "EPSILON_DECIMAL_SUM"


class DecimalMax(_ExactAggregate):
    function = "MAX"
    name = "DecimalMax"
    sqlite_function = "EPSILON_DECIMAL_MAX"


# --- SQLite's side of DecimalSum/DecimalMax ---------------------------------------


class _SqliteDecimalSum:
    def __init__(self):
        self.total = None

    def step(self, value):
        if value is not None:
            value = decimal.Decimal(value if isinstance(value, (str, int)) else repr(value))
            self.total = value if self.total is None else EXACT.add(self.total, value)

    def finalize(self):
        return None if self.total is None else str(self.total)


class _SqliteDecimalMax(_SqliteDecimalSum):
    def step(self, value):
        if value is not None:
            value = decimal.Decimal(value if isinstance(value, (str, int)) else repr(value))
            if self.total is None or value > self.total:
                self.total = value


def register_sqlite_functions(sqlite_connection):
    sqlite_connection.create_aggregate(DecimalSum.sqlite_function, 1, _SqliteDecimalSum)
    sqlite_connection.create_aggregate(DecimalMax.sqlite_function, 1, _SqliteDecimalMax)
