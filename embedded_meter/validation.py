"""
CloudEvents 1.0 (JSON format) validation for ingest, as OpenMeter's `Event` schema
states it (`source` a URI-reference, `dataschema` a URI, RFC 3986), plus the meter checks
OpenMeter would otherwise only report after the fact: an event whose type a meter counts
must carry that meter's value property, so usage can never be dropped silently.

`validate_event` is the definition: every check in order, the first failure named.
`validate_events` first tries each event on `_fast`, which only ever accepts, and only
the commonest shape (plain JSON types, an RFC 3339 time with at most microseconds, the
meters' values as JSON numbers or strings): each of its checks implies the same check of
`validate_event` passing, and it returns the same ValidEvent. Anything else, valid or
not, goes to `validate_event`, so verdicts and messages are the definition's
(tests/embedded_meter/test_parse_and_fast_validation.py compares the two on mutated events).
The fast path exists for ingest's rate target (bench/README.md, "Embedded meter").
"""

import functools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from . import jsonpath
from .models import NUMERIC_AGGREGATIONS, Aggregation, MeterDefinition

MAX_ATTRIBUTE_LENGTH = 255  # the Event columns' length
MAX_NUMERIC_STRING_LENGTH = 100

# A number, or a numeric string (OpenMeter accepts both for SUM/MAX). The exponent is
# bounded so every accepted value fits PostgreSQL's numeric. \A...\Z (not ^...$) means
# the same in Python, SQLite's REGEXP (Python) and PostgreSQL: no trailing newline.
NUMERIC_PATTERN = r"\A[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?\Z"
_NUMERIC = re.compile(NUMERIC_PATTERN)

# RFC 3986, as characters: unreserved, sub-delims, ":", "@", "/", "?", "[", "]" and
# percent-encodings, then at most one "#" fragment. A URI also starts with a scheme.
_URI_CHARS = r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?\[\]]|%[0-9A-Fa-f]{2})*"
URI_REFERENCE = re.compile(rf"{_URI_CHARS}(?:#{_URI_CHARS})?")
URI = re.compile(rf"[A-Za-z][A-Za-z0-9+.\-]*:{_URI_CHARS}(?:#{_URI_CHARS})?")

_RFC3339 = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt](?P<time>\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d+))?"
    r"(?P<offset>[Zz]|[+-]\d{2}:\d{2})"
)
# The shape parse_rfc3339 hands straight to fromisoformat: "T", at most 6 fraction digits, "Z" or an offset.
_RFC3339_COMMON = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})")


@functools.lru_cache(maxsize=4096)  # a batch's events mostly share a few sources
def _is_uri_reference(value: str) -> bool:
    return URI_REFERENCE.fullmatch(value) is not None


@dataclass(frozen=True)
class EventError:
    """What is wrong with one event: `index` is its place in a batch (None for a single event)."""

    index: int | None
    field: str
    message: str

    def describe(self) -> str:
        where = f"events[{self.index}]" if self.index is not None else "event"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"

    def as_json(self) -> dict:
        return {"index": self.index, "field": self.field, "message": self.message}


class ValidEvent(NamedTuple):
    """An accepted event, as stored (a named tuple: cheap to build a thousand times a request)."""

    event_id: str
    source: str
    type: str
    subject: str
    time: datetime
    data: dict | None


def parse_rfc3339(value: str) -> datetime:
    """An RFC 3339 date-time (offset required) as an aware UTC datetime, or ValueError."""
    match = _RFC3339.fullmatch(value) if isinstance(value, str) else None
    if not match:
        raise ValueError("must be an RFC 3339 date-time such as 2026-01-01T12:00:00Z")
    if (match["frac"] is None or len(match["frac"]) <= 6) and value[10] == "T" and match["offset"] != "z":
        # The common shape, which fromisoformat reads as it is (it takes "Z" since 3.11).
        try:
            return datetime.fromisoformat(value).astimezone(UTC)
        except ValueError:
            raise ValueError("is not a valid date-time") from None
    frac = (match["frac"] or "")[:6]  # the database keeps microseconds
    offset = "+00:00" if match["offset"] in "Zz" else match["offset"]
    text = f"{match['date']}T{match['time']}{'.' + frac.ljust(6, '0') if frac else ''}{offset}"
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        raise ValueError("is not a valid date-time") from None


