"""
Epsilon's own tables: the Stripe billing meters (dj-stripe has no Meter model)
and the UsageReport ledger of every usage report sent, or about to be sent, to Stripe.
"""

from django.db import models
from django.db.models import F, Q

from epsilon.timewindows import WindowSize  # noqa: F401 - billing's models use it; kept importable here

from . import stripe_dashboard
from .units import whole_units

USAGE_DECIMAL = {"max_digits": 24, "decimal_places": 6}


def stripe_reference(model: str, related_name: str) -> models.ForeignKey:
    """A column holding a mirrored object's Stripe id, joinable, but not a database FK."""
    return models.ForeignKey(
        model, to_field="id", db_constraint=False, on_delete=models.DO_NOTHING, related_name=related_name
    )


class Meter(models.Model):
    """
    A Stripe billing meter, mirrored, and how Epsilon measures its usage:
    which usage-source meter feeds it and in which windows.
    """

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        INACTIVE = "inactive", "Inactive"

    id = models.CharField("Stripe meter id", max_length=255, primary_key=True)
    livemode = models.BooleanField(default=False)
    display_name = models.CharField(max_length=250)
    event_name = models.CharField(
        max_length=100, help_text="The meter event name usage is reported under."
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    aggregation_formula = models.CharField(max_length=16, default="sum")
    event_time_window = models.CharField(
        max_length=8, blank=True,
        help_text="Stripe's event time window (hour or day), if any: Epsilon refuses such meters.",
    )
    customer_payload_key = models.CharField(max_length=100, default="stripe_customer_id")
    value_payload_key = models.CharField(max_length=100, default="value")
    source_meter_slug = models.SlugField(
        max_length=100,
        help_text="The usage source's meter (OpenMeter slug) that measures this usage.",
    )
    window_size = models.CharField(
        max_length=8,
        choices=WindowSize.choices,
        default=WindowSize.HOUR,
        help_text="Billing periods are rounded down to this window before reporting.",
    )
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["display_name"]
        constraints = [
            models.UniqueConstraint(
                fields=["livemode", "event_name"],
                condition=Q(status="active"),
                name="billing_meter_one_active_per_event_name",
            ),
        ]

    def __str__(self):
        return f"{self.display_name} ({self.source_meter_slug})"

    def get_stripe_dashboard_url(self) -> str:
        return stripe_dashboard.url_for(self.id, self.livemode)


class ReportStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"
    # Late usage of a period whose invoice Stripe had finalized: not sent into it, but
    # counted, and billed with the customer's next period (its carry_in).
    CARRIED = "carried", "Carried to the next period"
    # Accepted by Stripe, then dropped by its asynchronous validation (an error report):
    # not counted, so the period's next report sends the usage again.
    REJECTED = "rejected", "Rejected by Stripe"
    # Late usage of a finalized period under EPSILON["LATE_USAGE"] = "record": kept in
    # the ledger for an operator, not sent and not counted, so it is billed nowhere.
    LATE = "late", "Late: recorded, not billed"


# What a run did for one period, as printed and summed: a row's status, or one of the
# two outcomes that leave no row of their own (a dry run; another row in flight).
OutcomeStatus = models.TextChoices(
    "OutcomeStatus",
    [(status.name, (status.value, status.label)) for status in ReportStatus]
    + [("DRY_RUN", ("dry-run", "Dry run: would send")), ("IN_FLIGHT", ("in-flight", "Another report in flight"))],
)


class ReportTrigger(models.TextChoices):
    SCHEDULE = "schedule", "Schedule"
    ADMIN = "admin", "Admin"
    COMMAND = "command", "Command"
    WEBHOOK = "webhook", "Webhook"
    # A compensating event that brings Stripe back to what the ledger sent; it is not
    # part of the period's running total (see selectors.sent_total).
    RECONCILE = "reconcile", "Reconciliation"


class UsageReport(models.Model):
    """
    One usage report of a customer on a meter, for one Stripe billing period.

    The ledger counts what Stripe sums: meter events per (meter, customer), billed on
    the invoice whose period contains their timestamp. A ledger period is one Stripe
    billing period of that customer's item on that meter, known by its exact start
    (`billing_start`), whatever item, price or window the rows were made with, so a
    replaced item, a changed window size or a second run can never open the same usage
    twice. A period may be reported several times as usage accrues: each row sends only
    what its whole units add to earlier rows. Rows of one (meter, customer, period) are
    numbered by `sequence`; the database refuses two rows with the same number and more
    than one row in flight, so two concurrent runs can never both send the same usage.
    The subscription, item and price a row was made for are kept for the audit.
    """

    Status = ReportStatus
    Trigger = ReportTrigger

    # The ledger keeps Stripe ids in its own columns (to_field="id") without database
    # foreign keys, so it outlives any change to dj-stripe's mirror of those objects.
    customer = stripe_reference("djstripe.Customer", "usage_reports")
    subscription = stripe_reference("djstripe.Subscription", "usage_reports")
    subscription_item = stripe_reference("djstripe.SubscriptionItem", "usage_reports")
    price = stripe_reference("djstripe.Price", "usage_reports")
    meter = models.ForeignKey(Meter, on_delete=models.PROTECT, related_name="usage_reports")
    livemode = models.BooleanField(default=False)
    # Snapshots of the meter's configuration when the report was made.
    source_meter_slug = models.SlugField(max_length=100)
    window_size = models.CharField(max_length=8, choices=WindowSize.choices)

    billing_start = models.DateTimeField(
        help_text="Start of Stripe's billing period of the item (UTC, exact): the ledger "
        "period's identity."
    )
    billing_end = models.DateTimeField(
        help_text="End of Stripe's billing period, or of the item's service when it ended "
        "earlier (UTC, exclusive), as known when the report was made."
    )
    period_start = models.DateTimeField(
        help_text="Start of the usage counted (UTC, inclusive): the billing start rounded "
        "down to the window, or to the minute where service began."
    )
    period_end = models.DateTimeField(
        help_text="End of the usage counted (UTC, exclusive): the billing end rounded down "
        "to the window, or to the minute where service ended."
    )
    subject = models.CharField(
        max_length=255, blank=True, help_text="The usage source's subject the total was read for."
    )
    usage_until = models.DateTimeField(
        help_text="Usage is counted from period start up to this window boundary "
        "(exclusive); equals period end once the period has closed."
    )
    sequence = models.PositiveIntegerField(
        help_text="1 for the period's first report, 2 for the next, and so on."
    )
    usage_total = models.DecimalField(
        **USAGE_DECIMAL,
        null=True,
        blank=True,
        help_text="The source's period-to-date usage total (empty when the source "
        "could not say).",
    )
    usage_delta = models.DecimalField(
        **USAGE_DECIMAL,
        default=0,
        help_text="How much this row's total adds to the period's previous counted total: "
        "summed over a customer's rows, the usage the ledger has counted.",
    )
    carry_in = models.DecimalField(
        **USAGE_DECIMAL,
        default=0,
        help_text="Usage of the customer's earlier periods not yet billed as a whole unit "
        "(their fractions): added to this period's total before rounding down.",
    )
    value_sent = models.DecimalField(
        **USAGE_DECIMAL,
        help_text="Sent to Stripe as one meter event: carry plus total, in whole units, "
        "minus what earlier reports of this period sent (negative for a correction).",
    )
    unbilled = models.DecimalField(
        **USAGE_DECIMAL,
        default=0,
        help_text="Whole units of this period that Stripe's meter took after the period's "
        "invoice was finalized (an outage longer than the grace period), so no invoice "
        "billed them: carried to the customer's next period.",
    )
    identifier = models.CharField(
        max_length=100,
        unique=True,
        help_text="The meter event's identifier: deterministic, so a retry cannot double count.",
    )
    event_timestamp = models.DateTimeField(
        null=True, blank=True, help_text="The meter event's timestamp, inside the period."
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True)
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    attempts = models.PositiveIntegerField(default=0)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [
            models.Index(fields=["status", "created"]),
            models.Index(fields=["customer", "period_start"]),
            models.Index(fields=["meter", "customer", "billing_start"]),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["meter", "customer", "billing_start", "sequence"],
                name="usage_report_one_row_per_sequence",
            ),
            models.UniqueConstraint(
                fields=["meter", "customer", "billing_start"],
                condition=Q(status=ReportStatus.PENDING),
                name="usage_report_one_pending_per_period",
            ),
            models.CheckConstraint(
                condition=Q(billing_end__gt=F("billing_start")),
                name="usage_report_billing_period_not_empty",
            ),
            models.CheckConstraint(
                condition=Q(period_end__gt=F("period_start")),
                name="usage_report_period_not_empty",
            ),
            models.CheckConstraint(
                condition=Q(usage_until__gte=F("period_start"))
                & Q(usage_until__lte=F("period_end")),
                name="usage_report_usage_until_within_period",
            ),
            models.CheckConstraint(
                condition=Q(sequence__gte=1), name="usage_report_sequence_positive"
            ),
            models.CheckConstraint(
                condition=Q(status__in=ReportStatus.values),
                name="usage_report_status_valid",
            ),
            models.CheckConstraint(
                condition=~Q(status=ReportStatus.SENT) | Q(sent_at__isnull=False),
                name="usage_report_sent_has_sent_at",
            ),
        ]
        permissions = [
            ("report_usage_now", "Can report usage to Stripe now"),
            ("resolve_usage_report", "Can settle a usage report whose outcome is unknown"),
        ]

    # Reports whose value is part of the period's running total: sent, and not
    # reconciliation corrections (those restore Stripe to that total).
    COUNTS_TOWARD_TOTAL = Q(status=ReportStatus.SENT) & ~Q(trigger=ReportTrigger.RECONCILE)

    def __str__(self):
        return f"{self.customer_id} {self.meter_id} {self.period_start:%Y-%m-%d %H:%M} #{self.sequence}"

    @property
    def counts_toward_total(self) -> bool:
        return self.status == ReportStatus.SENT and self.trigger != ReportTrigger.RECONCILE

    def get_stripe_dashboard_url(self) -> str:
        return stripe_dashboard.url_for(self.customer_id, self.livemode)


