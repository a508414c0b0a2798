"""
Totals: what the usage source says each target used, up to where it is reported.

One batched query per (source meter, window size), so a run costs a constant number
of source requests whatever the number of customers; a failing source meter fails
only its own targets, with the source's message. Spans that begin or end where
service began or ended are read in minutes; the rest in the meter's windows.
"""

from collections import defaultdict

from ..usage_sources import UsageRequest, UsageSourceError
from .periods import floor_to_window
from .targets import ReportTarget


def window_for(request: UsageRequest, window_size: str) -> str:
    """The meter's window when the request's bounds are on it, else minutes."""
    aligned = all(floor_to_window(t, window_size) == t for t in (request.start, request.end))
    return window_size if aligned else "MINUTE"


def totals_by_meter(source, requests_by_meter) -> tuple[dict, dict]:
    """
    Totals by (meter id, request) and errors by meter id, for sets of requests per
    meter: one query per meter and window size; a failing meter fails only its own.
    """
    totals, errors = {}, {}
    for meter, requests in requests_by_meter.items():
        by_window = defaultdict(set)
        for request in requests:
            by_window[window_for(request, meter.window_size)].add(request)
        for window_size, batch in by_window.items():
            try:
                answers = source.totals(meter.source_meter_slug, window_size, list(batch))
            except UsageSourceError as exc:
                errors[meter.id] = f"usage source {source.name}: {exc}"
                continue
            totals.update({(meter.id, request): total for request, total in answers.items()})
    return totals, errors


def request_for(target: ReportTarget, usage_until) -> UsageRequest:
    return UsageRequest(subject=target.subject, start=target.period.start, end=usage_until)


def fetch_totals(source, spans: list[tuple[ReportTarget, object]]) -> tuple[dict, dict]:
    """
    Totals by (target key, usage until) and errors by target key, for each
    (target, usage until) whose target has a subject.
    """
    batches = defaultdict(dict)
    for target, usage_until in spans:
        if target.subject and usage_until > target.period.start:
            batch = (target.source_meter_slug or target.meter.source_meter_slug, target.period.query_window(usage_until))
            batches[batch][(target.key, usage_until)] = request_for(target, usage_until)
    totals, errors = {}, {}
    for (slug, window_size), wanted in batches.items():
        try:
            answers = source.totals(slug, window_size, list(set(wanted.values())))
        except UsageSourceError as exc:
            errors.update({key[0]: f"usage source {source.name}: {exc}" for key in wanted})
            continue
        totals.update({key: answers.get(request) for key, request in wanted.items()})
    return totals, errors


def invalid_total(total) -> str | None:
    """Why a source's answer cannot be billed, or None."""
    from decimal import Decimal

    if total is None:
        return "the usage source returned no total"
    if not isinstance(total, Decimal) or not total.is_finite():
        return f"the usage source returned {total!r}, not a number"
    if total < 0:
        return f"the usage source returned a negative total ({total})"
    return None
