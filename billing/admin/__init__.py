"""
The operators' admin, as a package (in the manner of dj-stripe's): the model admins
here; `actions` (every action that talks to Stripe, guarded by its own permission
through one mechanism, with its confirmation page), `display` (badges, money, Stripe
links), `selectors` (what the pages show, read-only), `views` (the billing overview).
The audit rows are read-only: they are the ledger.
"""

from django.contrib import admin, messages
from django.core.exceptions import ObjectDoesNotExist
from django.db.models import Q
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from djstripe.admin.admin import CustomerAdmin as DjstripeCustomerAdmin
from djstripe.admin.admin import PriceAdmin as DjstripePriceAdmin
from djstripe.admin.admin import ProductAdmin as DjstripeProductAdmin
from djstripe.admin.admin import SubscriptionAdmin as DjstripeSubscriptionAdmin
from djstripe.admin.utils import ReadOnlyMixin
from djstripe.models import Customer, Price, Product, Subscription

from ..models import Meter, PeriodReconciliation, ReportDecision, UsageReport
from . import selectors as admin_selectors
from . import stripe_reads
from . import views as admin_views
from .actions import (
    CsvExportMixin,
    ReconcileMixin,
    ReportUsageNowMixin,
    RetryFailedMixin,
    SettleInDoubtMixin,
)
from .display import UNIT_HELP, money, number, signed, status_badge, stripe_link, stripe_url, units

CUSTOMER_FILTER_CHOICES = 100
ADMIN_CSS = {"all": ["billing/admin.css"]}

# Django's navigation sidebar takes 300 of an operator's 1400 px: the lists need them.
admin.site.enable_nav_sidebar = False

__all__ = ["stripe_link"]


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


class ResolutionFilter(admin.SimpleListFilter):
    """Failed or rejected rows still open, or settled since by a later report of their period."""

    title = "problem"
    parameter_name = "resolution"

    def lookups(self, request, model_admin):
        return [("open", "Open (no later report got through)"), ("resolved", "Resolved by a later report")]

    def queryset(self, request, queryset):
        if self.value() == "open":
            return queryset.filter(status__in=admin_selectors.RESOLVABLE, resolved=False)
        if self.value() == "resolved":
            return queryset.filter(resolved=True)
        return queryset


def figure_column(field_name: str, description: str, formatter=number):
    """A list column showing a decimal field as a figure ("1,128", or "+25" with `signed`)."""

    @admin.display(description=description, ordering=field_name)
    def column(self, obj):
        return formatter(getattr(obj, field_name))

    return column


def search_by_customer(queryset, term, extra=None):
    """Exact Stripe ids and emails in part, by subquery: a join would hide unmirrored rows."""
    term = term.strip()
    if not term:
        return queryset, False
    customers_by_email = Customer.objects.filter(email__icontains=term).values("id")
    matches = Q(customer_id=term) | Q(customer_id__in=customers_by_email)
    return queryset.filter(matches | extra if extra is not None else matches), False


@admin.register(Meter)
class MeterAdmin(admin.ModelAdmin):
    list_display = ["display_name", "meter_link", "event_name", "source_meter_slug", "window_size", "status", "livemode"]
    list_filter = ["status", "window_size", "livemode"]
    search_fields = ["id", "display_name", "event_name", "source_meter_slug"]
    # Mirrored from Stripe: edit those in Stripe. The usage source and window are ours.
    readonly_fields = [
        "id", "meter_link", "livemode", "display_name", "event_name", "status",
        "aggregation_formula", "event_time_window", "customer_payload_key", "value_payload_key",
        "created", "updated",
    ]
    fieldsets = [
        ("Stripe billing meter", {"fields": [
            "id", "meter_link", "display_name", "event_name", "status", "livemode",
            "aggregation_formula", "event_time_window", "customer_payload_key", "value_payload_key",
        ]}),
        ("Usage source", {
            "fields": ["source_meter_slug", "window_size"],
            "description": "A change applies from each customer's next billing period: a period "
            "already reported keeps the source meter and window its first report used, so "
            "nothing is counted again.",
        }),
        (None, {"fields": ["created", "updated"]}),
    ]

    def has_add_permission(self, request):
        return False  # meters are created in Stripe (epsilon_setup) and mirrored

    def has_delete_permission(self, request, obj=None):
        return False  # the ledger's reports refer to it; deactivate the meter in Stripe

    @admin.display(description="Stripe", ordering="id")
    def meter_link(self, meter):
        return stripe_link(meter.id, meter.livemode)


