"""The billing overview: reports per hour, failures by reason, drift, the schedule."""

from django.core.exceptions import PermissionDenied
from django.urls import reverse
from django.views.generic import TemplateView

from ..models import UsageReport
from . import selectors as admin_selectors
from .charts import Frame, Segment, bar_chart

Status = UsageReport.Status
HOURS_FRAME = Frame(width=720, height=170, left=40, right=8, top=20, bottom=28)
# Stacked bottom to top, in this order.
STACK = [Status.SENT, Status.SKIPPED, Status.CARRIED, Status.LATE, Status.PENDING, Status.REJECTED, Status.FAILED]


class BillingOverview(TemplateView):
    template_name = "admin/billing/overview.html"
    model_admin = None

    def dispatch(self, request, *args, **kwargs):
        if not self.model_admin.has_view_or_change_permission(request):
            raise PermissionDenied
        return super().dispatch(request, *args, **kwargs)

    def get_context_data(self, **kwargs):
        overview = admin_selectors.overview()
        audit = reverse("admin:billing_usagereport_changelist")
        return {
            **super().get_context_data(**kwargs),
            **self.model_admin.admin_site.each_context(self.request),
            "title": "Billing overview",
            "opts": self.model_admin.model._meta,
            "media": self.model_admin.media,
            "overview": overview,
            "hour_bars": hour_bars(overview),
            "hours_desc": f"{len(overview.hours)} hours from {overview.since:%Y-%m-%d %H:%M} UTC; "
                          f"at most {overview.max_hourly} report(s) in one hour.",
            "audit_url": audit,
            "reconciliation_url": reverse("admin:billing_periodreconciliation_changelist"),
            "status_links": {s: f"{audit}?status__exact={s}" for s in Status.values},
            "report_permission": self.request.user.has_perm("billing.report_usage_now"),
        }


def hour_bars(overview) -> dict:
    """The reports written per hour, stacked by status, drawn by the admin's one chart renderer."""
    columns = [
        [
            Segment(hour.counts[status], f"hour-bar bar-{status}", f"{hour.hour:%Y-%m-%d %H:%M} UTC: {hour.counts[status]} {status}",
                    {"status": status, "count": hour.counts[status]})
            for status in STACK if hour.counts.get(status)
        ]
        for hour in overview.hours
    ]
    return bar_chart(
        columns=columns, slots=len(overview.hours), unit="reports", frame=HOURS_FRAME, fill=0.85,
        x_labels=[f"{hour.hour:%d %H:00}" for hour in overview.hours],
    )
