"""
Request parameters of the meter API, validated by Django forms against OpenMeter's
OpenAPI document: listMeters' query parameters (MeterListForm), and queryMeter's query
parameters and queryMeterPost's MeterQueryRequest body (MeterQueryForm, the same form
for both, so GET and POST accept and refuse exactly the same queries).

Invariants:
- Values arrive as the query string's strings or the body's JSON values; each field
  checks the JSON type too (a number is not a string), and a parameter the document
  gives once may not be repeated.
- Any invalid value refuses the whole request with a 400 problem naming the parameter
  (`field`, `detail` "<name>: <what is wrong>", `errors` listing all): never a partial
  answer. Filters the embedded meter cannot apply (customers, group-by values) are
  refused the same way, never ignored: ignoring one would return someone else's usage.
- Parameters the document does not define are ignored, as the document allows.
"""

import json
import re
from datetime import UTC

from django import forms
from django.core.exceptions import ValidationError
from django.http import QueryDict

from . import selectors, windows
from .responses import Problem
from .validation import parse_rfc3339, short

MAX_QUERY_BODY_BYTES = 1024 * 1024  # a MeterQueryRequest has at most 100 subjects and keys


class _Repeated(list):
    """A query-string parameter given more than once."""


class _Param(forms.Field):
    """Optional; None when absent. Subclasses parse a present value in `parse`."""

    def __init__(self, **kwargs):
        super().__init__(required=False, **kwargs)

    def to_python(self, value):
        if value is None:
            return None
        if isinstance(value, _Repeated):
            raise ValidationError("must be given once")
        return self.parse(value)

    def parse(self, value):
        return value

    def validate(self, value):
        pass  # every parameter is optional


class Text(_Param):
    def __init__(self, *, min_length=None, max_length=None, **kwargs):
        super().__init__(**kwargs)
        self.min_length, self.max_length = min_length, max_length

    def parse(self, value):
        if not isinstance(value, str):
            raise ValidationError(f"must be a string, got {short(value)}")
        if self.min_length is not None and len(value) < self.min_length:
            raise ValidationError(f"must be at least {self.min_length} character{'s' if self.min_length > 1 else ''} long")
        if self.max_length is not None and len(value) > self.max_length:
            raise ValidationError(f"must be at most {self.max_length} characters long, got {len(value)}")
        return value


class Choice(Text):
    def __init__(self, values, **kwargs):
        super().__init__(**kwargs)
        self.values = tuple(values)

    def parse(self, value):
        value = super().parse(value)
        if value not in self.values:
            raise ValidationError(f"must be one of {', '.join(self.values)}, got {short(value)}")
        return value


class DateTime(Text):
    """format: date-time (RFC 3339, offset required), as an aware UTC datetime."""

    def parse(self, value):
        value = super().parse(value)
        try:
            return parse_rfc3339(value)
        except ValueError as exc:
            raise ValidationError(f"{exc}, got {short(value)}") from None


class TimeZone(Text):
    """An IANA time zone name (windowTimeZone), as a tzinfo."""

    def parse(self, value):
        value = super().parse(value)
        try:
            return windows.get_zone(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None


class Integer(_Param):
    def __init__(self, *, minimum, maximum=None, **kwargs):
        super().__init__(**kwargs)
        self.minimum, self.maximum = minimum, maximum

    def parse(self, value):
        if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]{1,10}", value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(f"must be an integer, got {short(value)}")
        if value < self.minimum or (self.maximum is not None and value > self.maximum):
            upper = f" and at most {self.maximum}" if self.maximum is not None else ""
            raise ValidationError(f"must be at least {self.minimum}{upper}, got {value}")
        return value


class Boolean(_Param):
    def parse(self, value):
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if isinstance(value, bool):
            return value
        raise ValidationError(f"must be true or false, got {short(value)}")


class StringList(_Param):
    """type: array of strings; a query string gives each item as a repeated parameter."""

    def __init__(self, *, max_items=None, **kwargs):
        super().__init__(**kwargs)
        self.max_items = max_items

    def to_python(self, value):
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ValidationError(f"must be an array of strings, got {short(value)}")
        if self.max_items is not None and len(value) > self.max_items:
            raise ValidationError(f"must have at most {self.max_items} items, got {len(value)}")
        return list(value)


class Unsupported(_Param):
    """A filter the embedded meter cannot apply: refused unless empty."""

    def __init__(self, reason, **kwargs):
        super().__init__(**kwargs)
        self.reason = reason

    def to_python(self, value):
        if value is None or value == [] or value == {}:
            return None
        raise ValidationError(f"not supported by the embedded meter; {self.reason}")


class ApiForm(forms.Form):
    """A form over one request's parameters; `check()` raises the 400 Problem."""

    #: Parameters that are arrays (repeated in a query string).
    multiple: tuple[str, ...] = ()

    def __init__(self, data):
        super().__init__(data)
        # Fields by their OpenAPI names, which are not always Python identifiers
        # (`from`), so not declared as class attributes; in the order errors are reported.
        self.fields = self.parameters()

    def parameters(self) -> dict[str, forms.Field]:
        raise NotImplementedError

    @classmethod
    def query_data(cls, params: QueryDict) -> dict:
        """The query string as the JSON-like dict the fields read."""
        data = {}
        for name in params:
            values = params.getlist(name)
            if name in cls.multiple:
                data[name] = values
            else:
                data[name] = values[0] if len(values) == 1 else _Repeated(values)
        return data

    def check(self) -> None:
        if self.is_valid():
            return
        errors = [
            {"field": name, "message": message}
            for name, messages in self.errors.items()
            for message in messages
        ]
        first = errors[0]
        raise Problem(400, f"{first['field']}: {first['message']}", field=first["field"], errors=errors)