class AuditReadOnlyMixin(ReadOnlyMixin):
    """dj-stripe's read-only admin, and nothing deleted either: these rows are the audit."""

    def has_delete_permission(self, request, obj=None):
        return False


class ReportDecisionInline(admin.TabularInline):
    """Decisions on a report in doubt: who settled it, how, why, and what came of it."""

    model = ReportDecision
    fields = ["created", "decided_by", "action", "reason", "status_before", "status_after", "outcome"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name = "decision on this report"
    verbose_name_plural = "Decisions on this report (it was in doubt)"

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_view_permission(self, request, obj=None):
        # Part of the report's audit: whoever may read the report reads its decisions.
        return request.user.has_perm("billing.view_usagereport")


@admin.register(UsageReport)
class UsageReportAdmin(AuditReadOnlyMixin, SettleInDoubtMixin, RetryFailedMixin, CsvExportMixin, admin.ModelAdmin):
    """The audit of every usage report: read-only, it is the billing ledger."""

    # What an operator reads first, inside a 1400 px window: the rest is on the row's page.
    list_display = ["created_display", "customer_display", "period_display", "value_display", "status_display", "trigger"]
    list_filter = [
        "status", ResolutionFilter, "trigger", ("meter", admin.RelatedOnlyFieldListFilter),
        LedgerCustomerFilter, "period_start", "livemode",
    ]
    # Searched in get_search_results: Stripe ids exactly, emails and identifiers in part.
    search_fields = ["identifier"]
    search_help_text = "A Stripe customer, subscription, item or price id; a customer email; an identifier."
    date_hierarchy = "period_start"
    list_per_page = 50
    inlines = [ReportDecisionInline]
    fieldsets = [
        ("Who", {"fields": ["customer_link", "subscription_link", "subscription_item_id", "price_link", "meter_link", "livemode"]}),
        ("Period (UTC, window-aligned)", {"fields": ["window_size", "period_start", "period_end", "usage_until", "sequence"]}),
        ("Usage (units: billed seconds)", {"fields": ["source_meter_slug", "usage_total_display", "value_sent_display", "unbilled_display"]}),
        ("Stripe meter event", {"fields": ["identifier", "event_timestamp", "status_display", "error", "attempts", "sent_at"]}),
        ("Audit", {"fields": ["trigger", "created", "updated"]}),
    ]
    readonly_fields = [
        "customer_link", "subscription_link", "subscription_item_id", "price_link", "meter_link", "livemode",
        "window_size", "period_start", "period_end", "usage_until", "sequence", "source_meter_slug",
        "usage_total_display", "value_sent_display", "unbilled_display", "identifier", "event_timestamp", "status_display", "error", "attempts",
        "sent_at", "trigger", "created", "updated",
    ]

    class Media:
        css = ADMIN_CSS

    def get_urls(self):
        overview = self.admin_site.admin_view(admin_views.BillingOverview.as_view(model_admin=self))
        return [path("overview/", overview, name="billing_overview"), *super().get_urls()]

    def get_queryset(self, request):
        # prefetch, not select_related: the ledger keeps rows whose customer is no
        # longer mirrored, and an inner join would hide them.
        queryset = super().get_queryset(request).select_related("meter").prefetch_related("customer")
        return admin_selectors.with_resolution(queryset)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        return search_by_customer(
            queryset, term,
            Q(identifier__icontains=term) | Q(subscription_id=term) | Q(subscription_item_id=term) | Q(price_id=term),
        )

    @admin.display(description="Status", ordering="status")
    def status_display(self, report):
        badge = status_badge(report.status, report.get_status_display(), report.error)
        if getattr(report, "resolved", False):
            return format_html(
                '{} {}', badge,
                status_badge("resolved", "Resolved", "A later report of this period got through: nothing is owed for this failure"),
            )
        return badge

    usage_total_display = figure_column("usage_total", "Usage total (the source's, exact)")
    value_sent_display = figure_column("value_sent", "Value sent", signed)
    unbilled_display = figure_column("unbilled", "Unbilled (taken after the invoice was final)")

    @admin.display(description="Created (UTC)", ordering="created")
    def created_display(self, report):
        return format_html('<span class="epsilon-period">{}</span>', f"{report.created:%Y-%m-%d %H:%M}")

    @admin.display(description="Customer", ordering="customer_id")
    def customer_display(self, report):
        return customer_cell(report.customer_id, _mirrored(report, "customer"), report.livemode)

    @admin.display(description="Sent (units)", ordering="value_sent")
    def value_display(self, report):
        return format_html(
            '<span class="epsilon-number" title="{} of {} counted up to {} UTC; {}">{}</span>',
            signed(report.value_sent), units(report.usage_total), f"{report.usage_until:%Y-%m-%d %H:%M}", UNIT_HELP,
            signed(report.value_sent),
        )

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

    @admin.display(description="Period (UTC)", ordering="period_start")
    def period_display(self, report):
        return period_cell(report.period_start, report.period_end)


@admin.register(PeriodReconciliation)
class PeriodReconciliationAdmin(AuditReadOnlyMixin, ReconcileMixin, admin.ModelAdmin):
    """Source, ledger and Stripe per customer, meter and period: read-only, as checked."""

    list_display = [
        "checked_at", "customer_display", "period_display", "checked_until", "source_display", "ledger_display",
        "stripe_display", "drift_display", "status_display", "correction_link",
    ]
    list_filter = ["status", ("meter", admin.RelatedOnlyFieldListFilter), "livemode"]
    search_fields = ["customer__id"]  # searched in get_search_results, without a join
    search_help_text = "A Stripe customer id, or a customer email."
    list_select_related = ["meter", "correction"]
    list_per_page = 50
    readonly_fields = [
        "customer_display", "meter_link", "livemode", "period_start", "period_end", "usage_until",
        "source_display", "ledger_display", "stripe_display", "drift_display", "unreported_display", "status_display",
        "error", "correction_link", "checked_at",
    ]
    fields = readonly_fields

    class Media:
        css = ADMIN_CSS

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("customer")  # unmirrored customers kept

    def reconcile_customer_ids(self, queryset):
        return queryset.values_list("customer_id", flat=True)

    def get_search_results(self, request, queryset, search_term):
        return search_by_customer(queryset, search_term)

    @admin.display(description="Customer", ordering="customer_id")
    def customer_display(self, result):
        return customer_cell(result.customer_id, _mirrored(result, "customer"), result.livemode)

    @admin.display(description="Stripe meter")
    def meter_link(self, result):
        return stripe_link(result.meter_id, result.livemode, str(result.meter))

    @admin.display(description="Billing period (UTC)", ordering="period_start")
    def period_display(self, result):
        return period_cell(result.period_start, result.period_end)

    @admin.display(description="Checked up to", ordering="usage_until")
    def checked_until(self, result):
        return format_html('<span class="epsilon-period">{}</span>', f"{result.usage_until:%Y-%m-%d %H:%M}")

    source_display = figure_column("source_total", "Source")
    ledger_display = figure_column("ledger_units", "Ledger")
    stripe_display = figure_column("stripe_units", "Stripe")
    drift_display = figure_column("drift", "Drift (Stripe − ledger)", signed)
    unreported_display = figure_column("unreported_units", "Usage not reported")

    @admin.display(description="Status", ordering="status")
    def status_display(self, result):
        return status_badge(result.status, result.get_status_display(), result.error)

    @admin.display(description="Correction")
    def correction_link(self, result):
        if result.correction_id is None:
            return "-"
        url = reverse("admin:billing_usagereport_change", args=[result.correction_id])
        return format_html('<a href="{}">report #{}</a>', url, result.correction_id)


def customer_cell(customer_id: str, customer, livemode):
    """A customer as an operator knows it: name and email, with its Stripe id linked."""
    name = (customer.name or customer.email or "") if customer else ""
    email = customer.email if customer and customer.name and customer.email != customer.name else ""
    return format_html(
        '<span class="epsilon-who"><b>{}</b> <small>{}</small><br><small>{}</small></span>',
        name or customer_id, email, stripe_link(customer_id, livemode),
    )


def period_cell(start, end):
    """A period on one line: the year once when both ends share it."""
    end_format = "%m-%d %H:%M" if start.year == end.year else "%Y-%m-%d %H:%M"
    return format_html('<span class="epsilon-period">{} → {}</span>', f"{start:%Y-%m-%d %H:%M}", end.strftime(end_format))


def _mirrored(report, field_name):
    """The mirrored dj-stripe object, or None when the ledger outlives the mirror."""
    try:
        return getattr(report, field_name)
    except ObjectDoesNotExist:
        return None


# --- dj-stripe's admins, with usage, the ledger, Stripe links and actions ----------


class StripeLinkMixin:
    """
    dj-stripe's admin for objects mirrored from Stripe: read here, changed in Stripe.
    Nothing is added, edited or deleted (a change here would not reach Stripe and the
    next sync would undo it); pages are titled by the object's name and id, and link to
    its dashboard page, test or live, without the account id.
    """

    change_form_template = "admin/billing/stripe_change_form.html"
    #: Fields shown on the change page, all read-only; None keeps dj-stripe's own.
    mirrored_fields: tuple | None = None

    class Media:
        css = ADMIN_CSS

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_fieldsets(self, request, obj=None):
        if self.mirrored_fields is None:
            return super().get_fieldsets(request, obj)
        return [("Mirrored from Stripe (change it in Stripe)", {"fields": self.mirrored_fields})]

    def get_readonly_fields(self, request, obj=None):
        if self.mirrored_fields is None:
            return super().get_readonly_fields(request, obj)
        return self.mirrored_fields

    def get_inlines(self, request, obj):
        # dj-stripe's inlines repeat mirrored fields the usage panel states better.
        return [] if self.mirrored_fields is not None else super().get_inlines(request, obj)

    def get_list_display(self, request):
        return [*super().get_list_display(request), "stripe_dashboard_link"]

    @admin.display(description="Stripe")
    def stripe_dashboard_link(self, obj):
        return stripe_link(obj.id, obj.livemode, "dashboard")

    def page_title(self, obj) -> tuple[str, str]:
        """The change page's title and subtitle: what the object is called, and its id."""
        return f"{self.model._meta.verbose_name.capitalize()} {obj.id}", ""

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, object_id)
        extra_context = {**(extra_context or {}), **self.billing_context(request, obj)}
        if obj is not None:
            extra_context["title"], extra_context["subtitle"] = self.page_title(obj)
        return super().change_view(request, object_id, form_url, extra_context)

    def billing_context(self, request, obj):
        return {"epsilon_stripe_url": stripe_url(obj.id, obj.livemode) if obj else ""}


