"""Products and prices: CRUD, filters, pagination, expansion, meter rules."""

from decimal import Decimal

import pytest
import stripe


def test_product_crud(client):
    p = client.v1.products.create({"name": "Compute", "metadata": {"k": "v"},
                                   "description": "Serverless execution"})
    assert p.id.startswith("prod_") and len(p.id) == len("prod_") + 14
    assert (p.name, p.active, p.type, p.livemode) == ("Compute", True, "service", False)
    assert p.metadata.to_dict() == {"k": "v"}
    got = client.v1.products.retrieve(p.id)
    assert got.to_dict() == p.to_dict()
    updated = client.v1.products.update(p.id, {"name": "Compute v2", "active": False,
                                                "description": ""})
    assert (updated.name, updated.active, updated.description) == ("Compute v2", False, None)
    assert client.v1.products.delete(p.id).deleted is True
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.products.retrieve(p.id)
    assert exc.value.code == "resource_missing"


def test_product_with_custom_id_and_default_price_data(client):
    p = client.v1.products.create({"id": "epsilon-compute", "name": "C",
                                   "default_price_data": {"currency": "usd", "unit_amount": 100}})
    assert p.id == "epsilon-compute"
    price = client.v1.prices.retrieve(p.default_price)
    assert (price.product, price.unit_amount, price.type) == ("epsilon-compute", 100, "one_time")
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.products.create({"id": "epsilon-compute", "name": "again"})
    assert exc.value.code == "resource_already_exists"


def test_product_list_filters_and_pagination(client):
    made = [client.v1.products.create({"name": f"p{i}", "active": i % 2 == 0})
            for i in range(7)]
    page = client.v1.products.list({"limit": 3})
    assert [p.name for p in page.data] == ["p6", "p5", "p4"]  # newest first
    assert page.has_more is True
    page2 = client.v1.products.list({"limit": 3, "starting_after": page.data[-1].id})
    assert [p.name for p in page2.data] == ["p3", "p2", "p1"]
    page3 = client.v1.products.list({"limit": 3, "starting_after": page2.data[-1].id})
    assert [p.name for p in page3.data] == ["p0"] and page3.has_more is False
    back = client.v1.products.list({"limit": 2, "ending_before": page2.data[0].id})
    assert [p.name for p in back.data] == ["p5", "p4"] and back.has_more is True
    active = client.v1.products.list({"active": True, "limit": 100})
    assert sorted(p.name for p in active.data) == ["p0", "p2", "p4", "p6"]
    by_ids = client.v1.products.list({"ids": [made[1].id, made[3].id]})
    assert sorted(p.name for p in by_ids.data) == ["p1", "p3"]
    names = [p.name for p in client.v1.products.list({"limit": 2}).auto_paging_iter()]
    assert names == [f"p{i}" for i in range(6, -1, -1)]
    assert page.url == "/v1/products"


def test_pagination_errors(http):
    r = http.get("/v1/products", params={"starting_after": "prod_x", "ending_before": "prod_y"})
    assert r.json()["error"]["code"] == "parameters_exclusive"
    r = http.get("/v1/products", params={"starting_after": "prod_x"})
    assert r.status_code == 404 and r.json()["error"]["param"] == "starting_after"


def test_products_features_list_is_empty(client, http):
    p = client.v1.products.create({"name": "x"})
    feats = http.get(f"/v1/products/{p.id}/features").json()
    assert feats == {"object": "list", "data": [], "has_more": False,
                     "url": f"/v1/products/{p.id}/features"}
    assert http.get("/v1/products/prod_missing/features").status_code == 404


