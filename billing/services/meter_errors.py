"""
Stripe's asynchronous verdicts on meter events.

Stripe validates meter events after accepting them (the v2 stream, and v1's async
checks), and reports the ones it drops as `v1.billing.meter.error_report_triggered` (or
`v1.billing.meter.no_meter_found`) thin events at an event destination: the app fetches
the event (`/v2/core/events/{id}`), whose data counts errors by code and samples them
with the events' identifiers. A sampled report the ledger had marked sent is marked
rejected with Stripe's code and message: rejected reports do not count toward a
period's total, so the period's next report sends the usage again, under a new
identifier.
Errors beyond the samples are matched by the meter and the validation window: each
report of that meter sent in the window is checked against Stripe's meter summary of
its period, which (validation being over) holds the period's sent reports without the
dropped ones. A report the summary lacks is rejected; one the summary cannot place
either way is noted on the row and in the outcome, for an operator (reconciliation's
drift shows it too).
"""

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import stripe
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from ..models import UsageReport
from . import invoices, ledger
from .reconciliation import stripe_units_between

logger = logging.getLogger(__name__)

# Stripe's arrival time of an event and the ledger's sent_at differ by the call's length.
SENT_AT_SLACK = timedelta(minutes=1)
ERROR_EVENT_TYPES = ("v1.billing.meter.error_report_triggered", "v1.billing.meter.no_meter_found")


@dataclass
class ErrorReportOutcome:
    errors: int = 0
    rejected: list[str] = field(default_factory=list)  # identifiers of reports now rejected
    unknown: list[str] = field(default_factory=list)  # sampled identifiers the ledger does not hold
    unsure: list[str] = field(default_factory=list)  # sent in the window; the summary cannot place them

    @property
    def unnamed(self) -> int:
        """Errors the samples did not name."""
        return max(self.errors - len(self.rejected) - len(self.unknown), 0)


def apply_error_report(data: dict, *, meter_id: str | None = None, client=None) -> ErrorReportOutcome:
    """
    Mark each sampled report of Stripe's error report rejected, with Stripe's reason;
    with the meter and a client, find the unsampled ones by the validation window.
    """
    reason = data.get("reason") or {}
    outcome = ErrorReportOutcome(errors=int(reason.get("error_count") or 0))
    with transaction.atomic():
        for error_type in reason.get("error_types") or []:
            code = error_type.get("code") or "unknown"
            for sample in error_type.get("sample_errors") or []:
                identifier = ((sample.get("request") or {}).get("identifier")) or ""
                message = (
                    f"Stripe dropped this event after accepting it ({code}): {sample.get('error_message') or ''}"
                    " The period's next report sends the usage again."
                )
                updated = UsageReport.objects.filter(
                    identifier=identifier, status__in=(UsageReport.Status.SENT, UsageReport.Status.PENDING)
                ).update(status=UsageReport.Status.REJECTED, error=message, updated=timezone.now())
                (outcome.rejected if updated else outcome.unknown).append(identifier)
    if outcome.unnamed and meter_id and client is not None:
        _match_by_window(data, meter_id, client, outcome)
    # A rejected row no longer holds units in Stripe's meter: its period's accounting changes.
    invoices.account_rows(UsageReport.objects.filter(identifier__in=outcome.rejected).only("meter_id", "customer_id", "billing_start"))
    logger.warning(
        "Stripe error report: %d error(s); %d report(s) marked rejected; %d sample(s) not in the ledger; "
        "%d report(s) sent in the window the meter summary cannot place",
        outcome.errors, len(outcome.rejected), len(outcome.unknown), len(outcome.unsure),
    )
    return outcome


def _match_by_window(data: dict, meter_id: str, client, outcome: ErrorReportOutcome) -> None:
    """The meter's reports sent in the validation window, each judged by its period's meter summary."""
    start, end = _instant(data.get("validation_start")), _instant(data.get("validation_end"))
    if start is None or end is None:
        return
    codes = ", ".join(sorted({t.get("code") or "unknown" for t in (data.get("reason") or {}).get("error_types") or []}))
    candidates = UsageReport.objects.filter(
        meter_id=meter_id, status=UsageReport.Status.SENT, sent_at__gte=start - SENT_AT_SLACK, sent_at__lte=end + SENT_AT_SLACK,
    ).exclude(identifier__in=outcome.rejected).select_related("meter")
    unnamed = outcome.unnamed
    for report in candidates:
        if unnamed <= 0:  # never more rejections than Stripe counted
            break
        try:
            held = stripe_units_between(client, report.meter, report.customer_id, report.period_start, report.period_end)
        except stripe.StripeError as exc:
            logger.warning("could not read the meter summary for %s: %s", report.identifier, exc)
            outcome.unsure.append(report.identifier)
            continue
        verdict = ledger.judge_by_summary(report, held)
        if verdict == "lacks":
            UsageReport.objects.filter(pk=report.pk, status=UsageReport.Status.SENT).update(
                status=UsageReport.Status.REJECTED, updated=timezone.now(),
                error=f"Stripe dropped this event after accepting it ({codes}; reported without samples, found by "
                "its meter summary, which lacks it). The period's next report sends the usage again.",
            )
            outcome.rejected.append(report.identifier)
            unnamed -= 1
        elif verdict == "unclear":
            UsageReport.objects.filter(pk=report.pk).update(error=(
                f"Stripe reported {outcome.errors} dropped event(s) ({codes}) for this meter while this one was "
                f"validated, without naming them; its period's meter summary holds {held.normalize():f}, which the "
                "ledger cannot place: reconcile this customer."
            ))
            outcome.unsure.append(report.identifier)


def _instant(value):
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, UTC)
    return parse_datetime(value) if value else None


def fetch_and_apply(client, event_id: str) -> ErrorReportOutcome:
    """Fetch a thin event's data from Stripe and apply it."""
    event = client.v2.core.events.retrieve(event_id)
    data = event.get("data") if hasattr(event, "get") else None
    related = (event.get("related_object") if hasattr(event, "get") else None) or {}
    return apply_error_report(_plain(data) or {}, meter_id=related.get("id"), client=client)


def _plain(value):
    """A Stripe object as plain dicts and lists."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return value
