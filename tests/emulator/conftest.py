"""Shared fixtures for the emulator's own tests. The `stripe_emulator` fixture
comes from stripe_emulator.pytest_plugin (loaded by tests/conftest.py)."""

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
