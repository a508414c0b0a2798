"""Shared by the admin tests: a recorded usage source everywhere, more customers, users."""

import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from django.contrib.auth.models import Permission
from djstripe.models import Price

from billing import stripe_api
from billing.admin import selectors as admin_selectors
from billing.services import reconciliation, stripe_sync, usage_reporting

# Every module that reads the usage source: the engine, reconciliation and the admin pages.
SOURCE_READERS = (usage_reporting, reconciliation, admin_selectors)


@pytest.fixture
def source(billing):
    """The billing fixture's recorded usage source, seen by every module that reads one
    (import it into a test module to use it as a fixture)."""
    with patch_source(billing.source):
        yield billing.source


def patch_source(source):
    stack = ExitStack()
    for module in SOURCE_READERS:
        stack.enter_context(mock.patch.object(module, "get_usage_source", return_value=source))
    return stack


def add_customer(billing, email: str, days_ago: int = 5) -> str:
    """Another customer on the metered price, subscribed `days_ago` days ago."""
    client = stripe_api.get_client()
    start = datetime.now(UTC).replace(minute=15, second=0, microsecond=0) - timedelta(days=days_ago)
    billing.emulator.set_time(int(start.timestamp()), freeze=True)
    try:
        customer = client.v1.customers.create({"email": email, "name": email})
        subscription = client.v1.subscriptions.create(
            {"customer": customer.id, "items": [{"price": Price.objects.get().id}]}
        )
        stripe_sync.sync_customer(customer)
        stripe_sync.sync_subscription(subscription)
    finally:
        billing.emulator.set_time(int(time.time()), freeze=False)
    return customer.id


def staff(django_user_model, username="operator", *, may_report: bool, codenames=()):
    """Staff with view permissions on the billing pages, and maybe report_usage_now."""
    user = django_user_model.objects.create_user(username, password="pw-long-enough-1", is_staff=True)
    views = ["view_customer", "view_subscription", "view_usagereport", "view_periodreconciliation", *codenames]
    user.user_permissions.add(*Permission.objects.filter(codename__in=views))
    if may_report:
        user.user_permissions.add(Permission.objects.get(codename="report_usage_now"))
    return user
