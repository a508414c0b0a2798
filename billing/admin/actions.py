"""
Admin doors to the billing services: "Report usage now", "Retry failed", "Reconcile
with Stripe" and the CSV export of the audit. Each action that talks to Stripe asks
for the dedicated permission, and goes through the same service as the command, the
schedule and the webhooks, so the ledger's exactly-once rule holds here too.
"""

import csv
from collections import Counter
from decimal import Decimal

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, Subquery
from django.http import Http404, HttpResponseRedirect, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html_join
from djstripe.models import Customer

from .. import selectors
from ..conf import conf
from ..errors import OPERATOR_ERRORS, operator_message
from ..models import PeriodReconciliation, ReportDecision, UsageReport
from ..services import reconciliation, stale_reports, usage_reporting
from .display import signed, units

PERMISSION = "billing.report_usage_now"
Status = UsageReport.Status
RESOLVE_PERMISSION = "billing.resolve_usage_report"


class GuardedActions:
    """
    Actions that each need a permission of their own, named in `guarded_actions`
    (action -> permission) by the mixin that brings them. dj-stripe's read-only admins
    offer no actions, so these are added after Django's own filtering, each only for a
    user who has its permission: the one mechanism every billing action uses.
    """

    guarded_actions: dict[str, str] = {}

    def get_actions(self, request):
        actions = super().get_actions(request)
        for name, permission in guarded_actions(type(self)).items():
            if request.user.has_perm(permission):
                actions[name] = self.get_action(name)
        return actions


def guarded_actions(cls) -> dict[str, str]:
    """Every guarded action of an admin class, from each of its mixins."""
    merged = {}
    for klass in reversed(cls.__mro__):
        merged.update(vars(klass).get("guarded_actions", {}))
    return merged


class ReportUsageNowMixin(GuardedActions):
    """Adds the permission-guarded "Report usage now" action and change-page button."""

    guarded_actions = {"report_usage_now": PERMISSION}

    #: "customer_ids" or "subscription_ids": how the selection narrows the run.
    report_usage_scope: str

    def has_report_usage_permission(self, request):
        return request.user.has_perm(PERMISSION)

    def get_urls(self):
        opts = self.model._meta
        view = self.admin_site.admin_view(self.report_usage_object_view)
        name = f"{opts.app_label}_{opts.model_name}_report_usage"
        return [path("<path:object_id>/report-usage/", view, name=name), *super().get_urls()]

    @admin.action(description="Report usage now", permissions=["report_usage"])
    def report_usage_now(self, request, queryset):
        if request.POST.get("post") != "yes":
            return self._confirm_report_usage(request, queryset)
        self._report(request, list(queryset.values_list("id", flat=True)))
        return None

    def report_usage_object_view(self, request, object_id):
        """The change page's "Report usage now" button: confirm, report, come back."""
        if not self.has_report_usage_permission(request):
            raise PermissionDenied
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404
        change_url = reverse(f"admin:{self.model._meta.app_label}_{self.model._meta.model_name}_change", args=[obj.pk])
        if request.method == "POST" and request.POST.get("post") == "yes":
            self._report(request, [obj.id])
            return HttpResponseRedirect(change_url)
        return self._confirm_report_usage(request, self.model.objects.filter(pk=obj.pk), cancel_url=change_url)

    def _report(self, request, stripe_ids):
        try:
            result = usage_reporting.report_usage(
                trigger=UsageReport.Trigger.ADMIN, **{self.report_usage_scope: stripe_ids}
            )
        except OPERATOR_ERRORS as exc:
            self.message_user(request, f"Usage was not reported: {operator_message(exc)}", messages.ERROR)
            return
        report_result(self, request, result)

    def _confirm_report_usage(self, request, queryset, cancel_url=None):
        context = {
            **confirmation_context(self, request, queryset, "Report usage now?"),
            "cancel_url": cancel_url,
        }
        return TemplateResponse(request, "admin/billing/report_usage_confirm.html", context)


