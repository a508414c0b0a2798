"""Fault injection and Stripe's limits (stripe_emulator/faults/), over real HTTP."""

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import stripe

from stripe_emulator import EmulatorServer
from stripe_emulator.faults import FaultConfig
from stripe_emulator.pytest_plugin import LIVE_API_KEY, TEST_API_KEY

from .test_cli import ROOT, free_port

ME = "/v1/billing/meter_events"


def event(customer, identifier, value="1", event_name="execution_seconds"):
    return {"event_name": event_name, "identifier": identifier,
            "payload[stripe_customer_id]": customer, "payload[value]": value}


def send(http, customer, identifier, key=None, **kw):
    headers = {"Idempotency-Key": key} if key else {}
    return http.post(ME, data=event(customer, identifier, **kw), headers=headers)


def create_event(client, customer, identifier, *, key, value="1"):
    """One meter event through stripe-python, under an idempotency key."""
    return client.v1.billing.meter_events.create(
        {"event_name": "execution_seconds", "identifier": identifier,
         "payload": {"stripe_customer_id": customer.id, "value": value}},
        {"idempotency_key": key})


def count(stripe_emulator, meter):
    return stripe_emulator.meter_event_totals(meter=meter.id)["count"]


# --- 429 ---------------------------------------------------------------------------


def test_injected_429_is_stripes_rate_limit_error_and_records_nothing(
        stripe_emulator, client, http, meter, customer):
    stripe_emulator.set_faults(rate_429=1.0)
    with pytest.raises(stripe.RateLimitError) as exc:
        create_event(client, customer, "r1", key="k429")
    e = exc.value
    assert e.http_status == 429
    assert e.headers["Stripe-Rate-Limited-Reason"] == "global-rate"
    err = e.json_body["error"]
    assert (err["type"], err["code"]) == ("invalid_request_error", "rate_limit")
    assert "rate limit" in err["message"].lower()
    assert count(stripe_emulator, meter) == 0

    # Not stored under the key: the same key runs once the 429s stop.
    stripe_emulator.set_faults(rate_429=0.0)
    r = send(http, customer.id, "r1", key="k429")
    assert r.status_code == 200 and "Idempotent-Replayed" not in r.headers
    assert count(stripe_emulator, meter) == 1
    # Other endpoints are not selected by default.
    stripe_emulator.set_faults(rate_429=1.0)
    assert http.get("/v1/customers").status_code == 200


def test_429_reason_and_paths_are_configurable(stripe_emulator, http, customer):
    stripe_emulator.set_faults(rate_429=1.0, reason_429="endpoint-concurrency", paths=None)
    r = http.get("/v1/customers")
    assert r.status_code == 429
    assert r.headers["Stripe-Rate-Limited-Reason"] == "endpoint-concurrency"
    stripe_emulator.set_faults(paths=("/v1/customers*",))
    assert http.get(f"/v1/customers/{customer.id}").status_code == 429
    assert http.get("/v1/billing/meters").status_code == 200


# --- 500 ---------------------------------------------------------------------------


def test_injected_500_records_nothing_and_is_replayed_under_its_key(
        stripe_emulator, client, http, meter, customer):
    stripe_emulator.set_faults(rate_500=1.0)
    with pytest.raises(stripe.APIError) as exc:
        create_event(client, customer, "f1", key="k500")
    assert exc.value.http_status == 500
    assert exc.value.json_body["error"]["type"] == "api_error"
    assert exc.value.headers["Stripe-Should-Retry"] == "false"
    assert count(stripe_emulator, meter) == 0

    stripe_emulator.set_faults(rate_500=0.0)
    # Stripe replays a key's first answer, a 500 included ...
    again = send(http, customer.id, "f1", key="k500")
    assert again.status_code == 500 and again.headers["Idempotent-Replayed"] == "true"
    assert count(stripe_emulator, meter) == 0
    # ... so a new attempt needs a new key, and the identifier is still free.
    assert send(http, customer.id, "f1", key="k500-2").status_code == 200
    assert count(stripe_emulator, meter) == 1


# --- lost responses ----------------------------------------------------------------