class ReportDecision(models.Model):
    """
    A decision on a usage report whose outcome was unknown (its send was interrupted and
    no run could settle it): who decided, what, why, and what came of it. The ledger's
    own audit of every settlement that was not Stripe's answer to a send.
    """

    class Action(models.TextChoices):
        RESEND = "resend", "Resend with the same identifier (Stripe deduplicates it)"
        CANCEL = "cancel", "Cancel it at Stripe (meter event adjustment) and report again"
        METER_SUMMARY = "meter_summary", "Decide by Stripe's meter summary of the period"
        MARK_SENT = "mark_sent", "Mark sent: Stripe holds it (checked by the operator)"
        MARK_FAILED = "mark_failed", "Mark failed: Stripe does not hold it (checked by the operator)"

    report = models.ForeignKey(UsageReport, on_delete=models.PROTECT, related_name="decisions")
    action = models.CharField(max_length=16, choices=Action.choices)
    decided_by = models.CharField(max_length=150, help_text="The admin user, or the command and its OS user.")
    reason = models.TextField(blank=True)
    status_before = models.CharField(max_length=16, choices=ReportStatus.choices)
    status_after = models.CharField(max_length=16, choices=ReportStatus.choices)
    outcome = models.TextField(help_text="What happened, in words.")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self):
        return f"{self.get_action_display()} by {self.decided_by}"


