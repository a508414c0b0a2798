from django.contrib import admin
from django.core.exceptions import ObjectDoesNotExist
from django.db.models import Q
from django.utils.html import format_html

from djstripe.admin.admin import CustomerAdmin as DjstripeCustomerAdmin
from djstripe.admin.admin import SubscriptionAdmin as DjstripeSubscriptionAdmin
from djstripe.models import Customer, Subscription

from . import stripe_dashboard
from .admin_actions import ReportUsageNowMixin
from .models import Meter, UsageReport

CUSTOMER_FILTER_CHOICES = 100


def stripe_link(stripe_id: str, livemode: bool, label: str | None = None):
    url = stripe_dashboard.url_for(stripe_id, livemode)
    if not url:
        return stripe_id or "-"
    return format_html('<a href="{}" target="_blank" rel="noopener">{} ↗</a>', url, label or stripe_id)


class LedgerCustomerFilter(admin.SimpleListFilter):
    """Customers that appear in the ledger, mirrored or not, labelled with their email."""

    title = "customer"
    parameter_name = "customer"

    def lookups(self, request, model_admin):
        recent_ids = list(
            UsageReport.objects.values_list("customer_id", flat=True)
            .order_by("customer_id")
            .distinct()[:CUSTOMER_FILTER_CHOICES]
        )
        emails = dict(Customer.objects.filter(id__in=recent_ids).values_list("id", "email"))
        return [(cid, f"{emails[cid]} ({cid})" if emails.get(cid) else cid) for cid in recent_ids]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(customer_id=self.value())
        return queryset


@admin.register(Meter)
class MeterAdmin(admin.ModelAdmin):
    list_display = ["display_name", "meter_link", "event_name", "source_meter_slug", "window_size", "status", "livemode"]
    list_filter = ["status", "window_size", "livemode"]
    search_fields = ["id", "display_name", "event_name", "source_meter_slug"]
    # Mirrored from Stripe: edit those in Stripe. The usage source and window are ours.
    readonly_fields = [
        "id", "meter_link", "livemode", "display_name", "event_name", "status",
        "aggregation_formula", "customer_payload_key", "value_payload_key", "created", "updated",
    ]
    fieldsets = [
        ("Stripe billing meter", {"fields": [
            "id", "meter_link", "display_name", "event_name", "status", "livemode",
            "aggregation_formula", "customer_payload_key", "value_payload_key",
        ]}),
        ("Usage source", {"fields": ["source_meter_slug", "window_size"]}),
        (None, {"fields": ["created", "updated"]}),
    ]

    def has_add_permission(self, request):
        return False  # meters are created in Stripe (epsilon_setup) and mirrored

    @admin.display(description="Stripe", ordering="id")
    def meter_link(self, meter):
        return stripe_link(meter.id, meter.livemode)


@admin.register(UsageReport)
class UsageReportAdmin(admin.ModelAdmin):
    """The audit of every usage report: read-only, it is the billing ledger."""

    list_display = [
        "created", "customer_display", "meter", "period_display", "usage_until", "sequence",
        "usage_total", "value_sent", "status", "trigger", "attempts",
    ]
    list_filter = [
        "status", "trigger", ("meter", admin.RelatedOnlyFieldListFilter),
        LedgerCustomerFilter, "period_start", "livemode",
    ]
    # Searched in get_search_results: Stripe ids exactly, emails and identifiers in part.
    search_fields = ["identifier"]
    search_help_text = "A Stripe customer, subscription, item or price id; a customer email; an identifier."
    date_hierarchy = "period_start"
    list_per_page = 50
    fieldsets = [
        ("Who", {"fields": ["customer_link", "subscription_link", "subscription_item_id", "price_link", "meter_link", "livemode"]}),
        ("Period (UTC, window-aligned)", {"fields": ["window_size", "period_start", "period_end", "usage_until", "sequence"]}),
        ("Usage", {"fields": ["source_meter_slug", "usage_total", "value_sent"]}),
        ("Stripe meter event", {"fields": ["identifier", "event_timestamp", "status", "error", "attempts", "sent_at"]}),
        ("Audit", {"fields": ["trigger", "created", "updated"]}),
    ]
    readonly_fields = [
        "customer_link", "subscription_link", "subscription_item_id", "price_link", "meter_link", "livemode",
        "window_size", "period_start", "period_end", "usage_until", "sequence", "source_meter_slug",
        "usage_total", "value_sent", "identifier", "event_timestamp", "status", "error", "attempts",
        "sent_at", "trigger", "created", "updated",
    ]

    def get_queryset(self, request):
        # prefetch, not select_related: the ledger keeps rows whose customer is no
        # longer mirrored, and an inner join would hide them.
        return super().get_queryset(request).select_related("meter").prefetch_related("customer")

    def get_search_results(self, request, queryset, search_term):
        # Local columns and a subquery, never a join to the mirror: a join would hide
        # the rows of customers that are no longer mirrored.
        term = search_term.strip()
        if not term:
            return queryset, False
        customers_by_email = Customer.objects.filter(email__icontains=term).values("id")
        matches = (
            Q(identifier__icontains=term)
            | Q(customer_id=term)
            | Q(subscription_id=term)
            | Q(subscription_item_id=term)
            | Q(price_id=term)
            | Q(customer_id__in=customers_by_email)
        )
        return queryset.filter(matches), False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="Customer", ordering="customer_id")
    def customer_display(self, report):
        customer = _mirrored(report, "customer")
        label = f"{report.customer_id} ({customer.email})" if customer and customer.email else None
        return stripe_link(report.customer_id, report.livemode, label)

    @admin.display(description="Customer")
    def customer_link(self, report):
        return self.customer_display(report)

    @admin.display(description="Subscription")
    def subscription_link(self, report):
        return stripe_link(report.subscription_id, report.livemode)

    @admin.display(description="Price")
    def price_link(self, report):
        return stripe_link(report.price_id, report.livemode)

    @admin.display(description="Stripe meter")
    def meter_link(self, report):
        return stripe_link(report.meter_id, report.livemode, str(report.meter))

    @admin.display(description="Period", ordering="period_start")
    def period_display(self, report):
        return f"{report.period_start:%Y-%m-%d %H:%M} → {report.period_end:%Y-%m-%d %H:%M}"


def _mirrored(report, field_name):
    """The mirrored dj-stripe object, or None when the ledger outlives the mirror."""
    try:
        return getattr(report, field_name)
    except ObjectDoesNotExist:
        return None


# dj-stripe's admins for customers and subscriptions, with "Report usage now".
admin.site.unregister(Customer)
admin.site.unregister(Subscription)


@admin.register(Customer)
class CustomerAdmin(ReportUsageNowMixin, DjstripeCustomerAdmin):
    report_usage_scope = "customer_ids"


@admin.register(Subscription)
class SubscriptionAdmin(ReportUsageNowMixin, DjstripeSubscriptionAdmin):
    report_usage_scope = "subscription_ids"
