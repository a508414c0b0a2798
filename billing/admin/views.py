"""The billing overview: reports per hour, failures by reason, drift, the schedule."""

from django.core.exceptions import PermissionDenied
from django.urls import reverse
from django.views.generic import TemplateView

from ..models import UsageReport
from . import selectors as admin_selectors

Status = UsageReport.Status
CHART_W, CHART_H, CHART_LEFT, CHART_TOP, CHART_BOTTOM = 720, 160, 36, 8, 28
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
            "audit_url": audit,
            "reconciliation_url": reverse("admin:billing_periodreconciliation_changelist"),
            "status_links": {s: f"{audit}?status__exact={s}" for s in Status.values},
            "report_permission": self.request.user.has_perm("billing.report_usage_now"),
        }


def hour_bars(overview) -> dict:
    """Stacked bars of the reports written per hour, by status, as SVG geometry."""
    plot_w, plot_h = CHART_W - CHART_LEFT - 8, CHART_H - CHART_TOP - CHART_BOTTOM
    slot = plot_w / max(1, len(overview.hours))
    top = overview.max_hourly
    bars, labels = [], []
    for i, hour in enumerate(overview.hours):
        y = CHART_TOP + plot_h
        for status in STACK:
            n = hour.counts.get(status, 0)
            if not n:
                continue
            height = n / top * plot_h
            y -= height
            bars.append({
                "x": round(CHART_LEFT + i * slot + 1, 2), "y": round(y, 2),
                "width": round(max(slot - 2, 1), 2), "height": round(height, 2),
                "status": status, "count": n, "hour": hour.hour,
            })
        if i % 6 == 0:
            labels.append({"x": round(CHART_LEFT + i * slot + slot / 2, 2), "text": hour.hour.strftime("%d %H:00")})
    return {
        "bars": bars, "labels": labels, "top": top, "width": CHART_W, "height": CHART_H,
        "left": CHART_LEFT, "axis_y": CHART_TOP + plot_h, "axis_right": CHART_LEFT + plot_w,
        "label_y": CHART_TOP + plot_h + 16, "top_y": CHART_TOP,
    }
