"""Test clocks: CRUD, advancing (async status, forward only, Stripe's limits), and
customers living on the clock's time."""

import pytest
import stripe

from stripe_emulator import fixtures

from .conftest import ts

T0 = ts(2026, 1, 10, 12)


@pytest.fixture
def clock(client):
    return client.v1.test_helpers.test_clocks.create({"frozen_time": T0, "name": "cycle"})


def test_create_retrieve_list_delete(client, clock, stripe_emulator):
    assert clock.id.startswith("clock_") and clock.object == "test_helpers.test_clock"
    assert (clock.frozen_time, clock.name, clock.status, clock.livemode) == (
        T0, "cycle", "ready", False)
    assert clock.deletes_after == clock.created + 7 * 86400
    assert set(clock.to_dict()) == set(fixtures.shape("test_helpers.test_clock"))
    assert client.v1.test_helpers.test_clocks.retrieve(clock.id).frozen_time == T0
    assert [c.id for c in client.v1.test_helpers.test_clocks.list().data] == [clock.id]
    customer = client.v1.customers.create({"test_clock": clock.id})
    gone = client.v1.test_helpers.test_clocks.delete(clock.id)
    assert gone.to_dict() == {"id": clock.id, "object": "test_helpers.test_clock",
                              "deleted": True}
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.test_helpers.test_clocks.retrieve(clock.id)
    assert exc.value.code == "resource_missing"
    assert client.v1.customers.retrieve(customer.id).deleted is True


def test_advance_is_asynchronous_then_ready(client, clock, stripe_emulator):
    with stripe_emulator.server.app.scheduler.hold():  # see it `advancing`
        out = client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": T0 + 3600})
        assert out.status == "advancing"
        assert out.frozen_time == T0  # moves when the advance is done
        assert out.status_details.advancing.target_frozen_time == T0 + 3600
        with pytest.raises(stripe.InvalidRequestError) as exc:
            client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": T0 + 7200})
        assert "already advancing" in exc.value.user_message
    assert stripe_emulator.wait_idle()
    done = client.v1.test_helpers.test_clocks.retrieve(clock.id)
    assert (done.status, done.frozen_time, done.status_details.to_dict()) == (
        "ready", T0 + 3600, {})
    types = [e["type"] for e in stripe_emulator.events()]
    assert types == ["test_helpers.test_clock.created", "test_helpers.test_clock.advancing",
                     "test_helpers.test_clock.ready"]


def test_advance_only_forward(client, clock):
    for target in (T0, T0 - 1):
        with pytest.raises(stripe.InvalidRequestError) as exc:
            client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": target})
        assert exc.value.param == "frozen_time"
        assert "only move forward" in exc.value.user_message


def test_advance_limit_without_subscriptions_is_two_years(client, clock, stripe_emulator):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": ts(2028, 1, 10, 12)
                                                              + 1})
    assert "two intervals" in exc.value.user_message
    stripe_emulator.advance_test_clock(clock.id, ts(2028, 1, 10, 12))


def test_advance_limit_is_two_intervals_of_the_shortest_subscription(
        client, clock, metered_price, stripe_emulator):
    prod = metered_price.product
    weekly = client.v1.prices.create({"currency": "usd", "product": prod, "unit_amount": 100,
                                      "recurring": {"interval": "week"}})
    monthly_customer = client.v1.customers.create({"test_clock": clock.id})
    weekly_customer = client.v1.customers.create({"test_clock": clock.id})
    client.v1.subscriptions.create({"customer": monthly_customer.id,
                                    "items": [{"price": metered_price.id}]})
    client.v1.subscriptions.create({"customer": weekly_customer.id,
                                    "items": [{"price": weekly.id}]})
    limit = T0 + 14 * 86400
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": limit + 1})
    clock = stripe_emulator.advance_test_clock(clock.id, limit)
    assert clock.frozen_time == limit


def test_customers_and_subscriptions_live_on_the_clock(client, clock, metered_price,
                                                       stripe_emulator):
    stripe_emulator.freeze_time(ts(2030, 6, 1))  # the emulator clock is elsewhere
    customer = client.v1.customers.create({"test_clock": clock.id, "email": "c@example.com"})
    assert (customer.test_clock, customer.created) == (clock.id, T0)
    sub = client.v1.subscriptions.create({"customer": customer.id,
                                          "items": [{"price": metered_price.id}]})
    item = sub["items"].data[0]
    assert (sub.test_clock, sub.created, item.current_period_start, item.current_period_end) == (
        clock.id, T0, T0, ts(2026, 2, 10, 12))
    assert [s.id for s in client.v1.subscriptions.list({"test_clock": clock.id}).data] == [sub.id]
    assert client.v1.customers.list({"test_clock": clock.id}).data[0].id == customer.id
    # Meter event timestamps are checked against the clock, not the emulator's time.
    client.v1.billing.meter_events.create({
        "event_name": "execution_seconds", "timestamp": T0 - 3600,
        "payload": {"stripe_customer_id": customer.id, "value": "1"}})
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.billing.meter_events.create({
            "event_name": "execution_seconds", "timestamp": T0 + 3600,
            "payload": {"stripe_customer_id": customer.id, "value": "1"}})
    assert "5 minutes in the future" in exc.value.user_message
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.customers.create({"test_clock": "clock_nope"})
    assert (exc.value.param, exc.value.code) == ("test_clock", "resource_missing")
