"""
Recorded OpenMeter response shapes, from OpenMeter's OpenAPI document
(shared/openmeter/openapi.yaml: MeterQueryResult, MeterQueryRow, UnexpectedProblemResponse),
and a fake OpenMeter that answers meter queries in that shape from per-hour usage.

Bodies are JSON text, not dicts: the client must read numbers from their text, so the
tests control exactly which digits arrive.
"""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx

# components.schemas.MeterQueryResult.example, verbatim.
SPEC_METER_QUERY_RESULT = """{
  "from": "2023-01-01T00:00:00Z",
  "to": "2023-01-02T00:00:00Z",
  "windowSize": "DAY",
  "data": [
    {
      "value": 12,
      "windowStart": "2023-01-01T00:00:00Z",
      "windowEnd": "2023-01-02T00:00:00Z",
      "subject": "customer-1",
      "groupBy": {"model": "gpt-4-turbo", "type": "prompt"}
    }
  ]
}"""

# components.schemas.UnexpectedProblemResponse property examples, verbatim.
SPEC_PROBLEM = {
    "type": "about:blank",
    "title": "Bad Request",
    "status": 400,
    "detail": "The request body must be a JSON object.",
    "instance": "urn:request:local/JMOlctsKV8-000001",
}


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def row(subject: str | None, start: datetime, end: datetime, value: str) -> str:
    """A MeterQueryRow grouped by subject only; `value` is the JSON number's text, as sent."""
    return (
        f'{{"value": {value}, "windowStart": "{rfc3339(start)}", "windowEnd": "{rfc3339(end)}", '
        f'"subject": {json.dumps(subject)}, "groupBy": {{}}}}'
    )


def query_result(start: datetime, end: datetime, rows: list[str], window_size: str | None = None) -> str:
    """A MeterQueryResult; windowSize is left out when the query had none, as OpenMeter does."""
    size = f'"windowSize": "{window_size}", ' if window_size else ""
    return f'{{"from": "{rfc3339(start)}", "to": "{rfc3339(end)}", {size}"data": [{", ".join(rows)}]}}'


def ok(body: str) -> httpx.Response:
    return httpx.Response(200, content=body.encode(), headers={"Content-Type": "application/json"})


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {**SPEC_PROBLEM, "title": title, "status": status, "detail": detail}
    return httpx.Response(
        status, json=body, headers={"Content-Type": "application/problem+json", **(headers or {})}
    )


WINDOW_SIZES = {"MINUTE": timedelta(minutes=1), "HOUR": timedelta(hours=1), "DAY": timedelta(days=1)}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class FakeOpenMeter:
    """
    Answers GET /api/v1/meters/{slug}/query like OpenMeter: windows that lie inside
    [from, to), grouped by subject, one row per subject and window that had usage.
    Usage is per hour: {subject: {hour_start: count}} (whole numbers, so the server's
    own sums are exact, as they would be in OpenMeter's float64 for counts).
    """

    def __init__(self, usage: dict[str, dict[datetime, int]]):
        self.usage = usage
        self.queries: list[httpx.QueryParams] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        self.queries.append(params)
        assert params.get_list("groupBy") == ["subject"]
        start, end = datetime.fromisoformat(params["from"]), datetime.fromisoformat(params["to"])
        size = WINDOW_SIZES.get(params.get("windowSize", ""))
        rows = []
        for subject in params.get_list("subject"):
            windows: dict[datetime, int] = {}
            for hour, count in self.usage.get(subject, {}).items():
                if start <= hour < end:
                    window = EPOCH + (hour - EPOCH) // size * size if size else start
                    windows[window] = windows.get(window, 0) + count
            rows += [row(subject, w, w + size if size else end, str(n)) for w, n in sorted(windows.items())]
        return ok(query_result(start, end, rows, params.get("windowSize")))

    def total(self, subject: str, start: datetime, end: datetime) -> Decimal:
        return Decimal(sum(n for hour, n in self.usage.get(subject, {}).items() if start <= hour < end))
