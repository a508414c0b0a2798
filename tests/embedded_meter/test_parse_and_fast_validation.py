"""
Ingest's two shortcuts change no verdict (embedded_meter/services.py, validation.py):
orjson reads a body only where json.loads would read the same value (else json decides,
with its own message), and validation's fast path only accepts what validate_event
accepts, returning the same ValidEvent. Checked here against the definitions themselves.
"""

import copy
import itertools
import json
from datetime import UTC, datetime

import pytest

from embedded_meter import services, validation
from embedded_meter.models import MeterDefinition
from embedded_meter.services import IngestError

from .conftest import cloudevent

BATCH = "application/cloudevents-batch+json"


def json_verdict(body: bytes):
    """What parse_body answered before orjson: json.loads's value, or its message."""
    try:
        return ("ok", json.loads(body, parse_constant=services._reject_constant, parse_float=services._finite_float))
    except (ValueError, RecursionError) as exc:
        return ("error", f"body: is not valid JSON ({exc})")  # IngestError.detail


def parse_verdict(body: bytes):
    """What parse_body's reading of the JSON answers now."""
    try:
        return ("ok", services._loads(body))
    except IngestError as exc:
        return ("error", exc.detail)


BODIES = [
    b'[{"a": 1}]',
    b'{"a": 123456789012345678901234567890}',  # beyond 64 bits: orjson would read a float
    b'{"a": -9223372036854775809, "b": 18446744073709551615, "c": 9223372036854775807}',
    b'{"a": 1e400}',  # orjson refuses an infinity, json would read one: refused
    b'[-1e400]',
    b'{"a": NaN}',
    b'{"a": Infinity}',
    b'"\\ud800"',  # a lone surrogate escape: json reads it, orjson refuses
    b'\xef\xbb\xbf[1]',  # a byte order mark
    '[1]'.encode("utf-16"),  # json detects UTF-16
    b'{"a": "\xff"}',  # not UTF-8
    b'{"a":1,"a":2}',
    b'[0.1, 1e-7, 5e-324, 1.7976931348623157e308, -0.0, -0, 1E2]',
    b'["a\nb"]',
    b'{"a":1,}',
    b'[01]',
    b'',
    b' \n[1]\n ',
    b'[1]x',
    b'[' * 5000 + b']' * 5000,  # deeper than either parser goes
    b'[' * 1010 + b']' * 1010,  # orjson reads 1,024 levels, json fewer
    b'[{"data": ' * 300 + b'1' + b'}]' * 300,  # deeper than orjson writes (255)
    b'[' * 250 + b']' * 250,
    b'{"id": "1234567890123456789", "x": 1}',  # 19 digits in a string: json reads it, the same
]


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_parse_body_reads_what_json_reads_and_refuses_with_its_message(body):
    expected, got = json_verdict(body), parse_verdict(body)
    assert got[0] == expected[0]
    if expected[0] == "ok":
        assert repr(got[1]) == repr(expected[1])  # repr: the types too (int vs float)
    else:
        assert got[1] == expected[1]


def test_a_big_integer_is_stored_exactly(api, db):
    big = 123456789012345678901234567890
    assert api.post(cloudevent(id="big", data={"billed_seconds": big})).status_code == 204
    from embedded_meter.models import Event

    assert Event.objects.get(event_id="big").data == {"billed_seconds": big}


# --- validation: the fast path against the definition ------------------------------

METERS = [
    MeterDefinition(slug="m1", event_type="epsilon.execution", aggregation="SUM", value_property="$.billed_seconds"),
    MeterDefinition(slug="mx", event_type="epsilon.execution", aggregation="MAX", value_property="$.usage.peak"),
    MeterDefinition(slug="u", event_type="login", aggregation="UNIQUE_COUNT", value_property="$['user']"),
    MeterDefinition(slug="c", event_type="call", aggregation="COUNT", value_property=""),
    MeterDefinition(slug="bad", event_type="broken", aggregation="SUM", value_property="$[0]"),
]
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)

