"""
Clean pages: mirrored Stripe objects are read-only, titled by name and id, never
deletable here; meters and reports neither; in emulator mode links say where they lead.
"""

import re

import pytest
from django.urls import reverse
from djstripe.models import Customer, Price, Product, Subscription

from billing.models import Meter
from tests.admin_helpers import source  # noqa: F401 (source: a fixture)

pytestmark = pytest.mark.django_db



def named_customer(billing):
    customer = Customer.objects.get(id=billing.customer_id)
    customer.stripe_data = {**customer.stripe_data, "name": "Ada Lovelace"}
    customer.email = "ada@example.com"
    customer.save()
    return customer


def test_customer_and_subscription_pages_are_titled_by_name_and_id(admin_client, billing, source):
    customer = named_customer(billing)
    subscription = Subscription.objects.get()

    page = admin_client.get(reverse("admin:djstripe_customer_change", args=[customer.pk])).content.decode()
    assert "<h1>Customer Ada Lovelace</h1>" in page
    assert f"<h2>{customer.id} · ada@example.com</h2>" in page

    page = admin_client.get(reverse("admin:djstripe_subscription_change", args=[subscription.pk])).content.decode()
    assert "<h1>Subscription of Ada Lovelace</h1>" in page and f"<h2>{subscription.id} · active</h2>" in page
    assert "&lt;id=" not in page and "<id=" not in page
    # dj-stripe's subscription-level period and plan are empty since Stripe moved them to items: not shown.
    assert "Current period start" not in page and "Plan:" not in page


@pytest.mark.parametrize("model", [Customer, Subscription, Price, Product])
def test_mirrored_objects_are_read_only_and_never_deleted_here(admin_client, billing, source, model):
    obj = model.objects.first()
    name = model._meta.model_name
    page = admin_client.get(reverse(f"admin:djstripe_{name}_change", args=[obj.pk])).content.decode()

    assert 'name="_save"' not in page and "deletelink" not in page
    assert not re.search(r"<textarea[^>]*name=", page)  # no editable JSON
    assert admin_client.post(reverse(f"admin:djstripe_{name}_delete", args=[obj.pk]), {"post": "yes"}).status_code == 403
    assert admin_client.post(reverse(f"admin:djstripe_{name}_change", args=[obj.pk]), {}).status_code == 403
    assert model.objects.filter(pk=obj.pk).exists()
    assert reverse(f"admin:djstripe_{name}_add") not in admin_client.get(reverse(f"admin:djstripe_{name}_changelist")).content.decode()


def test_meters_cannot_be_deleted(admin_client, billing):
    meter = Meter.objects.get()
    page = admin_client.get(reverse("admin:billing_meter_change", args=[meter.pk])).content.decode()
    assert "deletelink" not in page
    assert admin_client.post(reverse("admin:billing_meter_delete", args=[meter.pk]), {"post": "yes"}).status_code == 403


def test_dashboard_links_say_they_point_at_the_emulator(admin_client, billing, source, settings):
    customer = Customer.objects.get()
    settings.STRIPE_API_BASE = "http://127.0.0.1:12111"
    page = admin_client.get(reverse("admin:djstripe_customer_change", args=[customer.pk])).content.decode()
    assert "View on Stripe ↗ (emulator: not there)" in page
    assert re.search(r'class="epsilon-emulated"[^>]*>[^<]*↗ \(emulator\)</a>', page)

    settings.STRIPE_API_BASE = "https://api.stripe.com"
    page = admin_client.get(reverse("admin:djstripe_customer_change", args=[customer.pk])).content.decode()
    assert "(emulator" not in page and "View on Stripe ↗</a>" in page


def test_a_report_and_a_reconciliation_show_figures_not_raw_decimals(admin_client):
    from decimal import Decimal

    from django.utils import timezone

    from billing.models import PeriodReconciliation
    from tests.factories import make_meter, make_report

    meter = make_meter()
    report = make_report(meter, status="sent", sent_at=timezone.now(), usage_total=Decimal("1128.5"), value_sent=Decimal("1128"))
    check = PeriodReconciliation.objects.create(
        customer_id=report.customer_id, meter=meter, period_start=report.period_start, period_end=report.period_end,
        usage_until=report.usage_until, source_total=Decimal("1128.5"), ledger_units=Decimal("1128"),
        stripe_units=Decimal("1153"), drift=Decimal("25"), status="drift", checked_at=timezone.now(),
    )
    detail = admin_client.get(reverse("admin:billing_usagereport_change", args=[report.pk])).content.decode()
    assert "1,128.5" in detail and "+1,128" in detail and ".000000" not in detail
    detail = admin_client.get(reverse("admin:billing_periodreconciliation_change", args=[check.pk])).content.decode()
    assert "+25" in detail and "1,153" in detail and ".000000" not in detail
