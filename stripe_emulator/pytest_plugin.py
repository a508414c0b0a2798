"""pytest fixtures for the local Stripe emulator (no Django involved).

Enable with `pytest_plugins = ["stripe_emulator.pytest_plugin"]` in a root
conftest.py. Fixtures:

* `stripe_emulator_server` (session): one in-memory emulator per test process
  on a free port, so pytest-xdist workers each get their own. Webhook retries
  are quick there (TEST_WEBHOOK_RETRY_DELAYS) instead of Stripe's hours.
* `stripe_emulator` (function): the same server, reset (empty state, real
  time, faults and limits off, counters cleared) before the test; returns a
  `StripeEmulator` handle.
"""

from __future__ import annotations

from typing import Optional

import pytest

from .server import EmulatorServer
from .store import Store

TEST_API_KEY = "sk_test_EmulatorTestKey0000000000000000"
TEST_WEBHOOK_RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4)
LIVE_API_KEY = "sk_live_EmulatorLiveKey0000000000000000"


class StripeEmulator:
    """What a test needs: where the emulator is, a key, and its state."""

    api_key = TEST_API_KEY
    live_api_key = LIVE_API_KEY

    def __init__(self, server: EmulatorServer):
        self.server = server
        self.url = server.url
        self.store: Store = server.store
        self.app = server.app
        self.gates = []

    # --- time ---
    def now(self) -> int:
        return self.store.now()

    def set_time(self, ts: int, freeze: Optional[bool] = None) -> int:
        return self.store.set_time(ts, freeze=freeze)

    def freeze_time(self, ts: Optional[int] = None) -> int:
        return self.store.freeze_time(ts)

    def advance_time(self, seconds: int) -> int:
        return self.store.advance_time(seconds)

    # --- state ---
    def reset(self) -> None:
        self.store.reset()

    def meter_events(self, **filters):
        return self.store.meter_events(**filters)

    def meter_event_totals(self, meter=None, customer=None, start=None, end=None) -> dict:
        return self.store.meter_event_totals(meter=meter, customer=customer, start=start, end=end)

    def requests(self, method=None, path=None, path_prefix=None):
        return self.store.requests(method=method, path=path, path_prefix=path_prefix)

    # --- faults, limits, counters (faults/) ---
    def set_faults(self, **options):
        """E.g. set_faults(rate_429=0.2, seed=1), set_faults(concurrency_limit=True),
        set_faults(rate_limit_test=25), set_faults(latency_ms=50, paths=None).
        Options not given keep their value; the fixture turns all off again."""
        return self.app.faults.set(**options)

    def faults(self) -> dict:
        return self.app.faults.config.as_dict()

    def reset_faults(self) -> None:
        """Faults and limits off (the server's startup configuration), counters cleared."""
        self.app.faults.reset()

    def gate(self, path: str = "/v1/billing/meter_events", *, let_through: int = 0,
             hold: str = "before"):
        """Hold requests to `path` after the first `let_through` (gate.py): kill a
        client at an exact point of its send. Removed by the fixture's reset."""
        from .gate import RequestGate

        gate = RequestGate(path, let_through=let_through, hold=hold)
        self.app.remove("gate")
        self.app.use(gate, name="gate", before="idempotency")
        self.gates.append(gate)
        return gate

    def stats(self) -> dict:
        """Requests by status, 429s by reason, injected faults, peak concurrency
        (overall, meter event calls, per mode:customer:event_name), meter events."""
        return self.app.faults.stats(self.store)

    # --- billing cycle, events, webhooks ---
    def events(self, type: Optional[str] = None) -> list:
        """Emitted events, oldest first (raw stored documents)."""
        out = list(reversed(self.store.all("event")))
        return [e for e in out if type is None or e["type"] == type]

    def invoices(self, customer: Optional[str] = None) -> list:
        out = list(reversed(self.store.all("invoice")))
        return [i for i in out if customer is None or i["customer"] == customer]

    def advance_test_clock(self, clock_id: str, frozen_time: int, timeout: float = 10.0) -> dict:
        """Advance a test clock through the API and wait until it is ready."""
        import stripe

        client = self.client()
        client.v1.test_helpers.test_clocks.advance(clock_id, {"frozen_time": frozen_time})
        if not self.server.app.scheduler.wait_idle(timeout):
            raise TimeoutError(f"test clock {clock_id} still advancing after {timeout}s")
        clock = client.v1.test_helpers.test_clocks.retrieve(clock_id)
        if clock.status != "ready":
            raise stripe.StripeError(f"test clock {clock_id} is {clock.status}")
        return clock

    def set_subscription_status(self, subscription_id: str, status: str) -> dict:
        """Test-only: set a subscription's status to `past_due`, `unpaid`,
        `incomplete_expired` (or back to `active`), as failed payments would on
        Stripe, emitting `customer.subscription.updated`. Returns the stored object."""
        from .resources.subscriptions import force_status

        return force_status(self.store, subscription_id, status)

    def validate_meter_events(self) -> list:
        """Run Stripe's asynchronous meter event validation now (the fixture turns the
        automatic per-tick run off): one error report thin event per meter (and one
        `v1.billing.meter.no_meter_found` per mode) for the meter event errors stored
        since the last run. Returns the stored events (created is an int), rendered
        ones come from GET /v2/core/events/{id}."""
        return self.app.validate_meter_events()

    def thin_events(self, type: Optional[str] = None, object_id: Optional[str] = None) -> list:
        """v2 thin events, oldest first, rendered as GET /v2/core/events/{id} answers."""
        from .resources.v2_events import EVENT_TYPE, render_event

        out = [render_event(e) for e in reversed(self.store.all(EVENT_TYPE))]
        return [e for e in out if (type is None or e["type"] == type)
                and (object_id is None or (e.get("related_object") or {}).get("id") == object_id)]

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Test clocks advanced and webhook deliveries (retries included) done."""
        return self.server.wait_idle(timeout)

    def flush_webhooks(self, timeout: float = 10.0) -> bool:
        return self.server.flush_webhooks(timeout)

    def webhook_deliveries(self, **filters) -> list:
        return self.app.webhooks.deliveries(**filters)

    def client(self, api_key: Optional[str] = None, **kwargs):
        """A stripe-python StripeClient aimed at the emulator (imports stripe lazily),
        for the API and the meter event stream (`base_addresses` "api" and
        "meter_events"); pass a meter event session's token as `api_key` for the
        stream."""
        import stripe

        kwargs.setdefault("http_client", stripe.HTTPXClient(allow_sync_methods=True))
        return stripe.StripeClient(api_key or self.api_key,
                                   base_addresses={"api": self.url, "meter_events": self.url},
                                   **kwargs)

    def stream_client(self, api_key: Optional[str] = None, **kwargs):
        """A client for the v2 meter event stream: creates a meter event session
        with `api_key` (the test key by default) and returns a StripeClient that
        authenticates with its token."""
        session = self.client(api_key).v2.billing.meter_event_session.create()
        return self.client(session.authentication_token, **kwargs)


@pytest.fixture(scope="session")
def stripe_emulator_server():
    server = EmulatorServer(port=0, webhook_retry_delays=TEST_WEBHOOK_RETRY_DELAYS).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def stripe_emulator(stripe_emulator_server) -> StripeEmulator:
    stripe_emulator_server.store.reset()
    stripe_emulator_server.app.revoked_keys.clear()
    stripe_emulator_server.app.reset_pipeline()
    stripe_emulator_server.app.faults.reset()
    # Meter error reports only when a test asks (validate_meter_events), so no
    # test depends on when the scheduler ticks.
    stripe_emulator_server.app.meter_validation_auto = False
    emulator = StripeEmulator(stripe_emulator_server)
    yield emulator
    for gate in emulator.gates:  # a failed test must not leave server threads held
        gate.release(run=False)
