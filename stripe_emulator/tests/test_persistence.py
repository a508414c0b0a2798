"""State survives a restart with a database file; without one it does not."""

import httpx
import stripe

from stripe_emulator import EmulatorServer
from stripe_emulator.pytest_plugin import TEST_API_KEY


def client_for(server):
    return stripe.StripeClient(TEST_API_KEY, base_addresses={"api": server.url},
                               http_client=stripe.HTTPXClient(allow_sync_methods=True),
                               max_network_retries=0)


def test_objects_events_idempotency_and_clock_survive_restart(tmp_path):
    db = str(tmp_path / "emu.sqlite3")
    with EmulatorServer(db_path=db) as server:
        c = client_for(server)
        server.store.set_time(1_790_000_000)
        meter = c.v1.billing.meters.create({"display_name": "m", "event_name": "e",
                                            "default_aggregation": {"formula": "sum"}})
        cus = c.v1.customers.create({"email": "p@example.com", "metadata": {"t": "1"}})
        prod = c.v1.products.create({"name": "P"})
        price = c.v1.prices.create({"currency": "usd", "product": prod.id,
                                    "unit_amount_decimal": "0.5", "lookup_key": "usage",
                                    "recurring": {"interval": "month", "usage_type": "metered",
                                                  "meter": meter.id}})
        sub = c.v1.subscriptions.create({"customer": cus.id, "items": [{"price": price.id}]})
        c.v1.billing.meter_events.create({"event_name": "e", "identifier": "ev-1",
                                          "payload": {"stripe_customer_id": cus.id,
                                                      "value": "2.5"}})
        first = httpx.post(f"{server.url}/v1/products", data={"name": "Q"},
                           headers={"Authorization": f"Bearer {TEST_API_KEY}",
                                    "Idempotency-Key": "persisted"}).json()

    with EmulatorServer(db_path=db) as server:  # a new process would see the same
        c = client_for(server)
        assert c.v1.customers.retrieve(cus.id).metadata.to_dict() == {"t": "1"}
        assert c.v1.prices.list({"lookup_keys": ["usage"]}).data[0].id == price.id
        got = c.v1.subscriptions.retrieve(sub.id)
        assert got["items"].data[0].price.id == price.id
        assert abs(server.store.now() - 1_790_000_000) < 60  # the shifted clock persisted
        assert server.store.meter_event_totals(meter=meter.id)["total"] == "2.5"
        r = httpx.post(f"{server.url}/v1/billing/meter_events", data={
            "event_name": "e", "identifier": "ev-1", "payload[stripe_customer_id]": cus.id,
            "payload[value]": "1"}, headers={"Authorization": f"Bearer {TEST_API_KEY}"})
        assert r.status_code == 400  # the dedupe window survived too
        again = httpx.post(f"{server.url}/v1/products", data={"name": "Q"},
                           headers={"Authorization": f"Bearer {TEST_API_KEY}",
                                    "Idempotency-Key": "persisted"})
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json()["id"] == first["id"]
        # New objects keep coming after the old ones in list order.
        newer = c.v1.customers.create({"name": "after restart"})
        assert [x.id for x in c.v1.customers.list().data] == [newer.id, cus.id]


def test_memory_store_starts_empty():
    with EmulatorServer() as server:
        client_for(server).v1.customers.create({"name": "x"})
    with EmulatorServer() as server:
        assert client_for(server).v1.customers.list().data == []


def test_reset_empties_a_persistent_store(tmp_path):
    db = str(tmp_path / "emu.sqlite3")
    with EmulatorServer(db_path=db) as server:
        client_for(server).v1.customers.create({"name": "x"})
        assert httpx.post(f"{server.url}/_emulator/reset").json()["reset"] is True
    with EmulatorServer(db_path=db) as server:
        assert client_for(server).v1.customers.list().data == []
