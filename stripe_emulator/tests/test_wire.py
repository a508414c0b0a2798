"""Wire format: auth, error JSON, headers, form parsing, unknown routes/params."""

import base64
from urllib.parse import urlencode

import httpx
import pytest
import stripe

KEY = "sk_test_" + "A1b2C3d4" * 3


def test_missing_key_is_401_with_stripe_error(stripe_emulator):
    r = httpx.get(f"{stripe_emulator.url}/v1/customers")
    assert r.status_code == 401
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert err["message"].startswith("You did not provide an API key.")
    assert r.headers["Request-Id"].startswith("req_")


@pytest.mark.parametrize("key", [
    "sk_test_short", "pk_test_" + "a" * 24, "sk_prod_" + "a" * 24, "sk_test_" + "a" * 23 + "!",
])
def test_malformed_keys_are_401_and_masked(stripe_emulator, key):
    r = httpx.get(f"{stripe_emulator.url}/v1/customers",
                  headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 401
    message = r.json()["error"]["message"]
    assert message.startswith("Invalid API Key provided: ")
    assert message.endswith("****" + key[-4:])
    assert key not in message  # never echo the whole key


def test_invalid_key_message_keeps_prefix(stripe_emulator):
    r = httpx.get(f"{stripe_emulator.url}/v1/customers",
                  headers={"Authorization": "Bearer sk_test_tooshortabcd"})
    assert r.json()["error"]["message"] == "Invalid API Key provided: sk_test_****abcd"


def test_revoked_key_is_401_expired(stripe_emulator):
    stripe_emulator.app.revoked_keys.add(KEY)
    r = httpx.get(f"{stripe_emulator.url}/v1/customers",
                  headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "api_key_expired"
    assert r.json()["error"]["message"].startswith("Expired API Key provided: sk_test_****")


def test_basic_auth_with_key_as_username(stripe_emulator):
    token = base64.b64encode(f"{KEY}:".encode()).decode()
    r = httpx.get(f"{stripe_emulator.url}/v1/customers",
                  headers={"Authorization": f"Basic {token}"})
    assert r.status_code == 200
    assert r.json()["object"] == "list"


def test_livemode_follows_the_key_and_modes_are_separate(stripe_emulator):
    live = stripe_emulator.live_api_key
    r = httpx.post(f"{stripe_emulator.url}/v1/customers", data={"name": "L"},
                   headers={"Authorization": f"Bearer {live}"})
    assert r.json()["livemode"] is True
    cus = r.json()["id"]
    r = httpx.get(f"{stripe_emulator.url}/v1/customers/{cus}",
                  headers={"Authorization": f"Bearer {stripe_emulator.api_key}"})
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["code"] == "resource_missing"
    assert "a similar object exists in live mode, but a test mode key was used" in err["message"]
    assert httpx.get(f"{stripe_emulator.url}/v1/customers", headers={
        "Authorization": f"Bearer {stripe_emulator.api_key}"}).json()["data"] == []


def test_headers_request_id_version_and_content_type(http):
    r = http.get("/v1/account")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    assert r.headers["Request-Id"].startswith("req_")
    assert r.headers["Stripe-Version"] == "2026-08-26.dahlia"
    r = http.get("/v1/account", headers={"Stripe-Version": "2025-03-31.basil"})
    assert r.headers["Stripe-Version"] == "2025-03-31.basil"
    r = http.get("/v1/account", headers={"Stripe-Version": "yesterday"})
    assert r.status_code == 400
    assert "Invalid Stripe API version" in r.json()["error"]["message"]


def test_unrecognized_url_is_404_like_stripe(http):
    for method, path in [("GET", "/v1/foo"), ("PUT", "/v1/customers"),
                         ("DELETE", "/v1/prices/price_x")]:
        r = http.request(method, path)
        assert r.status_code == 404
        err = r.json()["error"]
        assert err["type"] == "invalid_request_error"
        assert err["message"].startswith(f"Unrecognized request URL ({method}: {path}).")
        assert "code" not in err


def test_error_json_shape(http):
    r = http.get("/v1/customers/cus_nope")
    assert r.status_code == 404
    err = r.json()["error"]
    assert err == {
        "type": "invalid_request_error",
        "code": "resource_missing",
        "message": "No such customer: 'cus_nope'",
        "param": "id",
        "doc_url": "https://stripe.com/docs/error-codes/resource-missing",
        "request_log_url": err["request_log_url"],
    }
    # The request log URL points at the emulator's own log, which has the request.
    logged = httpx.get(err["request_log_url"]).json()
    assert logged["path"] == "/v1/customers/cus_nope" and logged["status"] == 404


def test_missing_and_invalid_params(http):
    r = http.post("/v1/products", data={})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "parameter_missing"
    assert r.json()["error"]["param"] == "name"
    assert r.json()["error"]["message"] == "Missing required param: name."
    r = http.get("/v1/customers", params={"limit": "ten"})
    assert r.json()["error"]["code"] == "parameter_invalid_integer"
    assert r.json()["error"]["param"] == "limit"
    assert r.json()["error"]["message"] == "Invalid integer: ten"
    r = http.get("/v1/customers", params={"limit": "101"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "limit"


def test_unknown_param_is_rejected_documented_ones_are_logged_as_ignored(
        http, stripe_emulator):
    r = http.post("/v1/customers", data={"emial": "x@y.z"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "parameter_unknown"
    assert r.json()["error"]["message"] == "Received unknown parameter: emial"
    r = http.post("/v1/customers", data={"email": "x@y.z", "tax_exempt": "none",
                                         "validate": "true"})
    assert r.status_code == 200
    entry = stripe_emulator.requests(method="POST", path="/v1/customers")[-1]
    assert entry["ignored_params"] == ["validate"]


def post_pairs(http, path, pairs):
    """POST repeated/bracketed keys exactly as given (httpx `data=` wants a dict)."""
    return http.post(path, content=urlencode(pairs),
                     headers={"Content-Type": "application/x-www-form-urlencoded"})


def test_nested_form_parsing_over_the_wire(http):
    meter = http.post("/v1/billing/meters", data={
        "display_name": "m", "event_name": "e", "default_aggregation[formula]": "sum"}).json()
    # curl-style `[]` arrays and explicitly indexed ones both work.
    price = post_pairs(http, "/v1/prices", [
        ("currency", "usd"), ("unit_amount_decimal", "0.5"), ("product_data[name]", "P"),
        ("product_data[metadata][tier]", "pro"), ("recurring[interval]", "month"),
        ("recurring[usage_type]", "metered"), ("recurring[meter]", meter["id"]),
        ("metadata[a]", "1"), ("expand[]", "product")]).json()
    assert price["recurring"]["meter"] == meter["id"]
    assert price["product"]["metadata"] == {"tier": "pro"}
    assert price["metadata"] == {"a": "1"}
    listed = http.get("/v1/prices", params=[("lookup_keys[0]", "none"),
                                            ("expand[0]", "data.product")]).json()
    assert listed["data"] == []


def test_json_bodies_are_rejected(http):
    r = http.post("/v1/customers", json={"email": "a@b.c"})
    assert r.status_code == 400
    assert "form-urlencoded" in r.json()["error"]["message"]


def test_stripe_account_header(http, stripe_emulator):
    assert http.get("/v1/customers",
                    headers={"Stripe-Account": stripe_emulator.app.account_id}).status_code == 200
    r = http.get("/v1/customers", headers={"Stripe-Account": "acct_someoneelse"})
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "account_invalid"


def test_account_endpoints(client, http, stripe_emulator):
    acct = client.v1.accounts.retrieve_current()
    assert acct.id == stripe_emulator.app.account_id == "acct_1EmuLat0rEpsi10n"
    assert acct.object == "account"
    assert acct.settings.dashboard.display_name == "Local Stripe emulator"
    assert http.get(f"/v1/accounts/{acct.id}").json()["id"] == acct.id
    assert http.get("/v1/accounts/acct_other").status_code == 404


def test_stripe_python_raises_its_typed_errors(client, stripe_emulator):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.customers.retrieve("cus_missing")
    assert exc.value.code == "resource_missing"
    assert exc.value.http_status == 404
    bad = stripe.StripeClient("sk_test_x", base_addresses={"api": stripe_emulator.url},
                              http_client=stripe.HTTPXClient(allow_sync_methods=True))
    with pytest.raises(stripe.AuthenticationError):
        bad.v1.customers.list()


def test_internal_errors_are_stripe_api_errors(http, stripe_emulator):
    def boom(ctx, call_next):
        raise RuntimeError("kaboom")

    stripe_emulator.app.use(boom, name="boom")
    r = http.get("/v1/customers")
    assert r.status_code == 500
    assert r.json()["error"]["type"] == "api_error"
    assert "kaboom" in r.json()["error"]["message"]


def test_v2_accounts_list_is_empty(stripe_emulator):
    client = stripe.StripeClient(stripe_emulator.api_key,
                                 base_addresses={"api": stripe_emulator.url},
                                 http_client=stripe.HTTPXClient(allow_sync_methods=True))
    page = client.v2.core.accounts.list({"include": ["identity"]})
    assert list(page.auto_paging_iter()) == []