def test_lost_response_records_once_and_the_client_cannot_tell(
        stripe_emulator, client, http, meter, customer):
    stripe_emulator.set_faults(rate_lost=1.0)
    with pytest.raises(stripe.APIConnectionError):
        create_event(client, customer, "l1", value="7", key="klost")
    assert count(stripe_emulator, meter) == 1
    stripe_emulator.set_faults(rate_lost=0.0)
    # The same key replays the stored 200; a new key finds the identifier taken.
    replay = send(http, customer.id, "l1", value="7", key="klost")
    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
    dup = send(http, customer.id, "l1", value="7", key="klost-2")
    assert dup.status_code == 400 and dup.json()["error"]["param"] == "identifier"
    totals = stripe_emulator.meter_event_totals(meter=meter.id)
    assert (totals["count"], totals["total"]) == (1, "7")
    [logged] = [r for r in stripe_emulator.requests(path=ME) if r["fault"] == "lost"]
    assert logged["dropped"] is True
    assert stripe_emulator.stats()["by_status"]["dropped"] == 1


def test_lost_response_as_a_500(stripe_emulator, http, meter, customer):
    stripe_emulator.set_faults(rate_lost=1.0, lost_mode="500")
    r = send(http, customer.id, "l2", key="k")
    assert r.status_code == 500 and r.json()["error"]["type"] == "api_error"
    assert count(stripe_emulator, meter) == 1


# --- timeouts ------------------------------------------------------------------------


@pytest.mark.parametrize("recorded", [False, True], ids=["not-recorded", "recorded"])
def test_timeout_hangs_until_the_client_gives_up(stripe_emulator, meter, customer, recorded):
    stripe_emulator.set_faults(**{"rate_timeout_recorded" if recorded else "rate_timeout": 1.0},
                               timeout_s=120)
    started = time.monotonic()
    with httpx.Client(base_url=stripe_emulator.url, timeout=0.3,
                      headers={"Authorization": f"Bearer {stripe_emulator.api_key}"}) as c:
        with pytest.raises(httpx.ReadTimeout):
            send(c, customer.id, "t1")
    assert time.monotonic() - started < 60  # the client's 0.3 s, not the server's 120 s
    assert count(stripe_emulator, meter) == (1 if recorded else 0)
    # The server noticed the client leaving and freed the request.
    deadline = time.monotonic() + 30
    while stripe_emulator.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.02)
    stats = stripe_emulator.stats()
    assert stats["in_flight"] == 0
    assert stats["faults_injected"] == {("timeout_recorded" if recorded else "timeout"): 1}


def test_a_timeout_shorter_than_the_clients_is_a_dropped_connection(
        stripe_emulator, http, meter, customer):
    stripe_emulator.set_faults(rate_timeout=1.0, timeout_s=0.2)
    with pytest.raises(httpx.RemoteProtocolError):
        send(http, customer.id, "t2")
    assert count(stripe_emulator, meter) == 0


# --- latency -----------------------------------------------------------------------


def test_latency_applies_to_selected_calls(stripe_emulator, http, customer, meter, monkeypatch):
    # What each request is made to wait, recorded rather than timed: the machine's speed
    # does not change it.
    waits = []
    monkeypatch.setattr(stripe_emulator.app.faults, "sleep", waits.append)
    stripe_emulator.set_faults(latency_ms=150)
    assert send(http, customer.id, "lat1").status_code == 200
    assert http.get("/v1/customers").status_code == 200  # not a selected path
    assert waits == [0.15]
    waits.clear()
    stripe_emulator.set_faults(latency_ms=0, jitter_ms=100, seed=3, paths=None)
    for _ in range(5):
        http.get("/v1/customers")
    assert len(waits) == 5 and len(set(waits)) == 5  # jitter varies
    assert all(0 < w < 0.1 for w in waits)


def test_a_seed_makes_faults_reproducible(stripe_emulator, http, customer, meter):
    def pattern(prefix):
        stripe_emulator.set_faults(rate_429=0.3, rate_500=0.2, seed=42)
        return [send(http, customer.id, f"{prefix}{i}").status_code for i in range(30)]

    first, second = pattern("a"), pattern("b")
    assert first == second
    assert {200, 429, 500} <= set(first)
    stripe_emulator.set_faults(seed=43)
    assert [send(http, customer.id, f"c{i}").status_code for i in range(30)] != first


