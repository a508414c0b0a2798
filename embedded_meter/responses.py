"""
What the meter API answers, in OpenMeter's shapes: every error is an RFC 7807 problem
(application/problem+json, `instance` an absolute URI, as UnexpectedProblemResponse
says), never Django's HTML pages; a MeterQueryResult is JSON, or CSV when the client
prefers text/csv; 204 carries no body and no Content-Type.
"""

import csv
import io
from datetime import datetime
from decimal import Decimal

from django.http import HttpResponse, JsonResponse

from epsilon.timewindows import format_rfc3339

from .models import MeterDefinition
from .selectors import QueryResult

TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    500: "Internal Server Error",
}
JSON, CSV = "application/json", "text/csv"


class Problem(Exception):
    """Raised anywhere under an api_endpoint view (decorators.py): answered as a problem."""

    def __init__(self, status: int, detail: str, *, headers: dict | None = None, **extensions):
        super().__init__(detail)
        self.status, self.detail, self.headers, self.extensions = status, detail, headers or {}, extensions


def problem(request, status: int, detail: str, *, headers: dict | None = None, **extensions) -> JsonResponse:
    """An RFC 7807 problem, shaped like OpenMeter's."""
    body = {
        "type": "about:blank",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        # UnexpectedProblemResponse.instance is `format: uri`: absolute, without the query.
        "instance": request.build_absolute_uri(request.path),
        **extensions,
    }
    response = JsonResponse(body, status=status, content_type="application/problem+json")
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def from_problem(request, exc: Problem) -> JsonResponse:
    return problem(request, exc.status, exc.detail, headers=exc.headers, **exc.extensions)


def no_content() -> HttpResponse:
    response = HttpResponse(status=204)
    del response["Content-Type"]  # nothing to describe (RFC 9110 section 8.3)
    return response


def rfc3339(moment: datetime) -> str:
    return format_rfc3339(moment)


def json_number(value: Decimal):
    # MeterQueryRow.value is a JSON number (a double in OpenMeter): integers stay exact.
    return int(value) if value == value.to_integral_value() else float(value)


def query_result(request, meter: MeterDefinition, result: QueryResult, group_by) -> HttpResponse:
    """The MeterQueryResult as the request's Accept header prefers: text/csv or JSON (the default)."""
    wants_csv = request.get_preferred_type([JSON, CSV]) == CSV
    response = _csv(meter, result, group_by) if wants_csv else _json(result)
    response["Vary"] = "Accept"
    return response


def _json(result: QueryResult) -> JsonResponse:
    body = {"from": rfc3339(result.start)} if result.start else {}
    body["to"] = rfc3339(result.end)
    if result.window_size:
        body["windowSize"] = result.window_size
    body["data"] = [
        {
            "value": json_number(row.value),
            "windowStart": rfc3339(row.window_start),
            "windowEnd": rfc3339(row.window_end),
            "subject": row.subject,
            "groupBy": row.group_by,
        }
        for row in result.rows
    ]
    return JsonResponse(body)


def _csv(meter: MeterDefinition, result: QueryResult, group_by) -> HttpResponse:
    """One line per MeterQueryRow, its properties in the schema's order (customerId has
    no value here, so no column); groupBy is one `groupBy.<key>` column per key asked for."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180
    writer.writerow(["value", "windowStart", "windowEnd", "subject", *(f"groupBy.{key}" for key in group_by)])
    for row in result.rows:
        writer.writerow(
            [
                json_number(row.value),
                rfc3339(row.window_start),
                rfc3339(row.window_end),
                row.subject if row.subject is not None else "",
                *("" if row.group_by.get(key) is None else row.group_by[key] for key in group_by),
            ]
        )
    response = HttpResponse(out.getvalue(), content_type=f"{CSV}; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{meter.slug}.csv"'
    return response
