"""
A subscription's whole life, end to end over HTTP, judged by what Stripe bills.

Each test puts customers on Stripe test clocks (on the local emulator), ingests Epsilon
executions into the embedded meter, changes subscriptions through Stripe's API (upgrades,
second subscriptions, cancellations, anchor resets, trials), moves the clocks past
period ends and grace hours so that Stripe's webhooks reach the running app, runs
`report_usage` where the hourly schedule would, and then reads the finalized invoices:
each period's line quantities, the emulator's meter event totals, and over the
subscription's life the floor of the total usage. Nothing lost, nothing billed twice.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO
from unittest import mock

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django_q.conf import Conf

from billing.models import Meter, UsageReport
from billing.services import stripe_setup, stripe_sync, webhook_endpoints
from embedded_meter import services as meter_services
from tests.factories import execution
from tests.stripe_webhooks import replay
from tests.usage_doubles import RecordedUsage

pytestmark = pytest.mark.django_db(transaction=True)

MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
UNIT_CENTS = Decimal(10)  # the Epsilon price: $0.10 a unit
UPGRADE_CENTS = Decimal(20)  # a second price on the same meter


# --- helpers -----------------------------------------------------------------------------


def ts(moment: datetime) -> int:
    return int(moment.timestamp())


def at(moment: int) -> datetime:
    return datetime.fromtimestamp(int(moment), UTC)


@dataclass
class Run:
    """One `report_usage` run: its printed lines and whether it exited with an error."""

    output: str
    failed: bool

    @property
    def lines(self) -> list[str]:
        return [line for line in self.output.splitlines() if line.startswith("stripe_customer:")]

    def of(self, customer_id: str) -> list[str]:
        return [line for line in self.lines if f"stripe_customer: {customer_id}," in line]


@dataclass
class Line:
    price: str
    quantity: int
    quantity_decimal: Decimal
    amount: int
    proration: bool
    subscription_item: str
    start: datetime
    end: datetime


def lines_of(invoice) -> list[Line]:
    out = []
    for line in invoice.lines.data:
        details = line.parent.subscription_item_details
        out.append(Line(
            price=line.pricing.price_details.price,
            quantity=line.quantity,
            quantity_decimal=Decimal(line.quantity_decimal),
            amount=line.amount,
            proration=bool(details.proration),
            subscription_item=details.subscription_item,
            start=at(line.period.start),
            end=at(line.period.end),
        ))
    return out


class World:
    """The app live behind Stripe (the emulator): clocks, customers, prices, subscriptions."""

    def __init__(self, live_server, emulator):
        self.live_server = live_server
        self.emulator = emulator
        self.client = emulator.client()
        stripe_setup.ensure_epsilon_objects()
        self.price = self.client.v1.prices.list({"lookup_keys": [settings.EPSILON["PRICE_LOOKUP_KEY"]]}).data[0]
        self.meter_id = self.price.recurring.meter
        self.live = False
        # Subscriptions begin at 13:45 two days ago (a Stripe period ends at 13:45, its
        # hour windows at 13:00); the clocks then move into the future, so every meter
        # event stays within Stripe's 35 days of the real time the app also reads.
        real_now = datetime.now(UTC)
        self.t0 = (real_now - 2 * DAY).replace(hour=13, minute=45, second=0, microsecond=0)

    def day(self, n: int, hour: int = 0, minute: int = 0) -> datetime:
        """Midnight of day n of the subscription (day 0: the day it began), plus a time."""
        return self.t0.replace(hour=0, minute=0) + n * DAY + timedelta(hours=hour, minutes=minute)

    # Stripe objects (mirrored by hand before the app is live, by webhooks after)

    def new_clock(self, start: datetime | None = None):
        start = start or self.t0
        return self.client.v1.test_helpers.test_clocks.create({"frozen_time": ts(start), "name": "lifecycle"})

    def new_customer(self, clock, email: str, metadata: dict | None = None):
        params = {"email": email, "test_clock": clock.id}
        if metadata:
            params["metadata"] = metadata
        customer = self.client.v1.customers.create(params)
        self.settle()
        stripe_sync.sync_customer(customer)
        return customer

    def new_price(self, unit_cents: Decimal = UPGRADE_CENTS):
        """Another monthly metered price of the Epsilon product, on the same meter."""
        price = self.client.v1.prices.create({
            "product": self.price.product, "currency": "usd", "unit_amount_decimal": str(unit_cents),
            "recurring": {"interval": "month", "usage_type": "metered", "meter": self.meter_id},
            "nickname": f"Epsilon at {unit_cents} cents",
        })
        stripe_sync.sync_price(price)
        return price

    def subscribe(self, customer, price=None, **params):
        subscription = self.client.v1.subscriptions.create(
            {"customer": customer.id, "items": [{"price": (price or self.price).id}], **params}
        )
        self.settle()
        stripe_sync.sync_subscription(self.client.v1.subscriptions.retrieve(subscription.id))
        return subscription

    def go_live(self):
        """Stripe's webhooks reach the live server from here on. Last in a setup: its
        writes would race this thread's on SQLite's shared in-memory database, so every
        step below waits for the deliveries before the test touches the database."""
        webhook_endpoints.ensure_webhook_endpoint(self.live_server.url)
        self.live = True

    def settle(self):
        assert self.emulator.wait_idle(timeout=30), "webhooks still being delivered"
        assert self.emulator.flush_webhooks(timeout=30), "webhooks still being delivered"

    def advance(self, clock, moment: datetime):
        self.emulator.advance_test_clock(clock.id, ts(moment), timeout=30)
        self.settle()

    def update(self, subscription_id: str, params: dict):
        updated = self.client.v1.subscriptions.update(subscription_id, params)
        self.settle()
        return updated

    def cancel(self, subscription_id: str, params: dict | None = None):
        canceled = self.client.v1.subscriptions.cancel(subscription_id, params or {})
        self.settle()
        return canceled

    def subscription(self, subscription_id: str):
        return self.client.v1.subscriptions.retrieve(subscription_id)

    def period_end(self, subscription_id: str) -> datetime:
        return at(self.subscription(subscription_id)["items"]["data"][0].current_period_end)

    # usage, reports, what Stripe holds

    @staticmethod
    def ingest(*events):
        meter_services.ingest_events(list(events))

    def report(self, **options) -> Run:
        """`report_usage`, where the schedule would run (each customer at its clock's time)."""
        out = StringIO()
        try:
            call_command("report_usage", stdout=out, **options)
        except CommandError:
            return Run(out.getvalue(), True)
        return Run(out.getvalue(), False)

    def report_ok(self) -> Run:
        run = self.report()
        assert not run.failed, run.output
        return run

    def stripe_total(self, customer_id: str) -> Decimal:
        return Decimal(self.emulator.meter_event_totals(customer=customer_id)["total"])

    def meter_events(self, customer_id: str) -> list[dict]:
        return self.emulator.meter_events(customer=customer_id)

    def invoices(self, customer_id: str, subscription_id: str | None = None) -> list:
        params = {"customer": customer_id, "limit": 100}
        if subscription_id:
            params["subscription"] = subscription_id
        return sorted(self.client.v1.invoices.list(params).data, key=lambda i: (i.created, i.period_end))

    def finalized(self, customer_id: str, subscription_id: str | None = None) -> list:
        invoices = self.invoices(customer_id, subscription_id)
        assert all(i.status in ("open", "paid") for i in invoices), [(i.id, i.status) for i in invoices]
        return invoices

    @staticmethod
    def ledger() -> str:
        """The ledger, one row a line: for failure messages."""
        rows = UsageReport.objects.order_by("customer_id", "billing_start", "sequence")
        return "\n".join(
            f"{r.customer_id} {r.subscription_item_id} {r.billing_start:%m-%d %H:%M}..{r.billing_end:%m-%d %H:%M} "
            f"[{r.period_start:%m-%d %H:%M}, {r.usage_until:%m-%d %H:%M}) #{r.sequence} {r.trigger} {r.status} "
            f"total={r.usage_total} sent={r.value_sent} {r.error[:60]}"
            for r in rows
        )

    def sent_identifiers(self) -> list[str]:
        return sorted(UsageReport.objects.filter(status="sent").values_list("identifier", flat=True))

    def replay_all(self) -> list[int]:
        """Deliver every stored Stripe event again, as Stripe would on a retry."""
        codes = [replay(event) for event in self.emulator.events() if event["type"] in ENDPOINT_EVENTS]
        self.settle()
        return codes


ENDPOINT_EVENTS = set(webhook_endpoints.ENABLED_EVENTS)


def quantities(invoice) -> dict[str, int]:
    """Quantity per price on an invoice."""
    out = {}
    for line in lines_of(invoice):
        out[line.price] = out.get(line.price, 0) + line.quantity
    return out


def total_quantity(invoices) -> int:
    return sum(line.quantity for invoice in invoices for line in lines_of(invoice))


@pytest.fixture
def world(live_server, stripe_emulated, monkeypatch):
    monkeypatch.setattr(Conf, "SYNC", True)  # django-q2 runs each queued report inline
    return World(live_server, stripe_emulated)


def single_customer(world, **subscription_params):
    clock = world.new_clock()
    customer = world.new_customer(clock, "lifecycle@example.com")
    subscription = world.subscribe(customer, **subscription_params)
    return clock, customer, subscription


# --- 1. upgrades ---------------------------------------------------------------------------


def test_an_upgrade_replacing_the_price_bills_usage_before_it_at_the_old_price_and_after_at_the_new(world):
    clock, customer, subscription = single_customer(world)
    assert subscription.billing_mode.type == "flexible"  # the default for the app's API version
    upgrade = world.new_price()
    item_id = subscription["items"]["data"][0].id
    world.go_live()
    end = world.period_end(subscription.id)
    change = world.day(5, 10, 30)
    world.ingest(
        execution("a", customer.id, world.day(1, 10), 30),
        execution("b", customer.id, change - 20 * MINUTE, 4),  # 10:10: the last, partial window before it
        execution("c", customer.id, change + 2 * HOUR, 7),
        execution("d", customer.id, world.day(20, 9), 5),
    )

    world.advance(clock, change - 15 * MINUTE)
    world.report_ok()  # the 10:00 schedule: up to 10:00
    world.advance(clock, change)
    world.update(subscription.id, {"items": [{"id": item_id, "price": upgrade.id}]})  # create_prorations
    for moment in (change + 30 * MINUTE, world.day(21)):
        world.advance(clock, moment)
        world.report_ok()
    world.advance(clock, end + 10 * MINUTE)
    world.advance(clock, end + 2 * HOUR)

    [invoice] = world.finalized(customer.id)
    assert world.stripe_total(customer.id) == 46
    assert total_quantity([invoice]) == 46, "every second billed once"
    by_price = {(line.price, line.proration): line for line in lines_of(invoice)}
    removal, new = by_price[(world.price.id, True)], by_price[(upgrade.id, False)]
    assert (removal.start, removal.end) == (world.t0, change)
    # Usage before the change is billed at the old price, on the flexible-mode removal
    # line, including the 10:00-10:30 window; the usage after it at the new price.
    assert (removal.quantity, new.quantity) == (30 + 4, 7 + 5)
    assert Decimal(invoice.total) == 34 * UNIT_CENTS + 12 * UPGRADE_CENTS


def test_an_item_removed_and_a_new_item_added_bill_each_side_of_the_change_once(world):
    clock, customer, subscription = single_customer(world)
    upgrade = world.new_price()
    old_item = subscription["items"]["data"][0].id
    world.go_live()
    end = world.period_end(subscription.id)
    change = world.day(5, 10, 30)
    world.ingest(
        execution("a", customer.id, world.day(1, 10), 30),
        execution("b", customer.id, change - 20 * MINUTE, 4),
        execution("c", customer.id, change + 2 * HOUR, 7),
        execution("d", customer.id, world.day(20, 9), 5),
    )

    world.advance(clock, change - 15 * MINUTE)
    world.report_ok()
    world.advance(clock, change)
    updated = world.update(subscription.id, {"items": [{"id": old_item, "deleted": True}, {"price": upgrade.id}]})
    [new_item] = [i.id for i in updated["items"]["data"]]
    assert new_item != old_item
    runs = []
    for moment in (change + 30 * MINUTE, world.day(21)):
        world.advance(clock, moment)
        runs.append(world.report())
    world.advance(clock, end + 10 * MINUTE)
    world.advance(clock, end + 2 * HOUR)

    [invoice] = world.finalized(customer.id)
    lines = {line.subscription_item: line for line in lines_of(invoice)}
    assert world.stripe_total(customer.id) == 46, f"{lines_of(invoice)}\n{world.ledger()}"
    assert total_quantity([invoice]) == 46, "every second billed once"
    # The removed item's usage up to the change (to the minute), the new item's from it.
    assert (lines[old_item].price, lines[old_item].quantity) == (world.price.id, 30 + 4)
    assert (lines[new_item].price, lines[new_item].quantity) == (upgrade.id, 7 + 5)
    assert not any(r.failed for r in runs), [r.output for r in runs]


# --- 2. a second subscription on the same meter ------------------------------------------


def test_a_second_subscription_on_the_same_meter_sends_nothing_until_it_is_cancelled(world):
    clock = world.new_clock()
    customer = world.new_customer(clock, "two-subscriptions@example.com")
    other = world.new_customer(clock, "bystander@example.com")
    first = world.subscribe(customer)
    world.subscribe(other)
    first_item = first["items"]["data"][0].id
    world.go_live()
    end = world.period_end(first.id)
    world.ingest(
        execution("a1", customer.id, world.day(1, 10), 30),
        execution("a2", customer.id, world.day(6, 10), 9),  # while two subscriptions bill it
        execution("a3", customer.id, world.day(12, 10), 4),  # after the second is cancelled
        execution("b1", other.id, world.day(6, 11), 11),
    )

    world.advance(clock, world.day(5, 10))
    world.report_ok()
    assert world.stripe_total(customer.id) == 30
    world.advance(clock, world.day(5, 10, 30))
    second = world.subscribe(customer)
    second_item = second["items"]["data"][0].id

    world.advance(clock, world.day(7))
    conflicted = world.report()
    assert conflicted.failed
    failed = [line for line in conflicted.of(customer.id) if "status: failed" in line]
    assert failed and all(first_item in line and second_item in line for line in failed), conflicted.output
    assert not [line for line in conflicted.of(customer.id) if "status: sent" in line]
    assert world.stripe_total(customer.id) == 30, "nothing sent for the customer and meter"
    assert world.stripe_total(other.id) == 11, "other customers are reported as usual"
    assert [line for line in conflicted.of(other.id) if "status: failed" in line] == []

    world.advance(clock, world.day(10))
    world.cancel(second.id)  # without invoice_now: Stripe discards its metered usage
    world.report_ok()
    world.advance(clock, world.day(13))
    world.report_ok()
    world.advance(clock, end + 10 * MINUTE)
    world.advance(clock, end + 2 * HOUR)

    assert world.invoices(customer.id, second.id) == []
    [invoice] = world.finalized(customer.id, first.id)
    assert quantities(invoice) == {world.price.id: 30 + 9 + 4}, f"all the usage, once\n{world.ledger()}"
    assert world.stripe_total(customer.id) == 43
    [other_invoice] = world.finalized(other.id)
    assert quantities(other_invoice) == {world.price.id: 11}


# --- 3. cancellation -------------------------------------------------------------------------


def assert_nothing_changes(world, clock, customer_id, moments):
    """Later runs of the schedule and replayed webhooks send nothing more."""
    before = (world.stripe_total(customer_id), world.sent_identifiers(), len(world.meter_events(customer_id)))
    for moment in moments:
        world.advance(clock, moment)
        world.report_ok()
        world.report_ok()
    assert set(world.replay_all()) == {200}
    world.report_ok()
    after = (world.stripe_total(customer_id), world.sent_identifiers(), len(world.meter_events(customer_id)))
    assert after == before


def test_cancelling_now_with_invoice_now_bills_usage_up_to_the_cancel_and_nothing_after(world):
    clock, customer, subscription = single_customer(world)
    world.go_live()
    end = world.period_end(subscription.id)
    cancel = world.day(5, 10, 30)
    world.ingest(
        execution("a", customer.id, world.day(1, 10), 30),
        execution("b", customer.id, cancel - 20 * MINUTE, 4),  # the last partial window before it
        execution("c", customer.id, cancel + HOUR, 9),  # after the end of service
        execution("d", customer.id, world.day(12, 10), 5),
    )

    world.advance(clock, cancel - 15 * MINUTE)
    world.report_ok()
    world.advance(clock, cancel)
    world.cancel(subscription.id, {"invoice_now": True})
    world.advance(clock, cancel + 2 * HOUR)

    [invoice] = world.finalized(customer.id)
    assert (invoice.billing_reason, at(invoice.period_end)) == ("subscription_update", cancel)
    assert quantities(invoice) == {world.price.id: 30 + 4}
    assert world.stripe_total(customer.id) == 34
    assert_nothing_changes(world, clock, customer.id, [cancel + 3 * HOUR, world.day(13), end + 2 * HOUR])
    assert all(e["timestamp"] < ts(cancel) for e in world.meter_events(customer.id))
    assert len(world.invoices(customer.id)) == 1


def test_cancel_at_period_end_bills_the_last_period_up_to_its_end_and_nothing_after(world):
    clock, customer, subscription = single_customer(world)
    world.go_live()
    end = world.period_end(subscription.id)
    assert end.minute == 45
    world.ingest(
        execution("a", customer.id, world.day(1, 10), 30),
        execution("b", customer.id, end - 20 * MINUTE, 4),  # 13:25: no next period to take it
        execution("c", customer.id, end + 30 * MINUTE, 9),  # after the end of service
    )

    world.advance(clock, world.day(3))
    world.update(subscription.id, {"cancel_at_period_end": True})
    world.advance(clock, world.day(10))
    world.report_ok()
    world.advance(clock, end + 10 * MINUTE)
    assert world.subscription(subscription.id).status == "canceled"
    world.advance(clock, end + 2 * HOUR)

    [invoice] = world.finalized(customer.id)
    assert (invoice.billing_reason, at(invoice.period_end)) == ("subscription_cycle", end)
    assert quantities(invoice) == {world.price.id: 30 + 4}
    assert world.stripe_total(customer.id) == 34
    assert_nothing_changes(world, clock, customer.id, [end + 3 * HOUR, end + 5 * DAY])
    assert all(e["timestamp"] < ts(end) for e in world.meter_events(customer.id))
    assert len(world.invoices(customer.id)) == 1


def test_an_incomplete_expired_subscription_is_reported_up_to_its_end_and_nothing_after(world):
    clock, customer, subscription = single_customer(world)
    world.go_live()
    end = world.period_end(subscription.id)
    expired = world.day(5, 10, 30)
    world.ingest(
        execution("a", customer.id, world.day(1, 10), 30),
        execution("b", customer.id, expired - 20 * MINUTE, 4),
        execution("c", customer.id, expired + HOUR, 9),  # after the end of service
    )

    world.advance(clock, expired - 15 * MINUTE)
    world.report_ok()
    world.advance(clock, expired)
    world.emulator.set_subscription_status(subscription.id, "incomplete_expired")
    world.settle()
    world.advance(clock, expired + 2 * HOUR)
    world.report_ok()

    assert world.stripe_total(customer.id) == 34, "usage up to the end of service, to the minute"
    assert all(e["timestamp"] < ts(expired) for e in world.meter_events(customer.id))
    assert_nothing_changes(world, clock, customer.id, [expired + 3 * HOUR, world.day(12), end + 2 * HOUR])
    assert world.invoices(customer.id) == []  # an expired subscription is not invoiced


# --- 4. a failed close ------------------------------------------------------------------------


def test_a_period_whose_closing_report_failed_is_retried_by_the_next_run_within_the_grace_hour(world):
    clock, customer, subscription = single_customer(world)
    world.go_live()
    end = world.period_end(subscription.id)
    world.ingest(
        execution("a", customer.id, world.day(3, 10), 30),
        execution("b", customer.id, end - 90 * MINUTE, 6),  # 12:15: only the close reports it
        execution("c", customer.id, end - 20 * MINUTE, 4),  # 13:25: the next period's
    )
    world.advance(clock, world.day(10))
    world.report_ok()

    down = RecordedUsage()
    down.failing_meters["m1"] = "usage source unavailable (connection refused)"
    with mock.patch("billing.services.usage_reporting.get_usage_source", return_value=down):
        world.advance(clock, end + 10 * MINUTE)  # the webhooks' close fails
    failed = UsageReport.objects.filter(status="failed", trigger="webhook")
    assert failed.exists() and "unavailable" in failed.first().error
    assert world.stripe_total(customer.id) == 30
    [draft] = world.invoices(customer.id)
    assert draft.status == "draft"

    world.advance(clock, end + 15 * MINUTE)  # the 14:00 schedule, inside the grace hour
    world.report_ok()
    world.advance(clock, end + 2 * HOUR)

    [invoice] = world.finalized(customer.id)
    assert quantities(invoice) == {world.price.id: 30 + 6}
    world.advance(clock, world.day(10) + 31 * DAY)
    world.report_ok()
    next_end = world.period_end(subscription.id)
    world.advance(clock, next_end + 10 * MINUTE)
    world.advance(clock, next_end + 2 * HOUR)
    first, second = world.finalized(customer.id)
    assert quantities(second) == {world.price.id: 4}
    assert world.stripe_total(customer.id) == 40


# --- 5. fractions -----------------------------------------------------------------------------


def test_fractions_are_billed_in_whole_units_with_the_remainder_carried_to_the_next_period(world, monkeypatch):
    source = RecordedUsage()  # the embedded meter sums whole seconds; this one keeps fractions
    monkeypatch.setattr("billing.services.usage_reporting.get_usage_source", lambda: source)
    clock, customer, subscription = single_customer(world)
    world.go_live()
    usage = [Decimal("10.4"), Decimal("0.3"), Decimal("5.6"), Decimal("2.9")]
    source.add(customer.id, world.day(2, 10), usage[0])
    source.add(customer.id, world.day(20, 10), usage[1])
    world.advance(clock, world.day(21))
    world.report_ok()
    billed = []

    def close_period():
        end = world.period_end(subscription.id)
        world.advance(clock, end + 10 * MINUTE)
        world.advance(clock, end + 2 * HOUR)
        invoice = world.finalized(customer.id)[-1]
        assert at(invoice.period_end) == end
        # Each invoice bills whole units: Stripe was never sent a fraction.
        assert all(line.quantity_decimal == line.quantity for line in lines_of(invoice))
        billed.append(quantities(invoice)[world.price.id])
        return end

    end = close_period()
    for amount in usage[2:]:
        source.add(customer.id, end + 5 * DAY, amount)
        world.advance(clock, end + 6 * DAY)
        world.report_ok()
        end = close_period()

    # 10.7 -> 10 (0.7 carried); 0.7 + 5.6 = 6.3 -> 6 (0.3 carried); 0.3 + 2.9 = 3.2 -> 3.
    assert billed == [10, 6, 3]
    assert world.stripe_total(customer.id) == 19 == int(sum(usage))  # the floor of the life's total


# --- 6. usage before the subscription began ------------------------------------------------------


def test_usage_from_before_the_subscription_began_in_the_same_hour_is_not_billed(world):
    clock, customer, subscription = single_customer(world)  # subscribed at 13:45
    world.go_live()
    end = world.period_end(subscription.id)
    world.ingest(
        execution("before", customer.id, world.t0 - 25 * MINUTE, 8),  # 13:20, before the subscription
        execution("after", customer.id, world.t0 + 5 * MINUTE, 5),  # 13:50
        execution("later", customer.id, world.day(3, 10), 10),
    )
    world.advance(clock, world.day(5))
    world.report_ok()
    world.advance(clock, end + 10 * MINUTE)
    world.advance(clock, end + 2 * HOUR)

    [invoice] = world.finalized(customer.id)
    assert quantities(invoice) == {world.price.id: 5 + 10}
    assert world.stripe_total(customer.id) == 15


# --- 7. anchor resets and trials ----------------------------------------------------------------


def test_billing_cycle_anchor_now_mid_period_bills_each_period_once(world):
    clock, customer, subscription = single_customer(world)
    world.go_live()
    reset = world.day(10, 16, 20)
    world.ingest(
        execution("a", customer.id, world.day(3, 10), 30),
        execution("b", customer.id, reset - 10 * MINUTE, 4),  # 16:10: the new period's first window
        execution("c", customer.id, world.day(15, 10), 7),
    )
    world.advance(clock, world.day(8))
    world.report_ok()
    world.advance(clock, reset)
    world.update(subscription.id, {"billing_cycle_anchor": "now"})
    assert at(world.subscription(subscription.id)["items"]["data"][0].current_period_start) == reset
    world.advance(clock, reset + 2 * HOUR)
    world.advance(clock, world.day(16))
    world.report_ok()
    end = world.period_end(subscription.id)
    world.advance(clock, end + 10 * MINUTE)
    world.advance(clock, end + 2 * HOUR)

    first, second = world.finalized(customer.id)
    assert (first.billing_reason, at(first.period_end)) == ("subscription_update", reset)
    assert (at(second.period_start), at(second.period_end)) == (reset, end)
    assert [quantities(i) for i in (first, second)] == [{world.price.id: 30}, {world.price.id: 4 + 7}]
    assert world.stripe_total(customer.id) == 41


def test_a_trial_ending_starts_a_paid_period_billed_once(world):
    clock, customer, subscription = single_customer(world, trial_period_days=7)
    assert subscription.status == "trialing"
    world.go_live()
    trial_end = world.t0 + 7 * DAY
    world.ingest(
        execution("trial", customer.id, world.day(2, 10), 20),  # Stripe bills no trial usage
        execution("a", customer.id, trial_end + DAY, 9),
        execution("b", customer.id, trial_end + 10 * DAY, 3),
    )
    world.advance(clock, world.day(5))
    world.report_ok()
    world.advance(clock, trial_end + 10 * MINUTE)
    assert world.subscription(subscription.id).status == "active"
    world.advance(clock, trial_end + 2 * HOUR)
    world.advance(clock, trial_end + 12 * DAY)
    world.report_ok()
    end = world.period_end(subscription.id)
    world.advance(clock, end + 10 * MINUTE)
    world.advance(clock, end + 2 * HOUR)

    trial, paid = world.finalized(customer.id)
    assert (at(trial.period_start), at(trial.period_end)) == (world.t0, trial_end)
    assert quantities(trial) == {world.price.id: 0}
    assert (at(paid.period_start), at(paid.period_end)) == (trial_end, end)
    assert quantities(paid) == {world.price.id: 9 + 3}
    # Each paid period reported once, none skipped; the trial's usage, which Stripe would
    # bill nothing for, is not sent at all.
    assert world.stripe_total(customer.id) == 9 + 3


def test_usage_in_the_last_partial_window_of_a_trial_is_not_billed(world):
    """Stripe bills no usage from a trial; the trial ends at 13:45, so its 13:00-13:45
    window is still trial time, though a rolling period would leave it to the next."""
    clock, customer, subscription = single_customer(world, trial_period_days=7)
    world.go_live()
    trial_end = world.t0 + 7 * DAY
    world.ingest(
        execution("trial", customer.id, trial_end - 20 * MINUTE, 6),  # 13:25, on the trial's last day
        execution("paid", customer.id, trial_end + DAY, 9),
    )
    world.advance(clock, trial_end + 10 * MINUTE)
    world.advance(clock, trial_end + 2 * HOUR)
    world.advance(clock, trial_end + 12 * DAY)
    world.report_ok()
    end = world.period_end(subscription.id)
    world.advance(clock, end + 10 * MINUTE)
    world.advance(clock, end + 2 * HOUR)

    trial, paid = world.finalized(customer.id)
    assert quantities(trial) == {world.price.id: 0}
    assert quantities(paid) == {world.price.id: 9}, world.ledger()


# --- 8. the meter's window edited mid-period ---------------------------------------------------------


def edit_the_window_mid_period(world, new_window):
    """A customer whose first period is reported in hours until the meter's window is
    edited on day 10: (clock, customer, subscription, the first period's end)."""
    clock, customer, subscription = single_customer(world)
    world.go_live()
    end = world.period_end(subscription.id)
    world.ingest(
        execution("a", customer.id, world.day(2, 10), 30),
        execution("b", customer.id, world.day(20, 10), 5),
        execution("c", customer.id, end - 3 * HOUR, 6),  # 10:45 on the last day
        execution("d", customer.id, end - 20 * MINUTE, 4),  # 13:25: after the hour-aligned end
        execution("e", customer.id, end + 2 * DAY, 7),
    )
    world.advance(clock, world.day(10))
    world.report_ok()
    Meter.objects.filter(id=world.meter_id).update(window_size=new_window)  # the admin's edit
    return clock, customer, subscription, end


@pytest.mark.parametrize("new_window", ["DAY", "MINUTE"])
def test_editing_the_window_size_mid_period_does_not_resend_the_period(world, new_window):
    clock, customer, subscription, end = edit_the_window_mid_period(world, new_window)
    world.advance(clock, world.day(21))
    world.report_ok()
    world.report_ok()
    assert world.stripe_total(customer.id) == 30 + 5
    assert all(Decimal(e["value"]) > 0 for e in world.meter_events(customer.id)), "no correction"
    world.advance(clock, end + 10 * MINUTE)
    world.advance(clock, end + 2 * HOUR)

    [invoice] = world.finalized(customer.id)
    # The period keeps its hour windows: up to 13:00, the 13:25 execution goes to the next.
    assert quantities(invoice) == {world.price.id: 30 + 5 + 6}, world.ledger()


@pytest.mark.parametrize("new_window", ["DAY", "MINUTE"])
def test_the_period_after_a_window_size_edit_starts_where_the_last_report_ended(world, new_window):
    clock, customer, subscription, end = edit_the_window_mid_period(world, new_window)
    world.advance(clock, end + 10 * MINUTE)  # closed up to 13:00, in its hour windows
    world.advance(clock, end + 2 * HOUR)
    world.advance(clock, end + 5 * DAY)
    world.report_ok()
    next_end = world.period_end(subscription.id)
    world.advance(clock, next_end + 10 * MINUTE)
    world.advance(clock, next_end + 2 * HOUR)

    first, second = world.finalized(customer.id)
    assert quantities(first) == {world.price.id: 30 + 5 + 6}
    # 13:00-13:45 of the last day was left to this period: in it once, with nothing before.
    assert world.stripe_total(customer.id) == 30 + 5 + 6 + 4 + 7, f"each execution billed once\n{world.ledger()}"
    assert quantities(second) == {world.price.id: 4 + 7}


# --- 9. the usage subject changed mid-period --------------------------------------------------------


def test_changing_the_usage_subject_mid_period_fails_clearly_instead_of_correcting(world, settings):
    settings.EPSILON = {**settings.EPSILON, "SUBJECT_METADATA_KEY": "epsilon_subject"}
    clock = world.new_clock()
    customer = world.new_customer(clock, "subject@example.com", metadata={"epsilon_subject": "acct-1"})
    subscription = world.subscribe(customer)
    world.go_live()
    end = world.period_end(subscription.id)
    world.ingest(
        execution("a", "acct-1", world.day(2, 10), 30),
        execution("b", "acct-1", world.day(8, 10), 5),
        execution("x", "acct-2", world.day(2, 10), 100),
        execution("y", "acct-2", world.day(8, 10), 7),
    )
    world.advance(clock, world.day(5))
    world.report_ok()
    assert world.stripe_total(customer.id) == 30

    world.advance(clock, world.day(6))
    world.client.v1.customers.update(customer.id, {"metadata": {"epsilon_subject": "acct-2"}})
    world.settle()
    stripe_sync.sync_customer(world.client.v1.customers.retrieve(customer.id))
    world.advance(clock, world.day(10))
    runs = [world.report(), world.report()]

    for run in runs:
        assert run.failed
        [line] = run.of(customer.id)
        assert "status: failed" in line and "'acct-1'" in line and "'acct-2'" in line, line
        assert "subject changed" in line, line
    assert world.stripe_total(customer.id) == 30, "no correction between two subjects' totals"
    assert all(Decimal(e["value"]) > 0 for e in world.meter_events(customer.id))

    world.advance(clock, end + 10 * MINUTE)
    world.advance(clock, end + 2 * HOUR)
    [invoice] = world.finalized(customer.id)
    assert quantities(invoice) == {world.price.id: 30}  # what was sent for acct-1, nothing else
    assert UsageReport.objects.filter(status="failed", error__contains="subject changed").exists()