def test_price_create_licensed_and_decimal(client):
    prod = client.v1.products.create({"name": "Seat"})
    price = client.v1.prices.create({
        "currency": "USD", "product": prod.id, "unit_amount": 2000,
        "recurring": {"interval": "month"}, "lookup_key": "seat_monthly", "nickname": "Seat",
        "metadata": {"a": "b"}})
    assert price.id.startswith("price_") and len(price.id) == len("price_") + 24
    # stripe-python turns unit_amount_decimal (a string on the wire) into a Decimal.
    assert (price.currency, price.unit_amount, price.unit_amount_decimal) == (
        "usd", 2000, Decimal("2000"))
    assert price.recurring.to_dict() == {"interval": "month", "interval_count": 1, "meter": None,
                                         "trial_period_days": None, "usage_type": "licensed"}
    assert (price.type, price.lookup_key, price.billing_scheme) == ("recurring", "seat_monthly",
                                                                    "per_unit")
    frac = client.v1.prices.create({"currency": "usd", "product": prod.id,
                                    "unit_amount_decimal": "0.0125"})
    assert frac.unit_amount is None and frac.unit_amount_decimal == Decimal("0.0125")
    whole = client.v1.prices.create({"currency": "usd", "product": prod.id,
                                     "unit_amount_decimal": "10.00"})
    assert whole.unit_amount == 10 and whole.unit_amount_decimal == Decimal("10")


@pytest.mark.parametrize("params, param, fragment", [
    ({"unit_amount": 1, "unit_amount_decimal": "1"}, "unit_amount_decimal",
     "only specify one of"),
    ({}, "unit_amount", "Missing required param"),
    ({"unit_amount_decimal": "0.1234567890123"}, "unit_amount_decimal", "12 decimal places"),
    ({"unit_amount": -5}, "unit_amount", "greater than or equal to 0"),
    ({"unit_amount": 1, "recurring": {"interval": "fortnight"}}, "recurring[interval]",
     "must be one of"),
    ({"unit_amount": 1, "recurring": {"interval": "month", "interval_count": 13}},
     "recurring[interval_count]", "at most one year"),
])
def test_price_validation(client, params, param, fragment):
    prod = client.v1.products.create({"name": "x"})
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.prices.create({"currency": "usd", "product": prod.id, **params})
    assert exc.value.param == param
    assert fragment in exc.value.user_message


def test_metered_price_needs_an_existing_meter(client, meter):
    prod = client.v1.products.create({"name": "Usage"})
    base = {"currency": "usd", "product": prod.id, "unit_amount_decimal": "0.1"}
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.prices.create({**base, "recurring": {"interval": "month",
                                                       "usage_type": "metered"}})
    assert exc.value.param == "recurring[meter]"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.prices.create({**base, "recurring": {"interval": "month",
                                                       "usage_type": "metered",
                                                       "meter": "mtr_test_nope"}})
    assert exc.value.code == "resource_missing" and exc.value.param == "recurring[meter]"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.prices.create({**base, "recurring": {"interval": "month",
                                                       "meter": meter.id}})
    assert exc.value.param == "recurring[meter]"  # a meter needs usage_type=metered
    price = client.v1.prices.create({**base, "recurring": {"interval": "month",
                                                           "usage_type": "metered",
                                                           "meter": meter.id}})
    assert price.recurring.meter == meter.id and price.recurring.usage_type == "metered"


def test_price_needs_an_existing_product(client):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.prices.create({"currency": "usd", "unit_amount": 1})
    assert exc.value.param == "product"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.prices.create({"currency": "usd", "unit_amount": 1, "product": "prod_nope"})
    assert exc.value.code == "resource_missing"


def test_lookup_keys_are_unique_unless_transferred(client):
    prod = client.v1.products.create({"name": "x"})
    a = client.v1.prices.create({"currency": "usd", "product": prod.id, "unit_amount": 1,
                                 "lookup_key": "std"})
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.prices.create({"currency": "usd", "product": prod.id, "unit_amount": 2,
                                 "lookup_key": "std"})
    assert f"A price (`{a.id}`) already uses that lookup key." == exc.value.user_message
    b = client.v1.prices.create({"currency": "usd", "product": prod.id, "unit_amount": 2,
                                 "lookup_key": "std", "transfer_lookup_key": True})
    assert client.v1.prices.retrieve(a.id).lookup_key is None
    found = client.v1.prices.list({"lookup_keys": ["std", "other"]})
    assert [p.id for p in found.data] == [b.id]


