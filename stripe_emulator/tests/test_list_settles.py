"""A subscription list shows each subscription as its customer's time has made it (a
passed period end rolled once, a passed cancel_at canceled), by settling the
subscriptions it reads, not by scanning every customer for due boundaries per page."""

import pytest

from .conftest import ts

T0 = ts(2026, 1, 10, 12)
END = ts(2026, 2, 10, 12)
NEXT_END = ts(2026, 3, 10, 12)


@pytest.fixture
def held(stripe_emulator):
    """The emulator clock frozen at T0 and the scheduler's tick held: only reads settle."""
    stripe_emulator.set_time(T0, freeze=True)
    with stripe_emulator.app.scheduler.hold():
        yield stripe_emulator


def subscribe(client, price, n, **params):
    subs = []
    for k in range(n):
        customer = client.v1.customers.create({"email": f"c{k}@example.com"})
        subs.append(client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}], **params}))
    return subs


def periods(sub):
    return [(i.current_period_start, i.current_period_end) for i in sub["items"].data]


def of_type(stripe_emulator, type):
    return [e for e in stripe_emulator.events() if e["type"] == type]


def test_a_list_shows_passed_periods_rolled_once(client, held, metered_price):
    subs = subscribe(client, metered_price, 3)
    held.set_time(END + 60)
    for _ in range(2):  # a second read rolls nothing again
        listed = list(client.v1.subscriptions.list({"status": "all", "limit": 2}).auto_paging_iter())
        assert [s.id for s in listed] == [s.id for s in reversed(subs)]
        assert all(periods(s) == [(END, NEXT_END)] and s.latest_invoice for s in listed)
    assert len(of_type(held, "customer.subscription.updated")) == 3
    assert len(of_type(held, "invoice.created")) == 3


def test_a_passed_cancel_at_cancels_before_the_status_filter(client, held, metered_price):
    kept, ending = subscribe(client, metered_price, 2)
    client.v1.subscriptions.update(ending.id, {"cancel_at": T0 + 86400})
    held.set_time(T0 + 2 * 86400)
    assert [s.id for s in client.v1.subscriptions.list().data] == [kept.id]
    canceled = client.v1.subscriptions.list({"status": "canceled"}).data
    assert [(s.id, s.status, s.ended_at) for s in canceled] == [(ending.id, "canceled", T0 + 86400)]
    assert len(of_type(held, "customer.subscription.deleted")) == 1


def test_a_page_settles_the_subscriptions_it_reads_and_scans_nothing(client, held, metered_price, monkeypatch):
    subs = subscribe(client, metered_price, 6)
    held.set_time(END + 60)

    def scan(*args, **kwargs):
        raise AssertionError("a list page must not scan every customer for due boundaries")

    monkeypatch.setattr(held.store, "customers_with_due_boundaries", scan)
    page = client.v1.subscriptions.list({"limit": 2})
    assert [s.id for s in page.data] == [subs[5].id, subs[4].id] and page.has_more
    assert all(periods(s) == [(END, NEXT_END)] for s in page.data)
    # The oldest were not read (at most one beyond the page, to know has_more): not settled yet.
    for sub in subs[:3]:
        items = held.store.by_field("subscription_item", "subscription", sub.id)
        assert [i["current_period_end"] for i in items] == [END]
    # Read later, they show rolled too.
    rest = client.v1.subscriptions.list({"limit": 10, "starting_after": subs[4].id}).data
    assert [s.id for s in rest] == [s.id for s in reversed(subs[:4])]
    assert all(periods(s) == [(END, NEXT_END)] for s in rest)
    assert len(of_type(held, "customer.subscription.updated")) == 6


def test_a_test_clock_customer_is_listed_at_its_clock_time(client, held, metered_price):
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": T0})
    customer = client.v1.customers.create({"test_clock": clock.id})
    on_clock = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": metered_price.id}]})
    held.set_time(END + 60)  # the emulator clock passes the end; the test clock does not
    assert periods(client.v1.subscriptions.list().data[0]) == [(T0, END)]
    # The clock's time moved without its advance having run (e.g. set by a crashed advance):
    # a read brings the customer up to it.
    stored = held.store.get(clock.id, "test_helpers.test_clock")
    held.store.save({**stored, "frozen_time": END + 1})
    assert periods(client.v1.subscriptions.list().data[0]) == [(END, NEXT_END)]
    assert client.v1.subscriptions.list().data[0].id == on_clock.id


def test_store_page_prepares_each_object_before_the_filter(stripe_emulator, client):
    made = [client.v1.customers.create({"email": f"c{n}@example.com"}).id for n in range(5)]
    seen = []

    def prepare(obj):
        seen.append(obj["id"])
        return {**obj, "email": "kept@example.com" if obj["id"] in made[1::2] else obj["email"]}

    found, has_more = stripe_emulator.store.page("customer", False, limit=1, chunk=2, prepare=prepare,
                                                 where=lambda c: c["email"] == "kept@example.com")
    assert [c["id"] for c in found] == [made[3]] and has_more
    assert seen == [made[4], made[3], made[2], made[1]]  # stops once has_more is known