def customer_label(customer) -> str:
    """A customer as an operator names it: its name, else its email, else its id."""
    return (customer.name or customer.email or customer.id) if customer else ""


class UsageColumnsMixin(StripeLinkMixin):
    """
    Usage this period on the list (one batched source call per meter for the whole
    page) and a usage panel with charts on the change page.
    """

    #: "customer_ids" or "subscription_ids"; and the target attribute that matches it.
    report_usage_scope: str
    usage_key: str

    def get_changelist_instance(self, request):
        changelist = super().get_changelist_instance(request)
        ids = [obj.id for obj in changelist.result_list]  # evaluates the page once, kept
        by_id = admin_selectors.usage_by(self.usage_key, admin_selectors.item_usages(**{self.report_usage_scope: ids}))
        errors = set()
        for obj in changelist.result_list:
            obj.epsilon_usages = by_id.get(obj.id, [])
            errors.update(u.error for u in obj.epsilon_usages if u.error)
        if request.method == "GET":  # an action's own messages say what went wrong there
            for error in sorted(errors):
                messages.warning(request, f"Usage this period is not shown: {error}")
        return changelist

    #: The name column first, then usage, estimate and state; then these of dj-stripe's.
    name_column: str
    trailing_columns: tuple = ("id", "created")

    def get_list_display(self, request):
        # dj-stripe's owner account, subscriber, currency and payment method columns
        # are not what an operator looks for here: usage, estimate, state, then ids.
        return [
            self.name_column, "usage_this_period", "estimate_this_period", "report_state",
            *self.trailing_columns, "stripe_dashboard_link",
        ]

    @admin.display(description="Usage this period")
    def usage_this_period(self, obj):
        return _per_item(obj, _usage_cell)

    @admin.display(description="Estimate")
    def estimate_this_period(self, obj):
        return _per_item(obj, lambda u: money(u.estimate_cents, u.currency))

    @admin.display(description="Latest report")
    def report_state(self, obj):
        return _per_item(obj, _state_cell)

    def billing_context(self, request, obj):
        context = super().billing_context(request, obj)
        if obj is None:
            return context
        opts = self.model._meta
        refresh = request.GET.get("stripe") == "refresh"  # the operator asks for fresh figures
        usages = admin_selectors.item_usages(**{self.report_usage_scope: [obj.id]}, charts=True)
        stripe_reads.add_stripe_figures(usages, refresh=refresh)
        previews = stripe_reads.invoice_previews([u.target for u in usages], refresh=refresh)
        for usage in usages:
            usage.preview = previews.get(usage.target.subscription_id)
        customer_id = obj.id if isinstance(obj, Customer) else (obj.customer.id if obj.customer else "")
        return {
            **context,
            "epsilon_usage_panel": True,
            "epsilon_usages": usages,
            "epsilon_invoices": stripe_reads.invoice_history(customer_id) if customer_id else [],
            "epsilon_refresh_url": f"{request.path}?stripe=refresh",
            "epsilon_schedule": admin_selectors.schedule_state(),
            "epsilon_report_url": (
                reverse(f"admin:{opts.app_label}_{opts.model_name}_report_usage", args=[obj.pk])
                if self.has_report_usage_permission(request) else ""
            ),
        }


