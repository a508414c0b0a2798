"""
Reports in doubt: a pending row whose send was interrupted (the run died, or Stripe's
answer never came) and whose lease ran out, so no run is sending it. Runs resend such
a row with the same identifier while Stripe still deduplicates it (24 hours), and past
that decide it by Stripe's meter summary; what neither can decide stays pending, and
blocks its period, until someone settles it here: the `resolve_report` command or the
admin's "Settle reports in doubt" action. Every settlement is a ReportDecision row:
who decided what, why, and what came of it.

The ways, each one rule:
- resend: with the same identifier, only inside the dedupe window (after it, a resend
  of an event that landed would count twice);
- cancel: a meter event adjustment cancels the event at Stripe if it landed (Stripe
  allows it within 24 hours), the row fails, and the customer is reported again, which
  sends the period's usage under a new identifier;
- meter_summary: Stripe's summary of the period says whether the row landed (it must
  hold exactly the sent rows, with or without this one, to decide);
- mark_sent / mark_failed: the operator checked Stripe's dashboard; a reason is required.
"auto" resends inside the window and reads the summary after it.
"""

import stripe
from django.utils import timezone

from .. import stripe_api
from ..conf import conf
from ..errors import ReportNotResolvable
from ..models import ReportDecision, UsageReport
from . import invoices, ledger, usage_reporting
from .send import send_reports

Action = ReportDecision.Action
Status = UsageReport.Status
AUTO = "auto"


def in_doubt(*, customer_ids=None):
    """Pending rows no run is sending: their lease ran out."""
    return ledger.past_lease(lease=conf.pending_lease, customer_ids=customer_ids).select_related("meter").order_by("created", "id")


def within_dedupe_window(report: UsageReport, now=None) -> bool:
    """Whether Stripe still deduplicates (and can cancel) the row's identifier: the row's
    first send was no earlier than its creation."""
    return (now or timezone.now()) - report.created < ledger.SAFE_RESEND_AGE


def resolve(
    report: UsageReport, *, action: str, decided_by: str, reason: str = "", trigger: str = UsageReport.Trigger.ADMIN,
    client=None, source=None,
) -> ReportDecision:
    """Settle one report in doubt the way asked; raises ReportNotResolvable, saying why not."""
    if action == AUTO:
        action = Action.RESEND if within_dedupe_window(report) else Action.METER_SUMMARY
    _check(report, action, reason)
    before = report.status
    lease = conf.pending_lease
    if not ledger.take_in_doubt(report, lease=lease):
        raise ReportNotResolvable(f"{report.identifier} is {report.get_status_display().lower()} now: a run settled or took it just now.")
    client = client or stripe_api.get_client()
    outcome = WAYS[action](report, client=client, decided_by=decided_by, reason=reason, trigger=trigger, source=source)
    report.refresh_from_db()
    invoices.account_rows([report])  # a row now sent may have reached a finalized invoice's period
    return ReportDecision.objects.create(
        report=report, action=action, decided_by=decided_by, reason=reason,
        status_before=before, status_after=report.status, outcome=outcome,
    )


def _check(report: UsageReport, action: str, reason: str) -> None:
    if action not in Action.values:
        raise ReportNotResolvable(f"unknown way to settle a report: {action!r} (use {', '.join([AUTO, *Action.values])})")
    if report.status != Status.PENDING:
        raise ReportNotResolvable(
            f"{report.identifier} is not in doubt: it is {report.get_status_display().lower()}, which Stripe's answer or an earlier decision settled."
        )
    lease = conf.pending_lease
    if report.updated >= timezone.now() - lease:
        raise ReportNotResolvable(
            f"{report.identifier} is being sent by a run (its lease was renewed at {report.updated:%Y-%m-%d %H:%M:%S} UTC); "
            "a run settles it with Stripe's answer."
        )
    if action in (Action.RESEND, Action.CANCEL) and not within_dedupe_window(report):
        raise ReportNotResolvable(
            f"{report.identifier} was first sent more than {ledger.SAFE_RESEND_AGE.total_seconds() / 3600:.0f} hours ago: "
            "Stripe no longer deduplicates or cancels its identifier, so a resend could bill it twice. Decide by "
            "Stripe's meter summary, or mark it sent or failed after checking the customer's meter events."
        )
    if action == Action.CANCEL and invoices.invoiced_units((report.meter_id, report.customer_id, report.billing_start)) is not None:
        raise ReportNotResolvable(
            f"the invoice of {report.identifier}'s period is finalized: if the event landed, the invoice billed it, "
            "and cancelling it would bill its usage again on the next invoice. Resend it, or decide by Stripe's meter summary."
        )
    if action in (Action.MARK_SENT, Action.MARK_FAILED) and not reason.strip():
        raise ReportNotResolvable("marking a report sent or failed needs a reason: what you checked in Stripe.")


def _resend(report, *, client, **_context) -> str:
    send_reports([report], client)
    report.refresh_from_db()
    if report.status == Status.SENT:
        return "resent with the same identifier: Stripe holds it once (sent)"
    return f"resent with the same identifier: {report.get_status_display().lower()}: {report.error}"


def _cancel(report, *, client, decided_by, trigger, source, **_context) -> str:
    try:
        client.v1.billing.meter_event_adjustments.create(
            {"event_name": report.meter.event_name, "type": "cancel", "cancel": {"identifier": report.identifier}}
        )
        what = "Stripe cancelled the event"
    except stripe.InvalidRequestError as exc:
        if exc.param != "cancel[identifier]":
            raise ReportNotResolvable(f"Stripe refused the cancellation of {report.identifier}: {exc.user_message or exc}") from exc
        what = "Stripe holds no event with this identifier from the last 24 hours (nothing to cancel)"
    except stripe.StripeError as exc:
        raise ReportNotResolvable(
            f"the cancellation of {report.identifier} did not reach Stripe ({exc.user_message or exc}); it is still pending."
        ) from exc
    ledger.decide(report, status=Status.FAILED, note=f"cancelled by {decided_by}: {what}; the period's next report sends its usage")
    try:
        result = usage_reporting.report_usage(trigger=trigger, customer_ids=[report.customer_id], client=client, source=source)
    except Exception as exc:  # the decision stands and is recorded; the next run reports the usage
        return f"{what}; reporting again did not run ({exc}): the next run sends the period's usage"
    again = [o for o in result.outcomes if o.report is not None and o.report.billing_start == report.billing_start]
    sent = ", ".join(f"{o.report.identifier} {o.status} {o.value.normalize():f}" for o in again) or "nothing yet"
    return f"{what}; reported again: {sent}"


def _meter_summary(report, *, client, **_context) -> str:
    try:
        usage_reporting.resolve_by_meter_summary(report, client)
    except stripe.StripeError as exc:
        raise ReportNotResolvable(f"Stripe's meter summary could not be read ({exc.user_message or exc}); {report.identifier} is still pending.") from exc
    report.refresh_from_db()
    return f"Stripe's meter summary decided: {report.get_status_display().lower()}: {report.error}"


def _mark(status):
    def mark(report, *, decided_by, reason, **_context) -> str:
        ledger.decide(report, status=status, note=f"marked {status} by {decided_by}: {reason}")
        if status == Status.FAILED:
            return "marked failed: the period's next report sends its usage under a new identifier"
        return "marked sent: the ledger counts it as billed"
    return mark


WAYS = {
    Action.RESEND: _resend,
    Action.CANCEL: _cancel,
    Action.METER_SUMMARY: _meter_summary,
    Action.MARK_SENT: _mark(Status.SENT),
    Action.MARK_FAILED: _mark(Status.FAILED),
}
