"""Idempotency-Key on POSTs, as Stripe does it."""

import threading

import httpx
import stripe


def post(http, path, data, key):
    return http.post(path, data=data, headers={"Idempotency-Key": key})


def test_same_key_same_params_replays(http, stripe_emulator):
    a = post(http, "/v1/customers", {"email": "x@example.com"}, "key-1")
    b = post(http, "/v1/customers", {"email": "x@example.com"}, "key-1")
    assert a.status_code == b.status_code == 200
    assert a.json() == b.json()
    assert "Idempotent-Replayed" not in a.headers
    assert b.headers["Idempotent-Replayed"] == "true"
    assert b.headers["Original-Request"] == a.headers["Request-Id"]
    assert b.headers["Request-Id"] != a.headers["Request-Id"]
    assert a.headers["Idempotency-Key"] == "key-1"
    assert len(http.get("/v1/customers").json()["data"]) == 1  # created once
    log = stripe_emulator.requests(method="POST", path="/v1/customers")
    assert [(r["idempotency_key"], r["idempotent_replayed"]) for r in log] == [
        ("key-1", False), ("key-1", True)]


def test_same_key_different_params_is_idempotency_error(http):
    post(http, "/v1/customers", {"email": "x@example.com"}, "key-2")
    r = post(http, "/v1/customers", {"email": "y@example.com"}, "key-2")
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "idempotency_error"
    assert "Keys for idempotent requests can only be used with the same parameters" in \
        err["message"]
    r = post(http, "/v1/products", {"email": "x@example.com"}, "key-2")  # other endpoint
    assert r.json()["error"]["type"] == "idempotency_error"


def test_keys_expire_after_24_hours(http, stripe_emulator):
    stripe_emulator.freeze_time(1_790_000_000)
    a = post(http, "/v1/customers", {"name": "n"}, "key-3")
    stripe_emulator.advance_time(24 * 3600)
    b = post(http, "/v1/customers", {"name": "n"}, "key-3")
    assert "Idempotent-Replayed" not in b.headers
    assert a.json()["id"] != b.json()["id"]


def test_validation_errors_are_not_stored(http):
    bad = post(http, "/v1/products", {}, "key-4")
    assert bad.status_code == 400
    good = post(http, "/v1/products", {}, "key-4")  # same params: runs again, still 400
    assert "Idempotent-Replayed" not in good.headers
    fixed = post(http, "/v1/products", {"name": "now valid"}, "key-5")
    assert fixed.status_code == 200


def test_replay_protects_meter_events_from_double_counting(http, stripe_emulator, meter,
                                                           customer):
    data = {"event_name": "execution_seconds", "payload[stripe_customer_id]": customer.id,
            "payload[value]": "30", "identifier": "exec-1"}
    first = post(http, "/v1/billing/meter_events", data, "retry-key")
    retry = post(http, "/v1/billing/meter_events", data, "retry-key")  # a "lost response" retry
    assert first.status_code == retry.status_code == 200
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert stripe_emulator.meter_event_totals(meter=meter.id)["total"] == "30"


def test_get_requests_ignore_the_key(http):
    a = http.get("/v1/customers", headers={"Idempotency-Key": "k"})
    assert "Idempotent-Replayed" not in a.headers


def test_concurrent_use_of_a_key_is_409(stripe_emulator, http):
    started, second_answered = threading.Event(), threading.Event()

    def slow(ctx, call_next):  # the first request is still running when the second comes
        if not started.is_set():
            started.set()
            assert second_answered.wait(30)
        return call_next()

    stripe_emulator.app.use(slow, name="slow", after="idempotency")
    results = {}

    def first():
        with httpx.Client(base_url=stripe_emulator.url, headers=http.headers) as c:
            results["first"] = post(c, "/v1/customers", {"name": "a"}, "busy")

    t = threading.Thread(target=first)
    t.start()
    assert started.wait(5)
    second = post(http, "/v1/customers", {"name": "a"}, "busy")
    second_answered.set()
    t.join()
    assert results["first"].status_code == 200
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "idempotency_key_in_use"


def test_stripe_python_retries_reuse_the_key_and_get_the_replay(stripe_emulator, meter,
                                                                customer):
    # Drop the first response after the work is done, as a flaky network would.
    calls = {"n": 0}

    def lose_first_response(ctx, call_next):
        resp = call_next()
        calls["n"] += 1
        if calls["n"] == 1:
            return type(resp)(500, {"error": {"type": "api_error",
                                              "message": "simulated lost response"}}, {})
        return resp

    stripe_emulator.app.use(lose_first_response, name="lose", before="idempotency")
    client = stripe.StripeClient(stripe_emulator.api_key,
                                 base_addresses={"api": stripe_emulator.url},
                                 http_client=stripe.HTTPXClient(allow_sync_methods=True),
                                 max_network_retries=2)
    ev = client.v1.billing.meter_events.create({
        "event_name": "execution_seconds", "identifier": "once",
        "payload": {"stripe_customer_id": customer.id, "value": "4"}})
    assert ev.identifier == "once"
    posts = stripe_emulator.requests(method="POST", path="/v1/billing/meter_events")
    assert len(posts) == 2 and posts[0]["idempotency_key"] == posts[1]["idempotency_key"]
    assert posts[1]["idempotent_replayed"] is True
    assert stripe_emulator.meter_event_totals(meter=meter.id)["count"] == 1
