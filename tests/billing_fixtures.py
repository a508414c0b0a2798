"""A subscribed demo customer on the emulator, with a recorded usage source."""

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from djstripe.models import SubscriptionItem

from billing.models import UsageReport
from billing.services import stripe_setup, stripe_sync, usage_reporting
from billing.services.periods import AlignedPeriod
from tests.usage_doubles import RecordedUsage


class Billing:
    """The demo customer on the metered price, a usage source, and ways to look at Stripe."""

    def __init__(self, emulator, source):
        self.emulator = emulator
        self.source = source
        item = SubscriptionItem.objects.select_related("subscription__customer").get()
        self.item_id = item.id
        self.customer_id = item.subscription.customer.id
        self.subscription_id = item.subscription.id
        # The first period starts where service began (to the minute), as it is reported.
        self.period = AlignedPeriod.of(
            datetime.fromtimestamp(item.stripe_data["current_period_start"], UTC),
            datetime.fromtimestamp(item.stripe_data["current_period_end"], UTC),
            "HOUR",
            service_starts=item.stripe_data["created"] >= item.stripe_data["current_period_start"],
        )

    @property
    def hour0(self) -> datetime:
        """The hour the period began in: whole hours after it are the period's windows."""
        return self.period.start.replace(minute=0)

    def run(self, as_of, **options):
        options.setdefault("trigger", UsageReport.Trigger.COMMAND)
        return usage_reporting.report_usage(as_of=as_of, source=self.source, **options)

    def stripe_total(self, customer_id=None, start=None, end=None) -> Decimal:
        totals = self.emulator.meter_event_totals(
            customer=customer_id or self.customer_id,
            start=int(start.timestamp()) if start else None,
            end=int(end.timestamp()) if end else None,
        )
        return Decimal(totals["total"])

    def stripe_events(self):
        return self.emulator.meter_events(customer=self.customer_id)


def subscribe(emulator, days_ago: int) -> Billing:
    """The demo customer subscribed `days_ago` days ago at 13:45 UTC."""
    real_now = int(time.time())
    start = datetime.fromtimestamp(real_now, UTC).replace(hour=13, minute=45, second=0, microsecond=0)
    start -= timedelta(days=days_ago)
    emulator.set_time(int(start.timestamp()), freeze=True)
    stripe_setup.ensure_epsilon_objects(demo_customer=True)
    emulator.set_time(real_now, freeze=False)
    return Billing(emulator, RecordedUsage())


def subscribed_customers(emulator, count: int, *, started: datetime, email: str) -> list:
    """`count` customers subscribed to the metered price at `started` (the emulator's
    clock set there meanwhile), mirrored as the webhooks would: (customer, subscription) each."""
    real_now = int(time.time())
    emulator.set_time(int(started.timestamp()), freeze=True)
    stripe_setup.ensure_epsilon_objects()
    client = emulator.client()
    price = client.v1.prices.list({"lookup_keys": ["epsilon_execution_monthly"]}).data[0]
    made = []
    for n in range(count):
        customer = client.v1.customers.create({"email": email.format(n=n)})
        subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
        stripe_sync.sync_customer(customer)
        stripe_sync.sync_subscription(subscription)
        made.append((customer, subscription))
    emulator.set_time(real_now, freeze=False)
    return made
