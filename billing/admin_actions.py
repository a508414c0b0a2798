"""
"Report usage now" for customers and subscriptions in the admin: a confirmation page
(as Django's and dj-stripe's own actions have), then the same reporting service the
command, the schedule and the webhooks use.
"""

import stripe
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import ImproperlyConfigured
from django.template.response import TemplateResponse
from django.utils.html import format_html_join

from .models import UsageReport
from .services import usage_reporting

PERMISSION = "billing.report_usage_now"


class ReportUsageNowMixin:
    """Adds the permission-guarded "Report usage now" action to a dj-stripe admin."""

    #: "customer_ids" or "subscription_ids": how the selection narrows the run.
    report_usage_scope: str

    def get_actions(self, request):
        # Added here, after Django filters actions by permission, so check it here too.
        actions = super().get_actions(request)
        if self.has_report_usage_permission(request):
            actions["report_usage_now"] = self.get_action("report_usage_now")
        return actions

    def has_report_usage_permission(self, request):
        return request.user.has_perm(PERMISSION)

    @admin.action(description="Report usage now", permissions=["report_usage"])
    def report_usage_now(self, request, queryset):
        if request.POST.get("post") != "yes":
            return self._confirm_report_usage(request, queryset)
        stripe_ids = list(queryset.values_list("id", flat=True))
        try:
            result = usage_reporting.report_usage(
                trigger=UsageReport.Trigger.ADMIN, **{self.report_usage_scope: stripe_ids}
            )
        except (ImproperlyConfigured, stripe.StripeError) as exc:
            self.message_user(request, f"Usage was not reported: {exc}", messages.ERROR)
            return None
        self._report_result(request, result)
        return None

    def _report_result(self, request, result):
        if not result.outcomes:
            self.message_user(
                request,
                "Nothing to report: no metered subscription item of the selection has a "
                "whole usage window in its current period yet.",
                messages.WARNING,
            )
            return
        level = messages.ERROR if result.failed else messages.SUCCESS
        self.message_user(request, f"Usage reported. {result.summary()}", level)
        for outcome in result.failed:
            self.message_user(
                request,
                f"{outcome.target.customer_id} / {outcome.target.price_id}: {outcome.error}",
                messages.ERROR,
            )

    def _confirm_report_usage(self, request, queryset):
        opts = self.model._meta
        context = {
            **self.admin_site.each_context(request),
            "title": "Report usage now?",
            "opts": opts,
            "queryset": queryset,
            "objects": format_html_join("", "<li>{} ({})</li>", ((obj, obj.id) for obj in queryset)),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media,
        }
        return TemplateResponse(request, "admin/billing/report_usage_confirm.html", context)