class MeterListForm(ApiForm):
    """listMeters: Pagination.page, Pagination.pageSize, MeterOrderByOrdering.*, includeDeleted."""

    def parameters(self):
        return {
            "page": Integer(minimum=1),
            "pageSize": Integer(minimum=1, maximum=1000),
            "order": Choice(("ASC", "DESC")),
            "orderBy": Choice(("key", "name", "aggregation", "createdAt", "updatedAt")),
            # Meters here are never deleted (soft or otherwise): accepted, nothing to add.
            "includeDeleted": Boolean(),
        }

    def listing(self) -> dict:
        self.check()
        data = self.cleaned_data
        return {
            "page": data["page"] or 1,
            "page_size": data["pageSize"] or 100,
            "order_by": data["orderBy"] or "key",
            "descending": data["order"] == "DESC",
        }


class MeterQueryForm(ApiForm):
    """queryMeter's parameters, or queryMeterPost's MeterQueryRequest (body=True)."""

    multiple = ("subject", "groupBy", "filterCustomerId")

    def __init__(self, data, *, meter, body=False):
        self.meter = meter
        # MeterQueryRequest's arrays have maxItems 100; the query string's have none.
        self.max_items = 100 if body else None
        super().__init__(data)

    def parameters(self):
        no_filters = "group by the key (groupBy) and pick the values from the result instead"
        max_items = self.max_items
        return {
            "filterCustomerId": Unsupported("meters here know subjects, not customers: filter by subject instead"),
            "filterGroupBy": Unsupported(no_filters),
            "advancedMeterGroupByFilters": Unsupported(no_filters),
            "clientId": Text(min_length=1, max_length=36),
            "windowSize": Choice(windows.QUERY_WINDOW_SIZES),
            "windowTimeZone": TimeZone(),
            "subject": StringList(max_items=max_items),
            "groupBy": StringList(max_items=max_items),
            "from": DateTime(),
            "to": DateTime(),
        }

    @classmethod
    def from_request(cls, request, meter) -> "MeterQueryForm":
        if request.method == "POST":
            return cls(read_json_object(request, "MeterQueryRequest"), meter=meter, body=True)
        return cls(cls.query_data(request.GET), meter=meter)

    @classmethod
    def query_data(cls, params: QueryDict) -> dict:
        data = super().query_data(params)
        group_filters = {}
        for name in list(data):
            # filterGroupBy is a deepObject: filterGroupBy[model]=gpt-4
            if match := re.fullmatch(r"filterGroupBy\[(.*)\]", name):
                group_filters[match[1]] = data.pop(name)
        if group_filters:
            data["filterGroupBy"] = group_filters
        for name in ("from", "to"):
            if isinstance(data.get(name), str):
                # An unencoded "+00:00" in a query string arrives as " 00:00".
                data[name] = re.sub(r" (\d{2}:\d{2})$", r"+\1", data[name])
        return data

    def clean(self):
        data = self.cleaned_data
        meter = self.meter
        window = data.get("windowSize")
        if window and selectors.finer_than(window, meter.window_size):
            self.add_error("windowSize", f"meter {meter.slug!r} can be queried by {meter.window_size} or larger windows")
        unknown = [key for key in data.get("groupBy") or () if key != "subject" and key not in (meter.group_by or {})]
        if unknown:
            self.add_error("groupBy", f"{unknown[0]!r} is neither 'subject' nor a group-by key of meter {meter.slug!r}")
        zone = data.get("windowTimeZone") or UTC
        if window and "windowTimeZone" not in self.errors:
            for name in ("from", "to"):
                moment = data.get(name)
                if moment and not windows.is_aligned(moment, window, zone):
                    where = "" if windows.is_utc(zone) else f" of {zone}"
                    self.add_error(name, f"must be aligned to {window} windows{where}, got {moment.isoformat().replace('+00:00', 'Z')}")
        start, end = data.get("from"), data.get("to")
        if start and end and end < start:
            self.add_error("to", "must not be before from")
        return data

    def query(self) -> selectors.MeterQuery:
        self.check()
        data = self.cleaned_data
        subjects, group_by = data["subject"], data["groupBy"]
        return selectors.MeterQuery(
            start=data["from"],
            end=data["to"],
            window_size=data["windowSize"],
            zone=data["windowTimeZone"] or UTC,
            subjects=tuple(subjects),
            # Filtering by subject groups by subject too, as OpenMeter does.
            group_by_subject="subject" in group_by or bool(subjects),
            group_by=tuple(key for key in dict.fromkeys(group_by) if key != "subject"),
        )


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def read_json_object(request, schema: str) -> dict:
    """The request body: a JSON object (`schema` names it in problems), or a 400/413 Problem."""
    if request.content_type.lower() != "application/json":
        raise Problem(400, f"Content-Type: must be application/json, got {request.META.get('CONTENT_TYPE') or 'none'!r}", field="Content-Type")
    body = request.read(MAX_QUERY_BODY_BYTES + 1)
    if len(body) > MAX_QUERY_BODY_BYTES:
        raise Problem(413, f"The body is larger than {MAX_QUERY_BODY_BYTES} bytes.")
    try:
        payload = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise Problem(400, f"body: is not valid JSON ({exc})", field="body") from None
    if not isinstance(payload, dict):
        raise Problem(400, f"body: must be a JSON object (a {schema}), got {short(payload)}", field="body")
    return payload
