"""Shared fixtures for the emulator's own tests. The `stripe_emulator` fixture
comes from stripe_emulator.pytest_plugin (the distribution's pytest11 entry point)."""

import calendar
from datetime import datetime

import httpx
import pytest
import stripe


def ts(*args) -> int:
    """UTC timestamp: ts(2026, 1, 31, 12) -> 1769860800."""
    return calendar.timegm(datetime(*args).timetuple())


@pytest.fixture
def client(stripe_emulator) -> stripe.StripeClient:
    """stripe-python against the emulator, no retries (tests see every response)."""
    return stripe.StripeClient(
        stripe_emulator.api_key,
        base_addresses={"api": stripe_emulator.url},
        http_client=stripe.HTTPXClient(allow_sync_methods=True),
        max_network_retries=0,
    )


@pytest.fixture
def http(stripe_emulator):
    """Raw HTTP with a valid key, for wire-level checks."""
    with httpx.Client(base_url=stripe_emulator.url,
                      headers={"Authorization": f"Bearer {stripe_emulator.api_key}"},
                      timeout=30) as c:
        yield c


@pytest.fixture
def meter(client):
    return client.v1.billing.meters.create({
        "display_name": "Execution seconds",
        "event_name": "execution_seconds",
        "default_aggregation": {"formula": "sum"},
    })


@pytest.fixture
def customer(client):
    return client.v1.customers.create({"email": "ada@example.com", "name": "Ada"})


@pytest.fixture
def metered_price(client, meter):
    """0.05 cents per unit of `meter` (sum), monthly: Stripe's own rounding example."""
    prod = client.v1.products.create({"name": "Epsilon"})
    return client.v1.prices.create({"currency": "usd", "product": prod.id,
                                    "unit_amount_decimal": "0.05",
                                    "recurring": {"interval": "month", "usage_type": "metered",
                                                  "meter": meter.id}})


class Receiver:
    """A webhook receiver on a local port: records requests, answers from a script."""

    def __init__(self):
        import http.server
        import threading

        self.requests = []
        self.statuses = []  # answers to give, in order; then 200
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.requests.append({"headers": dict(self.headers),
                                          "body": body.decode("utf-8")})
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/stripe/webhook/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self):
        import json
        return [json.loads(r["body"]) for r in self.requests]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()