BASES = [
    cloudevent(id="x", data={"billed_seconds": 5, "usage": {"peak": 2.5}}),
    cloudevent(id="y", type="login", data={"user": "u1"}, datacontenttype="application/json"),
    cloudevent(id="z", type="call", data=None, time=...),
    cloudevent(id="w", type="other", data={"anything": [1]}, dataschema="https://example.com/s.json"),
]
VALUES = [
    ..., None, "", "x", "a" * 255, "a" * 256, 0, 1, -3, 2**70, 1.5, float("nan"), float("inf"), True, False,
    "12.5", "1e3", " 12", "12 ", "0x10", "1" * 101, "١٢", [], {}, {"peak": 3}, [1], "1.0",
]
FIELD_VALUES = {
    "specversion": ["1.0", "0.3", 1.0, ...],
    "id": VALUES,
    "source": ["tests", "not a uri", "https://a.example/x?y#z", "a#b#c", "%zz", "%41", "", ...],
    "subject": VALUES,
    "type": ["epsilon.execution", "login", "call", "other", "broken", 7, ""],
    "time": [
        ..., None, "2026-11-01T10:15:00Z", "2026-11-01T10:15:00z", "2026-11-01t10:15:00Z",
        "2026-11-01T10:15:00.123456+02:00", "2026-11-01T10:15:00.1234567+02:00", "2026-11-01T10:15:00.+02:00",
        "2026-11-01T10:15:00-00:00", "2026-11-01T10:15:00+24:00", "2026-11-01T10:15:60Z", "2026-02-30T10:15:00Z",
        "2026-11-01T10:15:00", "2026-11-01 10:15:00Z", "20261101T101500Z", "٢٠٢٦-11-01T10:15:00Z",
        "2026-11-01T10:15:00Z\n", 1700000000, "",
    ],
    "datacontenttype": [..., None, "application/json", "Application/JSON; charset=utf-8", "text/plain", 5],
    "dataschema": [..., None, "https://example.com/s.json", "relative/path", "", 3],
    "data_base64": [..., None, "AAAA", ""],
    "data": [
        ..., None, {}, [], "x",
        *({"billed_seconds": v, "usage": {"peak": v}, "user": v} for v in VALUES if v is not ...),
        {"billed_seconds": 1, "usage": 5}, {"billed_seconds": 1, "usage": {"peak": True}}, {"billed_seconds": 1},
    ],
}


def mutations():
    for base in BASES:
        yield base
        for field, values in FIELD_VALUES.items():
            for value in values:
                event = copy.deepcopy(base)
                if value is ...:
                    event.pop(field, None)
                else:
                    event[field] = value
                yield event
    yield from (None, [], "event", 7)
    # Pairs of changes, a sample (every 7th).
    fields = list(FIELD_VALUES.items())
    for n, ((f1, v1s), (f2, v2s)) in enumerate(itertools.combinations(fields, 2)):
        for v1, v2 in itertools.islice(itertools.product(v1s, v2s), n % 7, None, 7):
            event = copy.deepcopy(BASES[0])
            for f, v in ((f1, v1), (f2, v2)):
                if v is ...:
                    event.pop(f, None)
                else:
                    event[f] = v
            yield event


def definition(raw, index, meters_by_type):
    try:
        return validation.validate_event(raw, index, meters_by_type, NOW)
    except ValueError as exc:  # the broken meter's path, for its type only
        return ("raised", str(exc))


def test_the_fast_path_accepts_only_what_validate_event_accepts_and_returns_the_same():
    meters_by_type = {}
    for meter in METERS:
        meters_by_type.setdefault(meter.event_type, []).append(meter)
    checks = {t: [c for c in map(validation._value_check, ms) if c is not None] for t, ms in meters_by_type.items()}
    fast_accepted = refused = 0
    for raw in mutations():
        expected = definition(raw, 0, meters_by_type)
        fast = validation._fast(raw, checks, NOW)
        if fast is not None:
            fast_accepted += 1
            assert isinstance(expected, validation.ValidEvent), (raw, expected)
            assert fast == expected and fast.time.utcoffset().total_seconds() == 0, raw
        if isinstance(expected, validation.EventError):
            refused += 1
    assert fast_accepted > 100 and refused > 100  # both sides were exercised


def test_validate_events_answers_as_validate_event_event_by_event():
    raws = [raw for raw in mutations() if not (isinstance(raw, dict) and raw.get("type") == "broken")]
    meters = [m for m in METERS if m.slug != "bad"]
    meters_by_type = {}
    for meter in meters:
        meters_by_type.setdefault(meter.event_type, []).append(meter)
    valid, errors = validation.validate_events(raws, meters, NOW, batch=True, start=10)
    expected = [validation.validate_event(raw, i, meters_by_type, NOW) for i, raw in enumerate(raws, 10)]
    assert valid == [e for e in expected if isinstance(e, validation.ValidEvent)]
    assert errors == [e for e in expected if isinstance(e, validation.EventError)]


def test_a_broken_meter_fails_only_events_of_its_type():
    ok = cloudevent(id="ok", data={"billed_seconds": 1, "usage": {"peak": 1}})
    assert validation.validate_events([ok], METERS, NOW, batch=True)[0][0].event_id == "ok"
    with pytest.raises(ValueError):
        validation.validate_events([cloudevent(type="broken", data={"x": 1})], METERS, NOW, batch=True)
