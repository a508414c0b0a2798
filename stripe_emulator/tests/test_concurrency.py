"""Many clients at once: no lost or doubled events, exact totals."""

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import pytest

from stripe_emulator import EmulatorServer
from stripe_emulator.pytest_plugin import TEST_API_KEY


@pytest.mark.parametrize("persistent", [False, True])
def test_parallel_meter_events_sum_exactly(tmp_path, persistent):
    db = str(tmp_path / "c.sqlite3") if persistent else None
    with EmulatorServer(db_path=db) as server:
        headers = {"Authorization": f"Bearer {TEST_API_KEY}"}
        with httpx.Client(base_url=server.url, headers=headers) as c:
            meter = c.post("/v1/billing/meters", data={
                "display_name": "m", "event_name": "e",
                "default_aggregation[formula]": "sum"}).json()
            customers = [c.post("/v1/customers", data={"name": f"c{i}"}).json()["id"]
                         for i in range(4)]

        threads, per_thread = 16, 25
        # Each event is worth 0.01 * (n % 7 + 1): a float sum would drift.
        values = [f"0.0{n % 7 + 1}" for n in range(threads * per_thread)]

        def worker(t):
            statuses = []
            with httpx.Client(base_url=server.url, headers=headers, timeout=30) as c:
                for i in range(per_thread):
                    n = t * per_thread + i
                    r = c.post("/v1/billing/meter_events", data={
                        "event_name": "e", "identifier": f"ev-{n}",
                        "payload[stripe_customer_id]": customers[n % 4],
                        "payload[value]": values[n]})
                    statuses.append(r.status_code)
                    # A duplicate identifier from another thread must be refused exactly once.
                    if i == 0:
                        statuses.append(c.post("/v1/billing/meter_events", data={
                            "event_name": "e", "identifier": "shared",
                            "payload[stripe_customer_id]": customers[0],
                            "payload[value]": "1000"}).status_code)
            return statuses

        with ThreadPoolExecutor(threads) as pool:
            statuses = [s for batch in pool.map(worker, range(threads)) for s in batch]

        assert statuses.count(200) == threads * per_thread + 1
        assert statuses.count(400) == threads - 1
        totals = server.store.meter_event_totals(meter=meter["id"])
        expected = sum(Decimal(v) for v in values) + Decimal(1000)
        assert Decimal(totals["total"]) == expected
        assert totals["count"] == threads * per_thread + 1
        assert sum(v["count"] for v in totals["by_customer"].values()) == totals["count"]
