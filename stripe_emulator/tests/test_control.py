"""The /_emulator control API over HTTP, and the clock behind it."""

import httpx

from stripe_emulator.clock import Clock


def test_health(stripe_emulator):
    h = httpx.get(f"{stripe_emulator.url}/_emulator/health").json()
    assert h["status"] == "ok" and h["api_version"] == "2026-08-26.dahlia"
    assert h["account"] == "acct_1EmuLat0rEpsi10n" and h["persistent"] is False


def test_time_set_freeze_advance_and_real(stripe_emulator, http):
    base = f"{stripe_emulator.url}/_emulator/time"
    t = httpx.post(base, data={"now": "1790000000", "freeze": "true"}).json()
    assert (t["now"], t["frozen"]) == (1790000000, True)
    t = httpx.post(base, json={"advance": 90}).json()
    assert t["now"] == 1790000090 and t["frozen"] is True
    assert httpx.get(base).json()["now"] == 1790000090
    # API objects use the emulator's clock.
    assert http.post("/v1/customers", data={}).json()["created"] == 1790000090
    t = httpx.post(base, data={"freeze": "false"}).json()
    assert t["frozen"] is False and abs(t["now"] - 1790000090) <= 2
    t = httpx.post(base, data={"real": "true"}).json()
    assert abs(t["now"] - t["real_now"]) <= 1 and t["offset"] == 0
    assert httpx.post(base, data={"now": "soon"}).status_code == 400


def test_meter_events_totals_and_requests(stripe_emulator, http, meter, customer):
    for i, v in enumerate(["1.1", "2.2", "oops"]):
        http.post("/v1/billing/meter_events", data={
            "event_name": "execution_seconds", "identifier": f"e{i}",
            "payload[stripe_customer_id]": customer.id, "payload[value]": v})
    url = stripe_emulator.url
    events = httpx.get(f"{url}/_emulator/meter_events",
                       params={"customer": customer.id}).json()
    assert [(e["identifier"], e["value"], e["status"]) for e in events["data"]] == [
        ("e0", "1.1", "accepted"), ("e1", "2.2", "accepted"), ("e2", None, "error")]
    assert events["data"][2]["error_code"] == "meter_event_invalid_value"
    assert events["data"][2]["payload"]["value"] == "oops"
    errors = httpx.get(f"{url}/_emulator/meter_events", params={"status": "error"}).json()
    assert [e["identifier"] for e in errors["data"]] == ["e2"]
    totals = httpx.get(f"{url}/_emulator/meter_event_totals",
                       params={"meter": meter.id, "customer": customer.id}).json()
    assert (totals["total"], totals["count"], totals["aggregated_value"],
            totals["formula"]) == ("3.3", 2, "3.3", "sum")
    assert totals["by_customer"] == {customer.id: {"total": "3.3", "count": 2}}
    reqs = httpx.get(f"{url}/_emulator/requests",
                     params={"path": "/v1/billing/meter_events"}).json()["data"]
    assert len(reqs) == 3
    assert reqs[0]["params"]["payload"] == {"stripe_customer_id": customer.id, "value": "1.1"}
    assert reqs[0]["status"] == 200 and reqs[0]["api_key"].startswith("sk_test_****")
    one = httpx.get(f"{url}/_emulator/requests/{reqs[0]['id']}").json()
    assert one["id"] == reqs[0]["id"]


def test_objects_and_reset(stripe_emulator, http):
    cus = http.post("/v1/customers", data={"name": "x"}).json()
    url = stripe_emulator.url
    listed = httpx.get(f"{url}/_emulator/objects", params={"type": "customer"}).json()
    assert [o["id"] for o in listed["data"]] == [cus["id"]]
    assert httpx.get(f"{url}/_emulator/objects/{cus['id']}").json()["name"] == "x"
    assert httpx.post(f"{url}/_emulator/reset").json()["reset"] is True
    assert http.get("/v1/customers").json()["data"] == []
    assert httpx.get(f"{url}/_emulator/requests").json()["data"][-1]["path"] == "/v1/customers"
    assert httpx.get(f"{url}/_emulator/nope").status_code == 404


def test_clock_unit():
    fake = [1000.0]
    c = Clock(source=lambda: fake[0])
    assert c.now() == 1000
    c.advance(50)
    fake[0] += 10
    assert c.now() == 1060  # running with an offset
    c.freeze()
    fake[0] += 10
    assert c.now() == 1060
    c.unfreeze()
    fake[0] += 5
    assert c.now() == 1065
    c.reset()
    assert c.now() == 1025
