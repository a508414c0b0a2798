"""The UsageReport audit in the admin: read-only, filterable, searchable, linked to Stripe."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from djstripe import models as djstripe_models

from tests.factories import PERIOD_START, make_meter, make_report

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:billing_usagereport_changelist")


@pytest.fixture
def reports():
    meter = make_meter()
    djstripe_models.Customer.objects.create(id="cus_Alice0001", email="alice@example.com", livemode=False)
    sent = make_report(meter, customer_id="cus_Alice0001", status="sent", sent_at=timezone.now())
    failed = make_report(
        meter,
        customer_id="cus_Bob0002",  # not mirrored: the ledger still shows it
        subscription_item_id="si_Bob",
        identifier="bob-1",
        status="failed",
        error="Stripe answered 400: timestamp too old",
        trigger="webhook",
        period_start=PERIOD_START - timedelta(days=30),
        period_end=PERIOD_START,
        usage_until=PERIOD_START,
    )
    return sent, failed


def test_the_list_shows_every_report_with_stripe_links(admin_client, reports):
    response = admin_client.get(CHANGELIST)
    html = response.content.decode()

    assert response.status_code == 200
    assert "alice@example.com" in html
    assert "cus_Bob0002" in html  # the unmirrored customer's row is not hidden
    assert 'href="https://dashboard.stripe.com/test/customers/cus_Alice0001"' in html
    assert 'href="https://dashboard.stripe.com/test/customers/cus_Bob0002"' in html
    assert response.context["cl"].result_count == 2
    customer_filter = next(f for f in response.context["cl"].filter_specs if f.title == "customer")
    assert [label for _, label in customer_filter.lookup_choices] == [
        "alice@example.com (cus_Alice0001)",
        "cus_Bob0002",
    ]


@pytest.mark.parametrize(
    ("query", "expected_identifiers"),
    [
        ({"status__exact": "failed"}, {"bob-1"}),
        ({"trigger__exact": "command"}, {"test-identifier-1"}),
        ({"customer": "cus_Alice0001"}, {"test-identifier-1"}),
        ({"q": "alice@example"}, {"test-identifier-1"}),
        ({"q": "cus_Bob0002"}, {"bob-1"}),
        ({"customer": "cus_Bob0002"}, {"bob-1"}),
        ({"q": "si_Bob"}, {"bob-1"}),
        ({"q": "identifier-1"}, {"test-identifier-1"}),
        ({"period_start__year": "2026", "period_start__month": "10"}, {"bob-1"}),
    ],
    ids=["status", "trigger", "customer", "search-email", "search-customer-id", "unmirrored-customer", "search-item", "search-identifier", "date-hierarchy"],
)
def test_filters_search_and_date_hierarchy(admin_client, reports, query, expected_identifiers):
    response = admin_client.get(CHANGELIST, query)
    assert response.status_code == 200
    assert {r.identifier for r in response.context["cl"].result_list} == expected_identifiers


def test_the_audit_is_read_only(admin_client, reports):
    sent, _ = reports
    list_html = admin_client.get(CHANGELIST).content.decode()
    assert reverse("admin:billing_usagereport_add") not in list_html
    assert admin_client.get(reverse("admin:billing_usagereport_add")).status_code == 403

    detail = admin_client.get(reverse("admin:billing_usagereport_change", args=[sent.pk]))
    assert detail.status_code == 200
    html = detail.content.decode()
    assert 'name="_save"' not in html  # no form to submit
    assert sent.identifier in html

    response = admin_client.post(reverse("admin:billing_usagereport_delete", args=[sent.pk]), {"post": "yes"})
    assert response.status_code == 403
    assert type(sent).objects.filter(pk=sent.pk).exists()


def test_the_detail_shows_the_error_of_a_failed_report(admin_client, reports):
    _, failed = reports
    html = admin_client.get(reverse("admin:billing_usagereport_change", args=[failed.pk])).content.decode()
    assert "Stripe answered 400: timestamp too old" in html
    assert "https://dashboard.stripe.com/test/billing/meters/" in html


def test_staff_without_permission_cannot_see_the_audit(client, django_user_model, reports):
    user = django_user_model.objects.create_user("clerk", password="pw-12345-long", is_staff=True)
    client.force_login(user)
    assert client.get(CHANGELIST).status_code == 403


def test_every_admin_page_says_when_it_talks_to_the_emulator(admin_client, settings):
    settings.STRIPE_API_BASE = "http://127.0.0.1:12111"
    for page in ("/admin/", "/admin/billing/usagereport/"):
        html = admin_client.get(page).content.decode()
        assert "Stripe emulator: this app talks to the local emulator at <code>http://127.0.0.1:12111</code>" in html
    settings.STRIPE_API_BASE = "https://api.stripe.com"
    assert "Stripe emulator" not in admin_client.get("/admin/").content.decode()
