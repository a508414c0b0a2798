"""
Alerts: when reports fail, stay in flight past their lease, or reconciliation finds a
disagreement with Stripe, the people in ADMINS (Django's mail) and/or the alert webhook
are told once per problem, not once per run.

Each check lists the problems there are now, each under a key naming the problem
itself (a period of a customer and meter, a report). A key seen for the first time (or
again after it was resolved) is an Alert row, created under the unique key so that two
processes checking at once tell nobody twice; the new ones go out in one message. An
alert whose problem is gone is resolved. A message that could not be sent leaves its
alerts unnotified, so the next check tries again: told late, never not told.
"""

import logging
from dataclasses import dataclass, field

import httpx
from django.conf import settings
from django.core.mail import mail_admins
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.admin.selectors import latest_reports
from billing.conf import conf
from billing.models import PeriodReconciliation, UsageReport
from billing.services import ledger

from .health import redacted
from .models import Alert

logger = logging.getLogger(__name__)
Kind = Alert.Kind
DISAGREEMENTS = (
    PeriodReconciliation.Status.DRIFT, PeriodReconciliation.Status.UNKNOWN,
    PeriodReconciliation.Status.UNREPORTED, PeriodReconciliation.Status.INVOICE,
)


@dataclass
class AlertCheck:
    new: list[Alert] = field(default_factory=list)
    resolved: int = 0
    sent: bool = False
    unnotified: int = 0  # open alerts nobody has been told about yet


def current_problems(now=None) -> dict[str, tuple[str, str]]:
    """key -> (kind, one-line summary) of every problem there is now."""
    now = now or timezone.now()
    problems = {}
    for r in latest_reports().filter(status=UsageReport.Status.FAILED).order_by("customer_id", "billing_start"):
        problems[f"failed:{r.customer_id}:{r.meter_id}:{r.billing_start:%Y%m%dT%H%M%SZ}"] = (
            Kind.FAILED, f"{r.customer_id}, period from {r.billing_start:%Y-%m-%d %H:%M} UTC: {r.error}",
        )
    for r in ledger.past_lease(lease=conf.pending_lease, now=now).order_by("created"):
        problems[f"stale:{r.identifier}"] = (
            Kind.STALE, f"{r.customer_id}: report {r.identifier} ({r.value_sent.normalize():f} unit(s)) has waited for "
            f"Stripe's answer since {r.created:%Y-%m-%d %H:%M} UTC: {r.error or 'no run is sending it'}",
        )
    for c in PeriodReconciliation.objects.filter(status__in=DISAGREEMENTS).order_by("customer_id", "period_start"):
        problems[f"reconciliation:{c.customer_id}:{c.meter_id}:{c.period_start:%Y%m%dT%H%M%SZ}:{c.status}"] = (
            Kind.RECONCILIATION, f"{c.customer_id}, period from {c.period_start:%Y-%m-%d %H:%M} UTC: "
            f"{c.get_status_display()}: {c.error or f'drift {c.drift}'}",
        )
    return problems


def check_and_notify(now=None) -> AlertCheck:
    """Open alerts for new problems, tell someone about them once, resolve the gone ones."""
    now = now or timezone.now()
    problems = current_problems(now)
    result = AlertCheck()
    result.resolved = Alert.objects.filter(resolved_at__isnull=True).exclude(key__in=problems).update(resolved_at=now)
    Alert.objects.filter(resolved_at__isnull=True, key__in=problems).update(last_seen=now)
    for key, (kind, summary) in problems.items():
        alert = _opened(key, kind, summary, now)
        if alert is not None:
            result.new.append(alert)
    unnotified = list(Alert.objects.filter(resolved_at__isnull=True, notified_at__isnull=True).order_by("first_seen", "id"))
    if unnotified and _tell(unnotified):
        Alert.objects.filter(pk__in=[a.pk for a in unnotified]).update(notified_at=now)
        result.sent = True
    result.unnotified = 0 if result.sent else len(unnotified)
    return result


def _opened(key, kind, summary, now) -> Alert | None:
    """The alert this check opened for a problem, or None when one was open already."""
    reopened = Alert.objects.filter(key=key, resolved_at__isnull=False).update(
        resolved_at=None, notified_at=None, first_seen=now, last_seen=now, summary=summary, kind=kind,
    )
    if reopened:
        return Alert.objects.get(key=key)
    try:
        with transaction.atomic():
            return Alert.objects.create(key=key, kind=kind, summary=summary, first_seen=now, last_seen=now)
    except IntegrityError:  # open already (this check or a concurrent one made it)
        return None


def _tell(alerts: list[Alert]) -> bool:
    """One message about these alerts, by every channel set up; whether one reached someone."""
    subject = f"Epsilon Billing: {len(alerts)} new billing problem{'s' if len(alerts) != 1 else ''}"
    body = "\n".join(f"- {a.get_kind_display()}: {redacted(a.summary)}" for a in alerts) + (
        "\n\nEach problem is told once; see the admin's billing overview for what is still open."
    )
    told = False
    if settings.ADMINS:
        try:
            mail_admins(subject, body, fail_silently=False)
            told = True
        except Exception as exc:  # SMTP down: the next check tries again
            logger.error("could not mail the alert to ADMINS: %s", exc)
    if settings.ALERT_WEBHOOK_URL:
        try:
            httpx.post(settings.ALERT_WEBHOOK_URL, json={"text": f"{subject}\n{body}"}, timeout=10).raise_for_status()
            told = True
        except httpx.HTTPError as exc:
            logger.error("could not post the alert to EPSILON_ALERT_WEBHOOK_URL: %s", exc)
    if not settings.ADMINS and not settings.ALERT_WEBHOOK_URL:
        logger.warning("%s (no DJANGO_ADMINS nor EPSILON_ALERT_WEBHOOK_URL set: nobody told)\n%s", subject, body)
    return told
