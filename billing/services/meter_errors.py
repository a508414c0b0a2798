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
Errors beyond the samples cannot be named; reconciliation's drift shows them.
"""

import logging
from dataclasses import dataclass, field

from django.db import transaction
from django.utils import timezone

from ..models import UsageReport

logger = logging.getLogger(__name__)

ERROR_EVENT_TYPES = ("v1.billing.meter.error_report_triggered", "v1.billing.meter.no_meter_found")


@dataclass
class ErrorReportOutcome:
    errors: int = 0
    rejected: list[str] = field(default_factory=list)  # identifiers of reports now rejected
    unknown: list[str] = field(default_factory=list)  # sampled identifiers the ledger does not hold


def apply_error_report(data: dict) -> ErrorReportOutcome:
    """Mark each sampled report of Stripe's error report rejected, with Stripe's reason."""
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
    logger.warning(
        "Stripe error report: %d error(s); %d report(s) marked rejected; %d sample(s) not in the ledger",
        outcome.errors, len(outcome.rejected), len(outcome.unknown),
    )
    return outcome


def fetch_and_apply(client, event_id: str) -> ErrorReportOutcome:
    """Fetch a thin event's data from Stripe and apply it."""
    event = client.v2.core.events.retrieve(event_id)
    data = event.get("data") if hasattr(event, "get") else None
    return apply_error_report(_plain(data) or {})


def _plain(value):
    """A Stripe object as plain dicts and lists."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return value
