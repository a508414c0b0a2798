"""
Read-only queries: what there is to report (the reporting run's targets, the same
ones the admin shows), and what the ledger says was reported.
"""

from decimal import Decimal

from django.db.models import Sum

from .models import UsageReport
from .services.targets import (  # noqa: F401  (the read side of the reporting run)
    ReportTarget,
    SubjectMappingError,
    current_targets,
    ledger_target,
    subject_for,
)
from .services.ledger import rows_of


def sent_total(target: ReportTarget) -> Decimal:
    """What this period's reports have sent toward its running total (not corrections)."""
    return rows_of(target).filter(UsageReport.COUNTS_TOWARD_TOTAL).aggregate(
        total=Sum("value_sent")
    )["total"] or Decimal(0)


def in_flight_report(target: ReportTarget) -> UsageReport | None:
    """The period's report awaiting Stripe's answer, if one is."""
    return rows_of(target).filter(status=UsageReport.Status.PENDING).first()
