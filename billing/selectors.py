"""
Read-only queries on the ledger: what a period's reports have sent, and which is in
flight. (What there is to report is the run's own first step: services/targets.py.)
"""

from decimal import Decimal

from django.db.models import Sum

from .models import UsageReport
from .services.ledger import rows_of
from .services.targets import ReportTarget


def sent_total(target: ReportTarget) -> Decimal:
    """What this period's reports have sent toward its running total (not corrections)."""
    return rows_of(target).filter(UsageReport.COUNTS_TOWARD_TOTAL).aggregate(
        total=Sum("value_sent")
    )["total"] or Decimal(0)


def in_flight_report(target: ReportTarget) -> UsageReport | None:
    """The period's report awaiting Stripe's answer, if one is."""
    return rows_of(target).filter(status=UsageReport.Status.PENDING).first()