class SubscriptionItemChange(models.Model):
    """
    A change Stripe made to a subscription item that ends its usage's span: the item
    removed (replaced by another, or dropped), or its price replaced.

    dj-stripe never deletes removed items from its mirror, so without this row a
    replaced item would go on being reported beside its replacement and bill the usage
    twice; and a price change keeps the item's id, so without it the usage before the
    change would be stamped after it, at the new price. Usage up to `at` belongs to the
    item (at its old price); usage from `at` to the replacement (or the new price).
    """

    class Kind(models.TextChoices):
        REMOVED = "removed", "Removed"
        PRICE = "price", "Price replaced"

    item_id = models.CharField("Stripe subscription item id", max_length=255)
    subscription_id = models.CharField(max_length=255)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    at = models.DateTimeField(
        help_text="When Stripe made the change: the event's time, the creation of the "
        "item that replaced it, or when the mirror first saw it."
    )
    old_price_id = models.CharField(max_length=255, blank=True)
    new_price_id = models.CharField(max_length=255, blank=True)
    detected_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at"]
        constraints = [
            models.UniqueConstraint(fields=["item_id", "kind", "at"], name="item_change_once"),
            models.UniqueConstraint(
                fields=["item_id"], condition=Q(kind="removed"), name="item_removed_once"
            ),
        ]

    def __str__(self):
        return f"{self.item_id} {self.get_kind_display().lower()} at {self.at:%Y-%m-%d %H:%M}"