def report_result(modeladmin, request, result, *, empty_message=None):
    """
    One message per item saying what happened to it, at the level it deserves: success
    only when something reached Stripe; info when there was nothing new; a warning while
    Stripe's answer is awaited; an error, with the reason, when it failed. Several items
    get a summary first, at the level of the worst of them.
    """
    if not result.outcomes:
        modeladmin.message_user(
            request,
            empty_message or "Nothing to report: no metered subscription item of the selection has a "
            "whole usage window in its current period yet.",
            messages.WARNING,
        )
        return
    told = [outcome_message(o) for o in result.outcomes]
    if len(told) > 1:
        counts = Counter(OUTCOME_WORDS.get(o.status, o.status) for o in result.outcomes)
        sent = sum((o.value for o in result.outcomes if o.status == Status.SENT), Decimal(0))
        text = ", ".join(f"{n} {words}" for words, n in counts.items())
        modeladmin.message_user(
            request, f"{len(told)} items reported: {text}; {signed(sent)} units sent to Stripe.",
            max(level for level, _ in told),
        )
    for level, text in told:
        modeladmin.message_user(request, text, level)


OUTCOME_WORDS = {
    Status.SENT: "sent", Status.SKIPPED: "with nothing new", Status.CARRIED: "carried to the next period",
    Status.LATE: "recorded as late", Status.PENDING: "awaiting Stripe's answer",
    usage_reporting.IN_FLIGHT: "awaiting Stripe's answer", Status.REJECTED: "rejected", Status.FAILED: "failed",
}


def item_name(target) -> str:
    """How a message names an item: a word first, as Django's admin capitalizes a message's first letter."""
    return f"Customer {target.customer_id}, price {target.price_id}"


def outcome_message(outcome) -> tuple[int, str]:
    """What happened to one item in a run, and the message level it deserves."""
    target, report = outcome.target, outcome.report
    where = item_name(target)
    until = f"{outcome.usage_until:%Y-%m-%d %H:%M} UTC"
    status = outcome.status
    if status == Status.SENT:
        return messages.SUCCESS, f"{where}: sent {signed(outcome.value)} units to Stripe (usage up to {until}, {units(outcome.usage_total)} this period)."
    if status == Status.SKIPPED:
        return messages.INFO, f"{where}: nothing new to send: Stripe has this period's usage up to {until}."
    if status == Status.CARRIED:
        return messages.INFO, f"{where}: {signed(outcome.value)} units of late usage carried to the next period (this period's invoice is final)."
    if status == Status.LATE:
        return messages.WARNING, f"{where}: {signed(outcome.value)} units of late usage recorded and billed nowhere (EPSILON_LATE_USAGE=record)."
    if status == usage_reporting.IN_FLIGHT:
        return messages.WARNING, awaiting_message(outcome)
    if status == Status.PENDING:
        resend = f" from {report.updated + conf.pending_lease:%H:%M} UTC" if report else ""
        return messages.WARNING, (
            f"{where}: sent {signed(outcome.value)} units, but Stripe's answer did not come: it is awaiting "
            f"Stripe's answer, resent with the same identifier by the next run{resend}."
        )
    if status == Status.REJECTED:
        return messages.ERROR, f"{where}: rejected by Stripe: {outcome.error or 'no reason given'}."
    return messages.ERROR, f"{where}: failed, nothing sent: {outcome.error or 'no reason recorded'}"


def awaiting_message(outcome) -> str:
    """What an operator reads for a period whose earlier report still awaits Stripe's answer."""
    pending = selectors.in_flight_report(outcome.target)
    where = item_name(outcome.target)
    if pending is None:  # settled meanwhile
        return f"{where}: an earlier report of this period was being sent; it has settled since: report again to send new usage."
    resend_at = pending.updated + conf.pending_lease
    return (
        f"{where}: report {pending.identifier} ({units(pending.value_sent)}) is awaiting Stripe's answer "
        f"(sent {pending.updated:%H:%M} UTC). Nothing new is sent for this period until it settles; if no answer comes, "
        f"it is resent with the same identifier from {resend_at:%H:%M} UTC, and this period's new usage goes with the run after."
    )


def confirmation_context(modeladmin, request, queryset, title):
    return {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "opts": modeladmin.model._meta,
        "queryset": queryset,
        "objects": format_html_join("", "<li>{} ({})</li>", ((obj, obj.id) for obj in queryset)),
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "media": modeladmin.media,
    }


# --- reconciliation ---------------------------------------------------------------


