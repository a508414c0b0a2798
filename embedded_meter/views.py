"""
The OpenMeter-compatible HTTP API: POST /api/v1/events, GET /api/v1/meters,
GET /api/v1/meters/{slug} and GET /api/v1/meters/{slug}/query. Thin: parsing and
errors here, logic in services.py and selectors.py. Token-authenticated (Bearer
EMBEDDED_METER_INGEST_TOKEN), hence CSRF-exempt.
"""

import hmac
import re
from datetime import UTC, datetime
from decimal import Decimal

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from billing.models import WindowSize

from . import definitions, selectors, services
from .validation import parse_rfc3339

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
TITLES = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed", 413: "Content Too Large"}


def problem(request, status: int, detail: str, **extensions) -> JsonResponse:
    """An RFC 7807 problem, shaped like OpenMeter's."""
    body = {
        "type": "about:blank",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "instance": request.path,
        **extensions,
    }
    return JsonResponse(body, status=status, content_type="application/problem+json")


def _unauthorized(request) -> JsonResponse | None:
    token = getattr(settings, "EMBEDDED_METER_INGEST_TOKEN", "")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # No token configured means nobody gets in, never everybody.
    if token and scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return None
    response = problem(request, 401, "Send the embedded meter's token as 'Authorization: Bearer <token>'.")
    response["WWW-Authenticate"] = 'Bearer realm="embedded-meter"'
    return response


def _method_not_allowed(request, allowed: str) -> JsonResponse:
    response = problem(request, 405, f"Use {allowed}.")
    response["Allow"] = allowed
    return response


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def json_number(value: Decimal):
    # MeterQueryRow.value is a JSON number (a double in OpenMeter): integers stay exact.
    return int(value) if value == value.to_integral_value() else float(value)


@csrf_exempt
def events(request):
    if request.method != "POST":
        return _method_not_allowed(request, "POST")
    if (denied := _unauthorized(request)) is not None:
        return denied
    limit = getattr(settings, "EMBEDDED_METER_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)
    # request.read(), not request.body: large batches are the point, so this endpoint
    # has its own limit instead of DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB).
    body = request.read(limit + 1)
    if len(body) > limit:
        return problem(request, 413, f"The body is larger than {limit} bytes; send smaller batches.")
    try:
        raw_events, batch = services.parse_body(body, request.META.get("CONTENT_TYPE", ""))
        services.ingest_events(raw_events, batch=batch)
    except services.IngestError as exc:
        extensions = {"field": exc.field}
        if exc.index is not None:
            extensions["index"] = exc.index
        if exc.errors:
            extensions["errors"] = [e.as_json() for e in exc.errors[:100]]
        return problem(request, 400, exc.detail, **extensions)
    return HttpResponse(status=204)


def meters(request):
    if request.method != "GET":
        return _method_not_allowed(request, "GET")
    if (denied := _unauthorized(request)) is not None:
        return denied
    return JsonResponse([m.to_openmeter() for m in definitions.all_meters().values()], safe=False)


def meter_detail(request, slug):
    if request.method != "GET":
        return _method_not_allowed(request, "GET")
    if (denied := _unauthorized(request)) is not None:
        return denied
    meter = definitions.get_meter(slug)
    if meter is None:
        return problem(request, 404, f"No meter {slug!r}.")
    return JsonResponse(meter.to_openmeter())


class _BadQuery(Exception):
    pass


def _query_time(params, name) -> datetime | None:
    value = params.get(name)
    if value is None:
        return None
    # An unencoded "+00:00" in a query string arrives as " 00:00".
    value = re.sub(r" (\d{2}:\d{2})$", r"+\1", value)
    try:
        return parse_rfc3339(value)
    except ValueError as exc:
        raise _BadQuery(f"{name}: {exc}, got {value!r}") from None


def _parse_query(params, meter) -> dict:
    for name in params:
        if name in ("filterCustomerId", "advancedMeterGroupByFilters") or name.startswith("filterGroupBy"):
            # Ignoring a filter would return someone else's usage: refuse instead.
            raise _BadQuery(f"{name}: not supported by the embedded meter")
    window_size = params.get("windowSize") or None
    if window_size is not None:
        if window_size not in WindowSize.values:
            raise _BadQuery(f"windowSize: must be one of {', '.join(WindowSize.values)}, got {window_size!r}")
        if selectors.finer_than(window_size, meter.window_size):
            raise _BadQuery(f"windowSize: meter {meter.slug!r} can be queried by {meter.window_size} or larger windows")
    if params.get("windowTimeZone", "UTC") not in ("UTC", "Etc/UTC"):
        raise _BadQuery("windowTimeZone: only UTC is supported by the embedded meter")
    subjects = params.getlist("subject")
    group_by = params.getlist("groupBy")
    unknown = [key for key in group_by if key != "subject" and key not in (meter.group_by or {})]
    if unknown:
        raise _BadQuery(f"groupBy: {unknown[0]!r} is neither 'subject' nor a group-by key of meter {meter.slug!r}")
    start, end = _query_time(params, "from"), _query_time(params, "to")
    if window_size:
        for name, moment in (("from", start), ("to", end)):
            if moment and not selectors.is_aligned(moment, window_size):
                raise _BadQuery(f"{name}: must be aligned to {window_size} windows, got {rfc3339(moment)}")
    if start and end and end < start:
        raise _BadQuery("to: must not be before from")
    return {
        "start": start,
        "end": end,
        "window_size": window_size,
        "subjects": subjects,
        # Filtering by subject groups by subject too, as OpenMeter does.
        "group_by_subject": "subject" in group_by or bool(subjects),
        "group_by": [key for key in dict.fromkeys(group_by) if key != "subject"],
    }


def meter_query(request, slug):
    if request.method != "GET":
        return _method_not_allowed(request, "GET")
    if (denied := _unauthorized(request)) is not None:
        return denied
    meter = definitions.get_meter(slug)
    if meter is None:
        return problem(request, 404, f"No meter {slug!r}.")
    try:
        q = _parse_query(request.GET, meter)
    except _BadQuery as exc:
        return problem(request, 400, str(exc))

    window = q["window_size"]
    end = q["end"] or timezone.now()
    if window and not selectors.is_aligned(end, window):
        end = selectors.floor_window(end, window) + selectors.WINDOW_DELTA[window]
    start = q["start"]
    if start is None:
        # "From the beginning of time": the first matching event's window.
        first = selectors.first_event_time(meter, q["subjects"])
        if first is None:
            return JsonResponse({"to": rfc3339(end), "windowSize": window, "data": []} if window else {"to": rfc3339(end), "data": []})
        start = selectors.floor_window(first, window or meter.window_size)
    rows = selectors.query(
        meter,
        start=start,
        end=end,
        window_size=window,
        subjects=q["subjects"],
        group_by_subject=q["group_by_subject"],
        group_by=q["group_by"],
    )
    body = {"from": rfc3339(start), "to": rfc3339(end)}
    if window:
        body["windowSize"] = window
    body["data"] = [
        {
            "value": json_number(row.value),
            "windowStart": rfc3339(row.window_start),
            "windowEnd": rfc3339(row.window_end),
            "subject": row.subject,
            "groupBy": row.group_by,
        }
        for row in rows
    ]
    return JsonResponse(body)
