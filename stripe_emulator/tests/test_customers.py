"""Customers: CRUD, metadata merge semantics, list filters, deletion."""

import pytest
import stripe


def test_customer_crud(client):
    c = client.v1.customers.create({"email": "ada@example.com", "name": "Ada",
                                    "description": "first", "metadata": {"tenant": "t1"}})
    assert c.id.startswith("cus_") and len(c.id) == len("cus_") + 14
    assert (c.email, c.name, c.description, c.balance, c.delinquent) == (
        "ada@example.com", "Ada", "first", 0, False)
    assert c.invoice_settings.default_payment_method is None
    assert len(c.invoice_prefix) == 8 and c.invoice_prefix.isupper()
    assert client.v1.customers.retrieve(c.id).to_dict() == c.to_dict()
    u = client.v1.customers.update(c.id, {"name": "Ada L.", "email": ""})
    assert (u.name, u.email) == ("Ada L.", None)


def test_metadata_merges_deletes_and_clears(client, http):
    c = client.v1.customers.create({"metadata": {"a": "1", "b": "2"}})
    u = client.v1.customers.update(c.id, {"metadata": {"b": "", "c": "3"}})
    assert u.metadata.to_dict() == {"a": "1", "c": "3"}
    u = client.v1.customers.update(c.id, {"name": "no metadata change"})
    assert u.metadata.to_dict() == {"a": "1", "c": "3"}
    r = http.post(f"/v1/customers/{c.id}", data={"metadata": ""})
    assert r.json()["metadata"] == {}


def test_metadata_limits(http):
    r = http.post("/v1/customers", data={f"metadata[{'k' * 41}]": "v"})
    assert r.status_code == 400 and "40 characters" in r.json()["error"]["message"]
    r = http.post("/v1/customers", data={"metadata[k]": "v" * 501})
    assert r.status_code == 400 and "500 characters" in r.json()["error"]["message"]
    r = http.post("/v1/customers", data={f"metadata[k{i}]": "v" for i in range(51)})
    assert r.status_code == 400 and "at most 50 keys" in r.json()["error"]["message"]


def test_list_by_email_is_exact(client):
    a = client.v1.customers.create({"email": "a@example.com"})
    client.v1.customers.create({"email": "b@example.com"})
    client.v1.customers.create({"email": "A@example.com"})
    res = client.v1.customers.list({"email": "a@example.com"})
    assert [c.id for c in res.data] == [a.id]
    assert len(client.v1.customers.list().data) == 3


def test_delete_leaves_a_tombstone_and_cancels_subscriptions(client, http, meter):
    c = client.v1.customers.create({"email": "gone@example.com"})
    prod = client.v1.products.create({"name": "p"})
    price = client.v1.prices.create({"currency": "usd", "product": prod.id, "unit_amount": 1,
                                     "recurring": {"interval": "month"}})
    sub = client.v1.subscriptions.create({"customer": c.id, "items": [{"price": price.id}]})
    res = client.v1.customers.delete(c.id)
    assert (res.id, res.deleted) == (c.id, True)
    got = http.get(f"/v1/customers/{c.id}").json()
    assert got == {"id": c.id, "object": "customer", "deleted": True}
    assert client.v1.subscriptions.retrieve(sub.id).status == "canceled"
    assert client.v1.customers.list().data == []
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.update(c.id, {"name": "zombie"})