# --- one call at a time per customer and meter ----------------------------------------


def concurrent_posts(url, bodies, key=TEST_API_KEY):
    barrier = threading.Barrier(len(bodies))

    def post(body):
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"},
                          timeout=10) as c:
            barrier.wait()
            return c.post(ME, data=body)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(post, bodies))


def test_a_second_concurrent_call_for_the_same_customer_and_meter_is_429(
        stripe_emulator, client, meter, customer):
    other = client.v1.customers.create({"name": "Bob"})
    stripe_emulator.set_faults(concurrency_limit=True, latency_ms=300)
    same = concurrent_posts(stripe_emulator.url,
                            [event(customer.id, "c1"), event(customer.id, "c2")])
    assert sorted(r.status_code for r in same) == [200, 429]
    [refused] = [r for r in same if r.status_code == 429]
    assert refused.headers["Stripe-Rate-Limited-Reason"] == "endpoint-concurrency"
    assert refused.json()["error"]["code"] == "rate_limit"
    assert count(stripe_emulator, meter) == 1

    # Different customers may overlap; one after the other is fine too.
    both = concurrent_posts(stripe_emulator.url,
                            [event(customer.id, "c3"), event(other.id, "c4")])
    assert [r.status_code for r in both] == [200, 200]
    stats = stripe_emulator.stats()
    assert stats["rate_limited"] == {"endpoint-concurrency": 1}
    assert stats["peak_concurrency"]["meter_events"] == 2
    assert stats["peak_concurrency"]["max_per_key"] == 1


def test_overlaps_are_counted_even_when_not_enforced(stripe_emulator, meter, customer):
    stripe_emulator.set_faults(latency_ms=300)
    rs = concurrent_posts(stripe_emulator.url,
                          [event(customer.id, f"o{i}") for i in range(3)])
    assert [r.status_code for r in rs] == [200, 200, 200]
    peak = stripe_emulator.stats()["peak_concurrency"]
    assert peak["by_key"] == {f"test:{customer.id}:execution_seconds": 3}
    assert peak["overall"] >= 3


# --- rate limits ------------------------------------------------------------------------


def burst(url, n, path="/v1/customers", key=TEST_API_KEY, data=None):
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"},
                      timeout=10) as c:
        def one(i):
            if data is None:
                return c.get(path)
            return c.post(path, data=data(i))

        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            rs = list(pool.map(one, range(n)))
        return rs, time.monotonic() - started


def test_test_mode_rate_limit_counts_every_call(stripe_emulator, customer):
    stripe_emulator.set_faults(rate_limit_test=10)
    time.sleep(0.2)  # a full bucket
    rs, elapsed = burst(stripe_emulator.url, 40)
    ok = sum(r.status_code == 200 for r in rs)
    limited = [r for r in rs if r.status_code == 429]
    assert 10 <= ok <= 10 + int(elapsed * 10) + 1
    assert len(limited) == 40 - ok
    assert {r.headers["Stripe-Rate-Limited-Reason"] for r in limited} == {"global-rate"}
    assert stripe_emulator.stats()["rate_limited"]["global-rate"] == len(limited)
    # Live mode has no basic limit here; the bucket refills.
    assert burst(stripe_emulator.url, 5, key=LIVE_API_KEY)[0][0].status_code == 200
    time.sleep(0.3)
    assert burst(stripe_emulator.url, 1)[0][0].status_code == 200


def test_live_meter_event_rate_limit_is_per_endpoint(stripe_emulator):
    live = stripe_emulator.client(LIVE_API_KEY, max_network_retries=0)
    live.v1.billing.meters.create({"display_name": "m", "event_name": "execution_seconds",
                                   "default_aggregation": {"formula": "sum"}})
    cus = live.v1.customers.create({"name": "live"})
    stripe_emulator.set_faults(rate_limit_live=5)
    rs, elapsed = burst(stripe_emulator.url, 20, path=ME, key=LIVE_API_KEY,
                        data=lambda i: event(cus.id, f"live{i}"))
    ok = sum(r.status_code == 200 for r in rs)
    assert 5 <= ok <= 5 + int(elapsed * 5) + 1
    assert {r.headers["Stripe-Rate-Limited-Reason"] for r in rs if r.status_code == 429} \
        == {"endpoint-rate"}
    assert burst(stripe_emulator.url, 20, key=LIVE_API_KEY)[0][-1].status_code == 200
    assert len(stripe_emulator.meter_events(status="accepted")) == ok


