"""
Totals: what the usage source says each target used, up to where it is reported.

One batched query per (source meter, window size), so a run costs a constant number
of source requests whatever the number of customers; a failing source meter fails
only its own targets, with the source's message. Spans that begin or end where
service began or ended are read in minutes; the rest in the meter's windows.
"""

import time
from collections import defaultdict
from decimal import Decimal

from ops.metrics import observe_source_query

from ..usage_sources import UsageRequest, UsageSourceError
from .periods import floor_to_window
from .targets import ReportTarget


def window_for(request: UsageRequest, window_size: str) -> str:
    """The meter's window when the request's bounds are on it, else minutes."""
    aligned = all(floor_to_window(t, window_size) == t for t in (request.start, request.end))
    return window_size if aligned else "MINUTE"


def query(source, batches) -> tuple[dict, dict]:
    """
    One `totals()` call per (source meter, window size) in `batches` (each a set of
    requests): totals by (source meter, request), errors by source meter.
    """
    totals, errors = {}, {}
    for (slug, window_size), requests in batches.items():
        if slug in errors:
            continue
        started = time.perf_counter()
        try:
            answers = source.totals(slug, window_size, list(requests))
        except UsageSourceError as exc:
            errors[slug] = f"usage source {source.name}: {exc}"
            continue
        finally:
            observe_source_query(getattr(source, "name", ""), time.perf_counter() - started)
        totals.update({(slug, request): total for request, total in answers.items()})
    return totals, errors


def totals_by_meter(source, requests_by_meter) -> tuple[dict, dict]:
    """Totals by (meter id, request) and errors by meter id, for sets of requests per meter."""
    batches = defaultdict(set)
    for meter, requests in requests_by_meter.items():
        for request in requests:
            batches[(meter.source_meter_slug, window_for(request, meter.window_size))].add(request)
    answers, failed = query(source, batches)
    totals = {
        (meter.id, request): answers.get((meter.source_meter_slug, request))
        for meter, requests in requests_by_meter.items() for request in requests
        if meter.source_meter_slug not in failed
    }
    return totals, {m.id: failed[m.source_meter_slug] for m in requests_by_meter if m.source_meter_slug in failed}


def request_for(target: ReportTarget, usage_until) -> UsageRequest:
    return UsageRequest(subject=target.subject, start=target.period.start, end=usage_until)


def fetch_totals(source, spans: list[tuple[ReportTarget, object]]) -> tuple[dict, dict]:
    """
    Totals by (target key, usage until) and errors by target key, for each
    (target, usage until) whose target has a subject.
    """
    wanted, batches = {}, defaultdict(set)
    for target, usage_until in spans:
        if target.subject and usage_until > target.period.start:
            slug = target.source_meter_slug or target.meter.source_meter_slug
            request = request_for(target, usage_until)
            wanted[(target.key, usage_until)] = (slug, request)
            batches[(slug, target.period.query_window(usage_until))].add(request)
    answers, failed = query(source, batches)
    totals = {key: answers.get(asked) for key, asked in wanted.items() if asked[0] not in failed}
    errors = {key[0]: failed[slug] for key, (slug, _request) in wanted.items() if slug in failed}
    return totals, errors


def invalid_total(total) -> str | None:
    """Why a source's answer cannot be billed, or None."""
    if total is None:
        return "the usage source returned no total"
    if not isinstance(total, Decimal) or not total.is_finite():
        return f"the usage source returned {total!r}, not a number"
    if total < 0:
        return f"the usage source returned a negative total ({total})"
    return None