def _per_item(obj, cell):
    """One line per metered item of a customer or subscription on the list."""
    usages = getattr(obj, "epsilon_usages", None)
    if not usages:
        return "-"
    return format_html_join(mark_safe("<br>"), "{}", ((cell(u),) for u in usages))


def _usage_cell(usage):
    if usage.error:
        return format_html('<span class="epsilon-error" title="{}">⚠ usage unknown</span>', usage.error)
    unsent = usage.unsent_units
    return format_html(
        '<span class="epsilon-cell-usage" title="{}"><b>{}</b> <small>{}</small></span>',
        UNIT_HELP, units(usage.used_units),
        f"{signed(unsent)} not at Stripe yet" if unsent else "all at Stripe",
    )


def _state_cell(usage):
    last = usage.ledger.last_report
    if last is None:
        return mark_safe('<span class="quiet">none yet</span>')
    return status_badge(last.status, last.get_status_display(), usage.problem or last.error)


admin.site.unregister(Customer)
admin.site.unregister(Subscription)
admin.site.unregister(Price)
admin.site.unregister(Product)


@admin.register(Customer)
class CustomerAdmin(ReportUsageNowMixin, ReconcileMixin, UsageColumnsMixin, DjstripeCustomerAdmin):
    report_usage_scope = "customer_ids"
    usage_key = "customer_id"
    name_column = "customer_name"
    mirrored_fields = ("id", "name", "email", "description", "currency", "metadata", "livemode", "created")

    @admin.display(description="Customer", ordering="email")
    def customer_name(self, customer):
        return format_html("<b>{}</b><br><small>{}</small>", customer_label(customer), customer.email if customer.name else "")

    def page_title(self, customer):
        return f"Customer {customer_label(customer)}", " · ".join(filter(None, [customer.id, customer.email]))

    def reconcile_customer_ids(self, queryset):
        return queryset.values_list("id", flat=True)