class StripeEventDestination(models.Model):
    """
    The Stripe event destination (thin events) that tells Epsilon which meter events
    Stripe dropped after accepting them. Stripe shows its signing secret only once, on
    creation: it is kept here.
    """

    id = models.CharField("Stripe event destination id", max_length=255, primary_key=True)
    livemode = models.BooleanField(default=False)
    url = models.URLField(max_length=500)
    secret = models.CharField(max_length=255)
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"{self.id} -> {self.url}"


class FinalizedInvoiceLine(models.Model):
    """
    A subscription item's period on an invoice Stripe has finalized. After that Stripe
    never changes the invoice: usage of that period reported later would sit in the
    meter and on no invoice, so the ledger carries it to the customer's next period.
    """

    invoice_id = models.CharField(max_length=255)
    customer_id = models.CharField(max_length=255)
    subscription_item_id = models.CharField(max_length=255)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    quantity = models.DecimalField(
        max_digits=24, decimal_places=6, null=True, blank=True, help_text="The metered quantity Stripe billed."
    )
    finalized_at = models.DateTimeField()

    class Meta:
        ordering = ["-period_end"]
        constraints = [
            models.UniqueConstraint(
                fields=["invoice_id", "subscription_item_id", "period_start"], name="finalized_line_once"
            ),
        ]
        indexes = [models.Index(fields=["customer_id", "period_end"])]

    def __str__(self):
        return f"{self.invoice_id} {self.subscription_item_id} to {self.period_end:%Y-%m-%d %H:%M}"


class PeriodReconciliation(models.Model):
    """
    The latest comparison, for one customer, meter and window-aligned period, of the
    usage source's total, what the ledger sent, and what Stripe's meter event summaries
    hold. Drift is Stripe minus the ledger; a correction is a compensating meter event.
    """

    class Status(models.TextChoices):
        OK = "ok", "In agreement"
        DRIFT = "drift", "Drift"
        # Stripe agrees with the ledger, but the source has usage of this finished
        # period that no report counted (it arrived after the period was reported).
        UNREPORTED = "unreported", "Usage not reported"
        # Stripe's meter agrees with the ledger, but the period's finalized invoice
        # billed a different quantity (reports that reached Stripe after it was final).
        INVOICE = "invoice", "Invoice differs"
        CORRECTED = "corrected", "Corrected"
        UNKNOWN = "unknown", "Could not check"

    customer = stripe_reference("djstripe.Customer", "usage_reconciliations")
    meter = models.ForeignKey(Meter, on_delete=models.PROTECT, related_name="reconciliations")
    livemode = models.BooleanField(default=False)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    usage_until = models.DateTimeField(help_text="The ledger's last reported window end.")
    source_total = models.DecimalField(
        **USAGE_DECIMAL, null=True, blank=True,
        help_text="The source's total from period start to usage until.",
    )
    ledger_units = models.DecimalField(**USAGE_DECIMAL, help_text="Sent by the period's reports.")
    stripe_units = models.DecimalField(
        **USAGE_DECIMAL, null=True, blank=True, help_text="Stripe's meter event summary."
    )
    drift = models.DecimalField(
        **USAGE_DECIMAL, null=True, blank=True, help_text="Stripe minus the ledger."
    )
    status = models.CharField(max_length=16, choices=Status.choices)
    error = models.TextField(blank=True)
    correction = models.ForeignKey(
        UsageReport, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    checked_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-checked_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "meter", "period_start"],
                name="reconciliation_one_per_customer_meter_period",
            ),
        ]

    def __str__(self):
        return f"{self.customer_id} {self.meter_id} {self.period_start:%Y-%m-%d %H:%M}: {self.status}"

    @property
    def unreported_units(self):
        """Usage the source has that no report has sent yet (the next run sends it)."""
        if self.source_total is None:
            return None
        return whole_units(self.source_total) - self.ledger_units