def test_price_update_and_list_filters(client, meter):
    p1 = client.v1.products.create({"name": "one"})
    p2 = client.v1.products.create({"name": "two"})
    a = client.v1.prices.create({"currency": "usd", "product": p1.id, "unit_amount": 1})
    b = client.v1.prices.create({"currency": "eur", "product": p2.id, "unit_amount": 1,
                                 "recurring": {"interval": "month"}})
    c = client.v1.prices.create({"currency": "usd", "product": p2.id, "unit_amount_decimal": "2",
                                 "recurring": {"interval": "month", "usage_type": "metered",
                                               "meter": meter.id}})
    upd = client.v1.prices.update(a.id, {"active": False, "metadata": {"x": "y"},
                                         "nickname": "old"})
    assert (upd.active, upd.metadata.to_dict(), upd.nickname) == (False, {"x": "y"}, "old")
    ids = lambda res: [p.id for p in res.data]  # noqa: E731
    assert ids(client.v1.prices.list({"product": p2.id})) == [c.id, b.id]
    assert ids(client.v1.prices.list({"active": False})) == [a.id]
    assert ids(client.v1.prices.list({"type": "one_time"})) == [a.id]
    assert ids(client.v1.prices.list({"currency": "eur"})) == [b.id]
    assert ids(client.v1.prices.list({"recurring": {"usage_type": "metered"}})) == [c.id]
    assert ids(client.v1.prices.list({"recurring": {"meter": meter.id}})) == [c.id]
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.prices.update(a.id, {"unit_amount": 5})  # prices are immutable
    assert exc.value.code == "parameter_unknown"


def test_expand_product_on_price_and_lists(client, http):
    prod = client.v1.products.create({"name": "x"})
    price = client.v1.prices.create({"currency": "usd", "product": prod.id, "unit_amount": 1})
    got = client.v1.prices.retrieve(price.id, {"expand": ["product"]})
    assert got.product.id == prod.id and got.product.object == "product"
    listed = client.v1.prices.list({"expand": ["data.product"]})
    assert listed.data[0].product.name == "x"
    created = client.v1.prices.create({"currency": "usd", "product": prod.id, "unit_amount": 1,
                                       "expand": ["product"]})
    assert created.product.name == "x"
    # dj-stripe's includable fields
    dj = http.get(f"/v1/prices/{price.id}", params={"expand[0]": "currency_options",
                                                    "expand[1]": "tiers"}).json()
    assert dj["currency_options"]["usd"]["unit_amount"] == 1 and dj["tiers"] is None


def test_bad_expansions_are_400(http, client):
    prod = client.v1.products.create({"name": "x"})
    price = client.v1.prices.create({"currency": "usd", "product": prod.id, "unit_amount": 1})
    r = http.get(f"/v1/prices/{price.id}", params={"expand[]": "nickname"})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "This property cannot be expanded (nickname)."
    r = http.get("/v1/prices", params={"expand[]": "product"})
    assert r.status_code == 400 and "data.product" in r.json()["error"]["message"]
    r = http.get(f"/v1/prices/{price.id}", params={"expand[]": "a.b.c.d.e"})
    assert "more than 4 levels" in r.json()["error"]["message"]


def test_unknown_nested_params_are_rejected(client, http):
    prod = client.v1.products.create({"name": "x"})
    r = http.post("/v1/prices", data={"currency": "usd", "product": prod.id, "unit_amount": 1,
                                      "recurring[interval]": "month",
                                      "recurring[aggregate_usage]": "sum"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "parameter_unknown"
    assert r.json()["error"]["param"] == "recurring[aggregate_usage]"  # removed in basil