def test_stripe_limits_preset():
    c = FaultConfig.stripe_limits()
    assert (c.rate_limit_test, c.rate_limit_live, c.rate_limit_v2_live,
            c.concurrency_limit) == (25, 1000, 10000, True)
    assert c.rate_429 == c.rate_500 == 0


# --- configuration: kwargs, control API, CLI -------------------------------------------


def test_server_kwargs_and_validation():
    with pytest.raises(ValueError):
        EmulatorServer(rate_429=1.5)
    with pytest.raises(TypeError):
        EmulatorServer(rate_4299=0.1)
    with EmulatorServer(rate_500=1.0, seed=1) as server:
        with httpx.Client(base_url=server.url,
                          headers={"Authorization": f"Bearer {TEST_API_KEY}"}) as c:
            r = c.post(ME, data={"event_name": "e", "payload[stripe_customer_id]": "cus_x"})
            assert r.status_code == 500
        assert server.stats()["faults_injected"] == {"500": 1}


def test_control_api_sets_reads_and_resets_faults(stripe_emulator, http, customer):
    url = stripe_emulator.url
    r = httpx.post(f"{url}/_emulator/faults", json={"rate_429": 1, "paths": "all",
                                                    "reason_429": "resource-specific"})
    assert r.status_code == 200 and r.json()["config"]["paths"] is None
    assert httpx.get(f"{url}/_emulator/faults").json()["config"]["rate_429"] == 1.0
    limited = http.get("/v1/customers")
    assert limited.headers["Stripe-Rate-Limited-Reason"] == "resource-specific"
    assert httpx.post(f"{url}/_emulator/faults", data={"rate_500": "2"}).status_code == 400
    assert httpx.post(f"{url}/_emulator/faults", data={"nope": "1"}).status_code == 400

    stats = httpx.get(f"{url}/_emulator/stats").json()
    assert stats["by_status"]["429"] == 1 and stats["rate_limited"] == {"resource-specific": 1}
    assert stats["faults_injected"] == {"429": 1}
    assert "meter_events" in stats and "peak_concurrency" in stats

    reset = httpx.post(f"{url}/_emulator/faults", data={"reset": "true"}).json()
    assert reset["config"] == reset["initial"] and reset["config"]["rate_429"] == 0
    assert http.get("/v1/customers").status_code == 200
    httpx.get(f"{url}/_emulator/stats", params={"reset": "true"})
    assert httpx.get(f"{url}/_emulator/stats").json()["requests"] == 0


def test_cli_flags_configure_faults():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stripe_emulator", "--port", str(port), "--quiet",
         "--fault-429", "0.2", "--fault-500", "0.05", "--fault-lost", "0.02",
         "--fault-timeout", "0.01", "--latency-ms", "5", "--seed", "1",
         "--rate-limit-test", "25", "--rate-limit-live", "1000", "--concurrency-limit",
         "--fault-paths", "all"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                faults = httpx.get(f"{url}/_emulator/faults").json()["config"]
                break
            except httpx.TransportError:
                time.sleep(0.05)
        assert (faults["rate_429"], faults["rate_500"], faults["rate_lost"],
                faults["rate_timeout"], faults["latency_ms"], faults["seed"]) == \
            (0.2, 0.05, 0.02, 0.01, 5.0, 1)
        assert (faults["rate_limit_test"], faults["rate_limit_live"],
                faults["concurrency_limit"], faults["paths"]) == (25.0, 1000.0, True, None)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert "Faults and limits:" in out
    bad = subprocess.run([sys.executable, "-m", "stripe_emulator", "--fault-429", "3"],
                         cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "probability" in bad.stderr
