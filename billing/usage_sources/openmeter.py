"""
OpenMeter as a usage source, through its HTTP API (GET /api/v1/meters/{slug}/query).

`OpenMeterClient` speaks HTTP: auth, timeouts, retries and turning OpenMeter's
problem+json answers into plain `UsageSourceError`s. `OpenMeterUsageSource` answers
the engine's many (subject, period) questions with as few queries as it can:

- "grouped": one query per distinct period, with the subjects repeated as `subject`
  params and `groupBy=subject`, so OpenMeter returns one total per subject;
- "windowed": one query over the union of all periods, cut in windows and grouped by
  subject, each request's total being the sum of the windows inside [start, end).

Usage values are money inputs: they are parsed from the JSON text straight into
Decimal and summed exactly; no float ever holds one.
"""

import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, Inexact, localcontext
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import httpx
from django.conf import settings
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from epsilon.timewindows import WINDOWS, format_rfc3339, parse_rfc3339

from .base import UsageRequest, UsageSource, UsageSourceError

# Coarsest first: the windowed strategy uses the coarsest window every period is aligned to.
WINDOW_SIZES: dict[str, timedelta] = dict(reversed(WINDOWS.items()))
# OpenMeter caps its subject filters at 100 items (MeterQueryRequest.subject.maxItems).
MAX_SUBJECTS_PER_QUERY = 100
# Keeps the query string, and so the URL, well under the usual 8 KB proxy limit.
MAX_SUBJECT_BYTES_PER_QUERY = 6000
# A windowed query returns windows x subjects rows; past this, per-period queries are kinder.
MAX_ROWS_PER_QUERY = 50_000
# A longer Retry-After is better spent failing this run clearly: the next run retries.
MAX_RETRY_AFTER_SECONDS = 60
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# Sums are exact or raise: 1000 digits hold any sum of doubles short of absurd exponents.
EXACT = Context(prec=1000, traps=[Inexact])


@dataclass(frozen=True)
class MeterQueryRow:
    """One row of a MeterQueryResult: the usage of `subject` over [window_start, window_end)."""

    subject: str | None
    window_start: datetime
    window_end: datetime
    value: Decimal


class _RetryableStatus(Exception):
    """OpenMeter answered 429 or 5xx: worth another try, after Retry-After if it said so."""

    def __init__(self, response: httpx.Response):
        super().__init__(response.status_code)
        self.response = response
        self.retry_after = _retry_after_seconds(response)