def numeric_text(value) -> str | None:
    """The exact decimal text of a JSON number or numeric string, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, str) and len(value) <= MAX_NUMERIC_STRING_LENGTH and _NUMERIC.match(value):
        return value
    return None


def short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _data_field(keys: tuple[str, ...]) -> str:
    return "data." + ".".join(keys)


def _check_meter(meter: MeterDefinition, data: dict | None) -> tuple[str, str] | None:
    """(field, message) if `data` lacks what `meter` aggregates."""
    if meter.aggregation == Aggregation.COUNT:
        return None
    keys = meter.value_keys
    value = jsonpath.lookup(data, keys) if data is not None else jsonpath.MISSING
    what = f"meter {meter.slug!r} ({meter.aggregation} of {meter.value_property})"
    if meter.aggregation in NUMERIC_AGGREGATIONS:
        if value is jsonpath.MISSING:
            return _data_field(keys), f"value property {meter.value_property} is missing; {what} needs a number there"
        if numeric_text(value) is None:
            return _data_field(keys), f"value property {meter.value_property} must be a number or numeric string for {what}, got {short(value)}"
    elif meter.aggregation == Aggregation.UNIQUE_COUNT:
        if value is jsonpath.MISSING:
            return _data_field(keys), f"value property {meter.value_property} is missing; {what} needs a string there"
        if not isinstance(value, str):
            return _data_field(keys), f"value property {meter.value_property} must be a string for {what}, got {short(value)}"
    return None


def validate_event(
    raw, index: int | None, meters_by_type: Mapping[str, Sequence[MeterDefinition]], now: datetime
) -> ValidEvent | EventError:
    def error(field, message):
        return EventError(index, field, message)

    if not isinstance(raw, dict):
        return error("", "must be a JSON object (a CloudEvent)")
    if "specversion" not in raw:
        return error("specversion", "is required (CloudEvents 1.0)")
    if raw["specversion"] != "1.0":
        return error("specversion", f"must be \"1.0\", got {short(raw['specversion'])}")
    attributes = {}
    for name in ("id", "source", "type", "subject"):
        value = raw.get(name)
        if value is None:
            return error(name, "is required")
        if not isinstance(value, str) or not value:
            return error(name, f"must be a non-empty string, got {short(value)}")
        if len(value) > MAX_ATTRIBUTE_LENGTH:
            return error(name, f"must be at most {MAX_ATTRIBUTE_LENGTH} characters")
        attributes[name] = value
    if not _is_uri_reference(attributes["source"]):
        return error("source", f"must be a URI-reference (RFC 3986), got {short(attributes['source'])}")

    time = now
    if raw.get("time") is not None:
        try:
            time = parse_rfc3339(raw["time"])
        except ValueError as exc:
            return error("time", f"{exc}, got {short(raw['time'])}")

    content_type = raw.get("datacontenttype")
    if content_type is not None and (
        not isinstance(content_type, str) or content_type.split(";")[0].strip().lower() != "application/json"
    ):
        return error("datacontenttype", f"must be application/json, got {short(content_type)}")
    schema = raw.get("dataschema")
    if schema is not None and not (isinstance(schema, str) and URI.fullmatch(schema)):
        return error("dataschema", f"must be an absolute URI (RFC 3986) such as https://example.com/schema.json, got {short(schema)}")
    if raw.get("data_base64") is not None:
        return error("data_base64", "binary data is not supported; send data as a JSON object")
    data = raw.get("data")
    if data is not None and not isinstance(data, dict):
        return error("data", f"must be a JSON object, got {type(data).__name__} {short(data)}")

    for meter in meters_by_type.get(attributes["type"], ()):
        problem = _check_meter(meter, data)
        if problem:
            return error(*problem)

    return ValidEvent(
        event_id=attributes["id"],
        source=attributes["source"],
        type=attributes["type"],
        subject=attributes["subject"],
        time=time,
        data=data,
    )


@functools.lru_cache(maxsize=256)
def _is_json_content_type(value: str) -> bool:
    return value.split(";")[0].strip().lower() == "application/json"


def _value_check(meter: MeterDefinition):
    """(keys, accepts) for a meter's value on the fast path: accepts(value) implies
    _check_meter passes; None for COUNT (nothing to check)."""
    if meter.aggregation == Aggregation.COUNT:
        return None
    try:
        keys = meter.value_keys
    except ValueError:  # a path edited outside the admin: validate_event raises it for this type only
        return (), lambda value: False
    if meter.aggregation in NUMERIC_AGGREGATIONS:
        def accepts(value):
            kind = type(value)
            return kind is int or (kind is float and math.isfinite(value)) or (kind is str and numeric_text(value) is not None)
    elif meter.aggregation == Aggregation.UNIQUE_COUNT:
        def accepts(value):
            return type(value) is str
    else:
        def accepts(value):
            return False  # an unknown aggregation: validate_event decides
    return keys, accepts


def _fast(raw, value_checks: Mapping[str, list], now: datetime) -> ValidEvent | None:
    """The ValidEvent validate_event would return for `raw`, or None: ask validate_event."""
    if type(raw) is not dict or raw.get("specversion") != "1.0":
        return None
    get = raw.get
    event_id, source, event_type, subject = get("id"), get("source"), get("type"), get("subject")
    if not (
        type(event_id) is str and 0 < len(event_id) <= MAX_ATTRIBUTE_LENGTH
        and type(source) is str and 0 < len(source) <= MAX_ATTRIBUTE_LENGTH
        and type(event_type) is str and 0 < len(event_type) <= MAX_ATTRIBUTE_LENGTH
        and type(subject) is str and 0 < len(subject) <= MAX_ATTRIBUTE_LENGTH
        and _is_uri_reference(source)
    ):
        return None
    value = get("time")
    if value is None:
        time = now
    elif type(value) is str and _RFC3339_COMMON.fullmatch(value):
        try:
            time = datetime.fromisoformat(value)
        except ValueError:
            return None
        if time.tzinfo is not UTC:
            time = time.astimezone(UTC)
    else:
        return None
    content_type = get("datacontenttype")
    if content_type is not None and not (type(content_type) is str and _is_json_content_type(content_type)):
        return None
    schema = get("dataschema")
    if schema is not None and not (type(schema) is str and URI.fullmatch(schema)):
        return None
    if get("data_base64") is not None:
        return None
    data = get("data")
    if data is not None and type(data) is not dict:
        return None
    for keys, accepts in value_checks.get(event_type, ()):
        value = jsonpath.lookup(data, keys) if data is not None else jsonpath.MISSING
        if value is jsonpath.MISSING or not accepts(value):
            return None
    return ValidEvent(event_id, source, event_type, subject, time, data)


def validate_events(
    raws: Iterable, meters: Iterable[MeterDefinition], now: datetime, *, batch: bool, start: int = 0
) -> tuple[list[ValidEvent], list[EventError]]:
    """
    Every event validated; the caller stores none of them if there is any error.
    `start` is the index of raws[0] in its batch (for callers validating a batch in parts).
    """
    meters_by_type: dict[str, list[MeterDefinition]] = {}
    for meter in meters:
        meters_by_type.setdefault(meter.event_type, []).append(meter)
    value_checks = {
        event_type: [check for check in map(_value_check, type_meters) if check is not None]
        for event_type, type_meters in meters_by_type.items()
    }
    valid, errors = [], []
    for index, raw in enumerate(raws, start):
        result = _fast(raw, value_checks, now)
        if result is None:
            result = validate_event(raw, index if batch else None, meters_by_type, now)
            if isinstance(result, EventError):
                errors.append(result)
                continue
        valid.append(result)
    return valid, errors