class ReconcileMixin(GuardedActions):
    """
    "Reconcile with Stripe" for the customers of a selection: compare the source, the
    ledger and Stripe's summaries, and optionally correct drift, after a confirmation.
    """

    guarded_actions = {"reconcile_with_stripe": PERMISSION}

    def has_reconcile_permission(self, request):
        return request.user.has_perm(PERMISSION)

    def reconcile_customer_ids(self, queryset) -> list[str]:
        """The Stripe customer ids a selection stands for."""
        raise NotImplementedError

    @admin.action(description="Reconcile with Stripe", permissions=["reconcile"])
    def reconcile_with_stripe(self, request, queryset):
        customer_ids = sorted(set(self.reconcile_customer_ids(queryset)))
        if request.POST.get("post") != "yes":
            context = {
                **confirmation_context(self, request, queryset, "Reconcile with Stripe?"),
                "customer_ids": customer_ids,
                "settle_minutes": int(reconciliation.DEFAULT_SETTLE_DELAY.total_seconds() // 60),
            }
            return TemplateResponse(request, "admin/billing/reconcile_confirm.html", context)
        correct = request.POST.get("correct") == "yes"
        try:
            results = reconciliation.reconcile(customer_ids=customer_ids, correct=correct)
        except OPERATOR_ERRORS as exc:
            self.message_user(request, f"Reconciliation did not run: {operator_message(exc)}", messages.ERROR)
            return None
        reconcile_result(self, request, results, correct)
        return None


def reconcile_result(modeladmin, request, results, correct):
    if not results:
        modeladmin.message_user(
            request,
            "Nothing to reconcile: no period of these customers has settled reports yet "
            f"(periods reported in the last {int(reconciliation.DEFAULT_SETTLE_DELAY.total_seconds() // 60)} "
            "minutes are checked later, as Stripe's summaries lag).",
            messages.WARNING,
        )
        return
    Status = PeriodReconciliation.Status
    counts = {s.label.lower(): sum(r.status == s for r in results) for s in Status}
    text = ", ".join(f"{n} {label}" for label, n in counts.items() if n)
    trouble = [r for r in results if r.status in (Status.DRIFT, Status.UNKNOWN) or r.error]
    level = messages.WARNING if trouble else messages.SUCCESS
    hint = " Select them again and tick “correct drift” to send compensating events." if (
        not correct and any(r.status == Status.DRIFT for r in results)
    ) else ""
    modeladmin.message_user(request, f"{len(results)} period(s) checked: {text}.{hint}", level)
    for result in trouble:
        drift = "unknown" if result.drift is None else f"{result.drift.normalize():+f}"
        detail = f": {result.error}" if result.error else ""
        modeladmin.message_user(
            request,
            f"{result.customer_id} {result.period_start:%Y-%m-%d %H:%M}: {result.get_status_display()} "
            f"(drift {drift}){detail}",
            messages.WARNING,
        )


# --- the audit: retry failed reports, export CSV -----------------------------------


class RetryFailedMixin(GuardedActions):
    """
    "Retry failed": runs the reporting engine for the failed rows' subscriptions. The
    engine recomputes what Stripe is owed from the source and the ledger; a failed
    row's own value is never resent.
    """

    guarded_actions = {"retry_failed": PERMISSION}

    def has_retry_permission(self, request):
        return request.user.has_perm(PERMISSION)

    @admin.action(description="Retry failed reports (report their subscriptions now)", permissions=["retry"])
    def retry_failed(self, request, queryset):
        failed = queryset.filter(status=UsageReport.Status.FAILED)
        subscription_ids = sorted(set(failed.values_list("subscription_id", flat=True)))
        skipped = queryset.count() - failed.count()
        if skipped:
            self.message_user(
                request, f"{skipped} selected report(s) had not failed and were left alone.", messages.INFO
            )
        if not subscription_ids:
            self.message_user(request, "No failed report selected: nothing retried.", messages.WARNING)
            return
        try:
            result = usage_reporting.report_usage(
                trigger=UsageReport.Trigger.ADMIN, subscription_ids=subscription_ids
            )
        except OPERATOR_ERRORS as exc:
            self.message_user(request, f"Retry did not run: {operator_message(exc)}", messages.ERROR)
            return
        report_result(
            self, request, result,
            empty_message="Nothing to retry: the failed reports' subscriptions have nothing to report now "
            "(inactive, or no whole usage window yet).",
        )


class SettleInDoubtMixin(GuardedActions):
    """
    "Settle reports in doubt": for pending reports no run is sending (an interrupted
    send), the operator chooses how each is settled (stale_reports: resend, cancel and
    report again, Stripe's meter summary, or marked with a reason), after a page that
    shows each report's age against Stripe's 24-hour dedupe window. Guarded by its own
    permission; every decision is an audit row under the report.
    """

    guarded_actions = {"settle_in_doubt": RESOLVE_PERMISSION}

    def has_settle_permission(self, request):
        return request.user.has_perm(RESOLVE_PERMISSION)

    @admin.action(description="Settle reports in doubt (pending, no run sending them)", permissions=["settle"])
    def settle_in_doubt(self, request, queryset):
        doubtful = list(stale_reports.in_doubt().filter(pk__in=queryset.values("pk")))
        left = queryset.count() - len(doubtful)
        if not doubtful:
            self.message_user(
                request, "No selected report is in doubt: only pending reports that no run is sending can be settled.",
                messages.WARNING,
            )
            return None
        if request.POST.get("post") != "yes":
            now = timezone.now()
            context = {
                **confirmation_context(self, request, queryset.filter(pk__in=[r.pk for r in doubtful]), "Settle reports in doubt?"),
                "reports": [
                    {"report": r, "within": stale_reports.within_dedupe_window(r, now)}
                    for r in doubtful
                ],
                "ways": [(stale_reports.AUTO, "Automatic: resend within Stripe's dedupe window, else decide by its meter summary"),
                         *ReportDecision.Action.choices],
                "left_alone": left,
                "objects": "",  # the table lists them
            }
            return TemplateResponse(request, "admin/billing/settle_in_doubt_confirm.html", context)
        way, reason = request.POST.get("way") or stale_reports.AUTO, request.POST.get("reason", "")
        for report in doubtful:
            try:
                decision = stale_reports.resolve(report, action=way, decided_by=request.user.get_username(), reason=reason)
            except OPERATOR_ERRORS as exc:
                self.message_user(request, f"Report {report.identifier}: not settled: {operator_message(exc)}", messages.ERROR)
                continue
            level = messages.SUCCESS if decision.status_after != UsageReport.Status.PENDING else messages.WARNING
            self.message_user(
                request,
                f"Report {report.identifier}: {decision.get_action_display()}: now {decision.get_status_after_display().lower()}. {decision.outcome}",
                level,
            )
        if left:
            self.message_user(request, f"{left} selected report(s) were not in doubt and were left alone.", messages.INFO)
        return None


CSV_COLUMNS = [
    "id", "created", "customer_id", "customer_email", "subscription_id", "subscription_item_id",
    "price_id", "meter_id", "livemode", "window_size", "period_start", "period_end", "usage_until",
    "sequence", "usage_total", "value_sent", "status", "trigger", "attempts", "identifier",
    "event_timestamp", "sent_at", "error",
]


class _Echo:
    """A file-like object whose write returns the line, for streaming csv.writer output."""

    def write(self, value):
        return value


class CsvExportMixin:
    """Export the audit list as CSV, as filtered and searched on screen, streamed."""

    def get_urls(self):
        opts = self.model._meta
        view = self.admin_site.admin_view(self.export_csv_view)
        return [path("export.csv", view, name=f"{opts.app_label}_{opts.model_name}_export"), *super().get_urls()]

    def export_csv_view(self, request):
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        changelist = self.get_changelist_instance(request)  # the page's filters and search
        rows = changelist.get_queryset(request).prefetch_related(None).select_related(None).annotate(
            customer_email=Subquery(Customer.objects.filter(id=OuterRef("customer_id")).values("email")[:1])
        )
        writer = csv.writer(_Echo())

        def lines():
            yield writer.writerow(CSV_COLUMNS)
            for report in rows.iterator(chunk_size=500):
                yield writer.writerow([_csv_value(getattr(report, column)) for column in CSV_COLUMNS])

        response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
        stamp = timezone.now().strftime("%Y%m%dT%H%MZ")
        response["Content-Disposition"] = f'attachment; filename="usage-reports-{stamp}.csv"'
        return response


def _csv_value(value):
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)  # Decimals as their exact digits