class OpenMeterClient:
    """HTTP access to one OpenMeter deployment. `requests_made` counts every HTTP request sent."""

    def __init__(
        self,
        base_url: str,
        token: str = "",
        *,
        timeout_seconds: float = 10.0,
        max_retries: int = 3,
        sleep: Callable[[float], None] = time.sleep,
        backoff_initial_seconds: float = 0.5,
        backoff_max_seconds: float = 30.0,
    ):
        if not base_url:
            raise UsageSourceError(
                "OPENMETER_URL is not set: set it to your OpenMeter's base URL "
                "(e.g. https://openmeter.example.com), or use USAGE_SOURCE=embedded."
            )
        if not base_url.startswith(("http://", "https://")):
            raise UsageSourceError(f"OPENMETER_URL must start with http:// or https://, not {base_url!r}.")
        self.base_url = base_url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.max_retries = max_retries
        self.requests_made = 0
        self._sleep = sleep
        self._backoff = wait_exponential_jitter(
            multiplier=backoff_initial_seconds, max=backoff_max_seconds, jitter=backoff_initial_seconds
        )
        headers = {"Accept": "application/json"}
        if token:  # a self-hosted OpenMeter may run without auth
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=httpx.Timeout(timeout_seconds))

    @classmethod
    def from_settings(cls) -> "OpenMeterClient":
        return cls(
            settings.OPENMETER_URL,
            settings.OPENMETER_TOKEN,
            timeout_seconds=settings.OPENMETER_TIMEOUT_SECONDS,
            max_retries=settings.OPENMETER_MAX_RETRIES,
        )

    def close(self) -> None:
        self._http.close()

    def query_meter(
        self,
        meter_slug: str,
        *,
        start: datetime,
        end: datetime,
        subjects: Sequence[str],
        window_size: str | None = None,
    ) -> list[MeterQueryRow]:
        """Usage of `subjects` over [start, end), one row per subject (and window, if sized)."""
        params: list[tuple[str, str]] = [("from", format_rfc3339(start)), ("to", format_rfc3339(end))]
        if window_size:
            params += [("windowSize", window_size), ("windowTimeZone", "UTC")]
        params.append(("groupBy", "subject"))
        params += [("subject", subject) for subject in subjects]
        response = self._get(meter_slug, params)
        return _parse_rows(meter_slug, response)

    def ping(self) -> int:
        """
        Whether OpenMeter answers (for /readyz): one GET /api/v1/meters (listMeters) with
        the client's timeout and no retries, so a probe never waits out a backoff.
        Returns how many meters OpenMeter lists; raises UsageSourceError otherwise.
        """
        self.requests_made += 1
        try:
            response = self._http.get("/api/v1/meters")
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if response.is_error:
            raise UsageSourceError(_problem_message("listing meters", response))
        try:
            meters = json.loads(response.content)
        except ValueError:
            meters = None
        if not isinstance(meters, list):  # listMeters answers an array of Meter
            raise UsageSourceError(
                f"OpenMeter at {self.base_url} sent an unreadable answer listing meters: "
                f"{response.status_code}, not a JSON array of meters (is OPENMETER_URL OpenMeter's API?)"
            )
        return len(meters)

    def _get(self, meter_slug: str, params: list[tuple[str, str]]) -> httpx.Response:
        retrying = Retrying(
            stop=stop_after_attempt(self.max_retries + 1),
            retry=retry_if_exception_type((httpx.TransportError, _RetryableStatus)),
            wait=self._wait,
            sleep=self._sleep,
            reraise=True,
        )
        attempts = f"{self.max_retries + 1} attempt(s)"
        try:
            return retrying(self._send, meter_slug, params)
        except _RetryableStatus as failed:
            raise UsageSourceError(f"{_refusal_message(meter_slug, failed.response)} ({attempts})") from None
        except httpx.TransportError as exc:
            raise self._unreachable(exc, attempts) from exc

    def _unreachable(self, exc: httpx.TransportError, attempts: str = "") -> UsageSourceError:
        """What to say when OpenMeter could not be reached (a timeout, a refused connection)."""
        if isinstance(exc, httpx.TimeoutException):
            detail = f"timed out after {self.timeout_seconds}s ({type(exc).__name__}{'; ' + attempts if attempts else ''})"
        else:
            detail = f"{str(exc) or type(exc).__name__}{f' ({attempts})' if attempts else ''}"
        return UsageSourceError(f"Could not reach OpenMeter at {self.base_url}: {detail}")

    def _send(self, meter_slug: str, params: list[tuple[str, str]]) -> httpx.Response:
        self.requests_made += 1
        response = self._http.get(f"/api/v1/meters/{quote(meter_slug, safe='')}/query", params=params)
        if response.status_code in RETRYABLE_STATUSES:
            raise _RetryableStatus(response)
        if response.is_error:  # other 4xx: asking again won't help
            raise UsageSourceError(_refusal_message(meter_slug, response))
        return response

    def _wait(self, retry_state: RetryCallState) -> float:
        failure = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(failure, _RetryableStatus) and failure.retry_after is not None:
            return failure.retry_after
        return self._backoff(retry_state)


