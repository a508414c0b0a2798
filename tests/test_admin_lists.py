"""
The lists an operator scans: the audit, customers and subscriptions show the columns
that matter first (who, usage, estimate, state), in words and formatted numbers.
"""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from djstripe.models import Customer

from billing.models import UsageReport

from tests.admin_helpers import source  # noqa: F401 (source: a fixture)

pytestmark = pytest.mark.django_db
HOUR = timedelta(hours=1)



def name_customer(customer_id, name, email):
    """dj-stripe 2.11 keeps a customer's name in its Stripe data."""
    customer = Customer.objects.get(id=customer_id)
    customer.stripe_data = {**customer.stripe_data, "name": name}
    customer.email = email
    customer.save()


def headers(html):
    """The changelist's column headers, in order, as an operator reads them."""
    thead = re.search(r"<thead>(.*?)</thead>", html, re.DOTALL).group(1)
    cells = re.findall(r'<th scope="col"[^>]*>(.*?)</th>', thead, re.DOTALL)
    return [" ".join(re.sub(r"<[^>]+>", " ", c).split()) for c in cells]


def row_text(html):
    body = re.search(r"<tbody>(.*?)</tbody>", html, re.DOTALL).group(1)
    return " ".join(re.sub(r"<[^>]+>", " ", body).split())


def test_the_audit_list_shows_who_period_value_status_and_trigger(admin_client, billing, source):
    name_customer(billing.customer_id, "Ada Lovelace", "ada@example.com")
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 1128)
    billing.run(as_of=billing.hour0 + 3 * HOUR)
    html = admin_client.get(reverse("admin:billing_usagereport_changelist")).content.decode()

    assert headers(html)[1:] == ["Created (UTC)", "Customer", "Period (UTC)", "Sent (units)", "Status", "Trigger"]
    text = row_text(html)
    assert "Ada Lovelace ada@example.com" in text and billing.customer_id in text
    assert "+1,128" in text and "1128.000000" not in text and "✓ Sent" in text
    start = billing.period.start
    assert re.search(rf'<span class="epsilon-period">{start:%Y-%m-%d %H:%M} → \d\d-\d\d \d\d:\d\d</span>', html)
    assert "1 unit = 1 billed second of execution" in html
    assert UsageReport.objects.get().price_id.startswith("price_")  # the Stripe id, not the mirror's row id


def test_customer_and_subscription_lists_lead_with_usage_estimate_and_state(admin_client, billing, source):
    name_customer(billing.customer_id, "Ada Lovelace", "ada@example.com")
    billing.source.add(billing.customer_id, billing.hour0 + HOUR, 1000)
    billing.run(as_of=billing.hour0 + 2 * HOUR)
    billing.source.add(billing.customer_id, billing.hour0 + 3 * HOUR, 128)  # not reported yet

    customers = admin_client.get(reverse("admin:djstripe_customer_changelist")).content.decode()
    assert headers(customers)[1:5] == ["Customer", "Usage this period", "Estimate", "Latest report"]
    for dropped in ("Subscriber", "Default payment method", "Djstripe owner account", "Currency"):
        assert dropped not in headers(customers)
    text = row_text(customers)
    assert "Ada Lovelace ada@example.com 1,128 units +128 not at Stripe yet $112.80 ✓ Sent" in text

    subscriptions = admin_client.get(reverse("admin:djstripe_subscription_changelist")).content.decode()
    assert headers(subscriptions)[1:6] == ["Subscription", "Usage this period", "Estimate", "Latest report", "Status"]
    assert "Ada Lovelace ada@example.com 1,128 units +128 not at Stripe yet $112.80 ✓ Sent" in row_text(subscriptions)
