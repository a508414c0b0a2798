"""
django-q2 tasks: the schedule and the webhooks call the same reporting service as the
command and the admin. A failure raises, so django-q2 lists the task as failed with
the summary; the ledger keeps the details. After each scheduled run, new problems are
told to the people in ADMINS (ops.alerts), once each.
"""

from ops import alerts

from .errors import BillingError
from .models import UsageReport
from .conf import conf
from .services import shards, usage_reporting
from .webhooks import from_timestamp


class ReportingFailed(BillingError):
    """A scheduled or webhook run with reports that did not reach Stripe (django-q2 lists it failed)."""


def report_usage_on_schedule() -> str:
    """The scheduled run: inline, or fanned out over EPSILON_REPORT_SHARDS tasks (shards.py)."""
    if conf.REPORT_SHARDS > 1:
        group = shards.fan_out(trigger=UsageReport.Trigger.SCHEDULE, shards=conf.REPORT_SHARDS)
        return f"fanned out to {conf.REPORT_SHARDS} shard task(s), django-q2 group {group}"
    try:
        result = usage_reporting.report_usage(trigger=UsageReport.Trigger.SCHEDULE, keep_outcomes=False)
    finally:  # the people in ADMINS hear of new problems, whatever the run did
        alerts.check_and_notify()
    return _summary_or_raise(result)


def report_usage_shard(index: int, count: int, trigger: str) -> dict:
    """One shard of a fanned-out run; its summary is the task's result (shards.assembled reads it)."""
    try:
        return shards.run_shard(index=index, count=count, trigger=trigger)
    finally:
        alerts.check_and_notify()


def report_closed_periods(closed: list[list]) -> str:
    periods = [(item_id, from_timestamp(start), from_timestamp(end)) for item_id, start, end in closed]
    result = usage_reporting.report_closed_periods(periods, trigger=UsageReport.Trigger.WEBHOOK)
    return _summary_or_raise(result)


def apply_meter_error_report(event_id: str) -> str:
    from . import stripe_api
    from .services import meter_errors

    outcome = meter_errors.fetch_and_apply(stripe_api.get_client(), event_id)
    return f"{outcome.errors} error(s); {len(outcome.rejected)} report(s) marked rejected, to be sent again"


def _summary_or_raise(result) -> str:
    if result.failed:
        errors = "; ".join(f"{o.target.customer_id}: {o.error}" for o in result.failed)
        raise ReportingFailed(f"{result.summary()} Failed: {errors}")
    return result.summary()