class OpenMeterUsageSource(UsageSource):
    name = "openmeter"

    def __init__(self, client: OpenMeterClient | None = None):
        # Built on first use, so a missing OPENMETER_URL surfaces where the engine expects errors.
        self._client = client

    @property
    def client(self) -> OpenMeterClient:
        if self._client is None:
            self._client = OpenMeterClient.from_settings()
        return self._client

    def check(self) -> str:
        """OpenMeter answers listMeters (one request, no retries)."""
        meters = self.client.ping()
        return f"openmeter at {self.client.base_url}: reachable, {meters} meter(s)"

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    @property
    def requests_made(self) -> int:
        """HTTP requests sent to OpenMeter so far, retries included."""
        return self._client.requests_made if self._client else 0

    def totals(
        self, meter_slug: str, window_size: str, requests: Sequence[UsageRequest]
    ) -> dict[UsageRequest, Decimal]:
        """
        Per-period queries or one windowed query, whichever sends fewer requests (ties go
        to per-period: smaller answers). `window_size` is not needed: the windowed query
        uses the coarsest window all periods align to, never finer than the meter's.
        """
        totals = {request: Decimal(0) for request in requests}
        pending = [request for request in totals if request.end > request.start]
        if not pending:
            return totals
        by_period = _subjects_by_period(pending)
        grouped_cost = sum(len(_chunks(subjects, MAX_SUBJECTS_PER_QUERY)) for subjects in by_period.values())
        plan = _windowed_plan(pending)
        try:
            with localcontext(EXACT):
                if plan and len(plan.subject_chunks) < grouped_cost:
                    self._add_windowed(meter_slug, plan, pending, totals)
                else:
                    self._add_grouped(meter_slug, by_period, totals)
        except Inexact:
            raise UsageSourceError(f'OpenMeter usage of meter "{meter_slug}" cannot be summed exactly.') from None
        return totals

    def _add_grouped(
        self,
        meter_slug: str,
        by_period: dict[tuple[datetime, datetime], list[str]],
        totals: dict[UsageRequest, Decimal],
    ) -> None:
        for (start, end), subjects in by_period.items():
            for chunk in _chunks(subjects, MAX_SUBJECTS_PER_QUERY):
                asked = set(chunk)
                for row in self.client.query_meter(meter_slug, start=start, end=end, subjects=chunk):
                    if row.subject in asked:
                        request = UsageRequest(row.subject, start, end)
                        totals[request] += row.value

    def _add_windowed(
        self,
        meter_slug: str,
        plan: "_WindowedPlan",
        pending: list[UsageRequest],
        totals: dict[UsageRequest, Decimal],
    ) -> None:
        requests_of: dict[str, list[UsageRequest]] = defaultdict(list)
        for request in pending:
            requests_of[request.subject].append(request)
        for chunk in plan.subject_chunks:
            rows = self.client.query_meter(
                meter_slug, start=plan.start, end=plan.end, subjects=chunk, window_size=plan.window_size
            )
            for row in rows:
                for request in requests_of.get(row.subject or "", ()):
                    if _window_inside(meter_slug, row, request):
                        totals[request] += row.value


@dataclass(frozen=True)
class _WindowedPlan:
    window_size: str
    start: datetime
    end: datetime
    subject_chunks: list[list[str]]


