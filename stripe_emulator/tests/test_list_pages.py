"""Lists page by cursor in SQL: every object once, newest first, filters applied, bad cursors 404."""

import pytest
import stripe


@pytest.fixture
def customers(client):
    return [client.v1.customers.create({"email": f"c{n % 3}@example.com"}).id for n in range(23)]


def test_auto_paging_lists_every_customer_once_newest_first(client, customers):
    listed = [c.id for c in client.v1.customers.list({"limit": 5}).auto_paging_iter()]
    assert listed == list(reversed(customers))


def test_a_filter_applies_across_pages(client, customers):
    listed = [c.id for c in client.v1.customers.list({"limit": 3, "email": "c1@example.com"}).auto_paging_iter()]
    assert listed == [c for n, c in reversed(list(enumerate(customers))) if n % 3 == 1]


def test_ending_before_pages_backwards(client, customers):
    page = client.v1.customers.list({"limit": 4, "ending_before": customers[10]})
    assert [c.id for c in page.data] == list(reversed(customers[11:15])) and page.has_more


def test_an_unknown_cursor_is_resource_missing(client, customers):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.customers.list({"starting_after": "cus_nope"})
    assert exc.value.http_status == 404 and exc.value.param == "starting_after"


def test_the_store_reads_a_page_in_chunks_whatever_the_filter(stripe_emulator, customers):
    every_other = {c for n, c in enumerate(customers) if n % 2 == 0}
    found, has_more = stripe_emulator.store.page("customer", False, limit=4, after=customers[20], chunk=3,
                                                 where=lambda c: c["id"] in every_other)
    assert [c["id"] for c in found] == [customers[n] for n in (18, 16, 14, 12)] and has_more
    assert stripe_emulator.store.page("customer", False, limit=4, after="cus_nope") is None


def test_subscriptions_list_by_cursor_too(client, customers):
    price = client.v1.prices.create({"currency": "usd", "unit_amount": 10, "product_data": {"name": "p"},
                                     "recurring": {"interval": "month"}})
    subs = [client.v1.subscriptions.create({"customer": c, "items": [{"price": price.id}]}).id for c in customers[:7]]
    assert [s.id for s in client.v1.subscriptions.list({"limit": 2}).auto_paging_iter()] == list(reversed(subs))
