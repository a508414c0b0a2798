import os
from datetime import UTC, datetime, timedelta

import pytest
from dateutil.relativedelta import relativedelta
from django.db import connection

from tests.billing_fixtures import subscribe

# The `stripe_emulator` fixture is the stripe-emulator distribution's pytest plugin
# (its pytest11 entry point; requirements.txt installs it).


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """A PostgreSQL test database of this run's own, so two `make test` runs at once on
    one server do not drop each other's (SQLite's test database is in memory already)."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if "postgresql" in database["ENGINE"]:
        name = database.get("TEST", {}).get("NAME") or f"test_{database['NAME']}"
        database.setdefault("TEST", {})["NAME"] = f"{name}_{os.getpid()}"


@pytest.fixture
def stripe_emulated(settings, stripe_emulator):
    """Point the app at a fresh local Stripe emulator for this test."""
    settings.STRIPE_SECRET_KEY = stripe_emulator.api_key
    settings.STRIPE_TEST_SECRET_KEY = stripe_emulator.api_key
    settings.STRIPE_LIVE_MODE = False
    settings.STRIPE_API_BASE = stripe_emulator.url
    settings.STRIPE_API_HOST = stripe_emulator.url
    settings.STRIPE_METER_EVENTS_API_BASE = stripe_emulator.url
    settings.EPSILON = {**settings.EPSILON, "STRIPE_BACKOFF_SECONDS": 0.01}  # retry quickly
    return stripe_emulator


@pytest.fixture
def billing(stripe_emulated):
    return subscribe(stripe_emulated, days_ago=10)


@pytest.fixture
def ended_billing(stripe_emulated):
    """
    A subscription whose first monthly period ended about two days ago (more than a day:
    tests report a day past its end), subscribed a month before that: a fixed number of
    days ago (33) ended it two days ago in some months and five in others, and a test
    once passed or failed by the date. (Where last month was shorter than the day of
    the month, Stripe's period ends on its anchor day, up to three days earlier: the
    tests that use it were checked to pass with the period ended two to five days ago.)
    """
    today = datetime.now(UTC)
    days_ago = (today - (today - timedelta(days=2) - relativedelta(months=1))).days
    billing = subscribe(stripe_emulated, days_ago=days_ago)
    assert billing.period.billing_end < datetime.now(UTC) - timedelta(hours=23)
    return billing


@pytest.fixture
def postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: `make test` runs the suite there too")


def pytest_sessionfinish(session, exitstatus):
    # A run where nothing passed proves nothing: CI must not go green on it.
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    passed = len(reporter.stats.get("passed", [])) if reporter else 0
    if exitstatus == pytest.ExitCode.OK and passed == 0:
        session.exitstatus = pytest.ExitCode.NO_TESTS_COLLECTED