def _windowed_plan(pending: list[UsageRequest]) -> _WindowedPlan | None:
    """One windowed query per chunk of distinct subjects, or None when the rows would be too many."""
    boundaries = {moment for request in pending for moment in (request.start, request.end)}
    window_size = _coarsest_aligned_window(boundaries)
    if window_size is None:
        return None
    start, end = min(boundaries), max(boundaries)
    windows = (end - start) // WINDOW_SIZES[window_size]
    per_query = min(MAX_SUBJECTS_PER_QUERY, MAX_ROWS_PER_QUERY // windows)
    if per_query < 1:
        return None
    subjects = list(dict.fromkeys(request.subject for request in pending))
    return _WindowedPlan(window_size, start, end, _chunks(subjects, per_query))


def _coarsest_aligned_window(moments: Iterable[datetime]) -> str | None:
    """The coarsest UTC window size that every moment falls on a boundary of."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for name, size in WINDOW_SIZES.items():
        if all((moment - epoch) % size == timedelta(0) for moment in moments):
            return name
    return None


def _window_inside(meter_slug: str, row: MeterQueryRow, request: UsageRequest) -> bool:
    """Whether the row's window lies in the request's period; a straddling one would be mis-billed."""
    if request.start <= row.window_start and row.window_end <= request.end:
        return True
    if row.window_start < request.end and request.start < row.window_end:
        raise UsageSourceError(
            f'OpenMeter window {format_rfc3339(row.window_start)}..{format_rfc3339(row.window_end)} of meter "{meter_slug}" '
            f'straddles the period of subject "{request.subject}"; windows must align with billing periods.'
        )
    return False


def _subjects_by_period(pending: list[UsageRequest]) -> dict[tuple[datetime, datetime], list[str]]:
    by_period: dict[tuple[datetime, datetime], list[str]] = defaultdict(list)
    for request in pending:
        by_period[request.start, request.end].append(request.subject)
    return by_period


def _chunks(subjects: list[str], max_count: int) -> list[list[str]]:
    return list(_chunked(subjects, max_count))


def _chunked(subjects: list[str], max_count: int) -> Iterator[list[str]]:
    """Chunks of at most `max_count` subjects whose URL-encoded params fit the byte budget."""
    chunk: list[str] = []
    size = 0
    for subject in subjects:
        cost = len("&subject=") + len(quote(subject, safe=""))
        if chunk and (len(chunk) == max_count or size + cost > MAX_SUBJECT_BYTES_PER_QUERY):
            yield chunk
            chunk, size = [], 0
        chunk.append(subject)
        size += cost
    if chunk:
        yield chunk


def _parse_rows(meter_slug: str, response: httpx.Response) -> list[MeterQueryRow]:
    # parse_float/parse_int/parse_constant: every number goes from its JSON text to Decimal.
    try:
        body = json.loads(response.content, parse_float=Decimal, parse_int=Decimal, parse_constant=Decimal)
        return [_parse_row(meter_slug, row) for row in body["data"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageSourceError(
            f'OpenMeter sent an unreadable answer for meter "{meter_slug}": {type(exc).__name__}: {exc}'
        ) from None


def _parse_row(meter_slug: str, row: dict[str, Any]) -> MeterQueryRow:
    subject, value = row["subject"], row["value"]
    if value is None:  # OpenMeter's "no aggregate" for this window
        value = Decimal(0)
    if not isinstance(value, Decimal):
        raise TypeError(f"value {value!r} of subject {subject!r} is not a number")
    if not value.is_finite():
        raise UsageSourceError(
            f'OpenMeter returned {value} as the usage of subject "{subject}" on meter "{meter_slug}".'
        )
    return MeterQueryRow(subject, parse_rfc3339(row["windowStart"]), parse_rfc3339(row["windowEnd"]), value)




def _retry_after_seconds(response: httpx.Response) -> float | None:
    """Retry-After as seconds (RFC 9110: delay-seconds or an HTTP-date), capped; None if absent."""
    header = response.headers.get("Retry-After", "").strip()
    if header.isdigit():
        return min(int(header), MAX_RETRY_AFTER_SECONDS)
    try:
        when = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0), MAX_RETRY_AFTER_SECONDS)


def _refusal_message(meter_slug: str, response: httpx.Response) -> str:
    """E.g. 'OpenMeter refused the query for meter "m1": 404 Not Found: meter not found'."""
    return _problem_message(f'the query for meter "{meter_slug}"', response)


def _problem_message(what: str, response: httpx.Response) -> str:
    """E.g. 'OpenMeter failed listing meters: 503 Service Unavailable: try again later'."""
    verb = "failed" if response.is_server_error else "refused"
    title, detail = response.reason_phrase, response.text.strip()[:200]
    try:
        problem = json.loads(response.content)
        title, detail = problem.get("title") or title, problem.get("detail") or ""
    except (ValueError, AttributeError):
        pass  # not problem+json (e.g. a proxy's HTML page): keep the status line and a snippet
    message = f"OpenMeter {verb} {what}: {response.status_code} {title}"
    return f"{message}: {detail}" if detail else message