@admin.register(Subscription)
class SubscriptionAdmin(ReportUsageNowMixin, UsageColumnsMixin, DjstripeSubscriptionAdmin):
    report_usage_scope = "subscription_ids"
    usage_key = "subscription_id"
    name_column = "subscription_name"
    trailing_columns = ("status", "id", "created")
    list_select_related = ["customer"]
    # The current period lives on the items since Stripe's 2025 API: the panel shows it.
    mirrored_fields = ("id", "customer", "status", "collection_method", "cancel_at_period_end", "metadata", "livemode", "created")

    @admin.display(description="Subscription", ordering="customer__email")
    def subscription_name(self, subscription):
        customer = subscription.customer
        return format_html(
            "<b>{}</b><br><small>{}</small>", customer_label(customer) or subscription.id,
            customer.email if customer and customer.name else "",
        )

    def page_title(self, subscription):
        who = customer_label(subscription.customer)
        return (f"Subscription of {who}" if who else f"Subscription {subscription.id}"), f"{subscription.id} · {subscription.status}"


@admin.register(Price)
class PriceAdmin(StripeLinkMixin, DjstripePriceAdmin):
    def page_title(self, price):
        return f"Price {price.nickname or price.lookup_key or price.id}", f"{price.id} · {price.human_readable_price}"


@admin.register(Product)
class ProductAdmin(StripeLinkMixin, DjstripeProductAdmin):
    def page_title(self, product):
        return f"Product {product.name}", product.id
