"""Bad input anywhere gives a clear message and a clear ledger row; other customers go on."""

from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
import respx

from billing.models import Meter, UsageReport
from billing.usage_sources.openmeter import OpenMeterClient, OpenMeterUsageSource
from embedded_meter import services as meter_services
from billing.usage_sources.embedded import EmbeddedUsageSource
from tests.factories import execution

pytestmark = pytest.mark.django_db
HOUR = timedelta(hours=1)


def test_an_unknown_source_meter_slug_fails_its_reports_clearly(billing):
    Meter.objects.update(source_meter_slug="no-such-meter")
    billing.source = EmbeddedUsageSource()

    [outcome] = billing.run(as_of=billing.hour0 + 2 * HOUR).outcomes

    assert outcome.status == "failed"
    assert "usage source embedded" in outcome.error and "no-such-meter" in outcome.error
    assert UsageReport.objects.get().error == outcome.error
    assert billing.stripe_events() == []


def test_the_embedded_meter_reports_what_was_ingested(billing):
    meter_services.ingest_events([execution("e1", billing.customer_id, billing.hour0 + HOUR, 11)])
    billing.source = EmbeddedUsageSource()
    billing.run(as_of=billing.hour0 + 2 * HOUR)
    assert billing.stripe_total() == Decimal(11)


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(503, json={"type": "about:blank", "title": "Service Unavailable", "status": 503,
                                   "detail": "clickhouse is down"}), "503"),
        (httpx.ConnectError("connection refused"), "Could not reach OpenMeter"),
    ],
    ids=["503", "down"],
)
def test_openmeter_down_fails_the_run_clearly_and_loses_nothing(billing, response, message):
    client = OpenMeterClient("https://openmeter.example.com", "token", max_retries=1, sleep=lambda s: None)
    billing.source = OpenMeterUsageSource(client)
    with respx.mock(assert_all_mocked=False) as http:
        http.route(host="127.0.0.1").pass_through()  # the Stripe emulator
        route = http.get(url__startswith="https://openmeter.example.com/api/v1/meters/m1/query")
        route.side_effect = [response, response]
        [outcome] = billing.run(as_of=billing.hour0 + 2 * HOUR).outcomes

        assert outcome.status == "failed" and message in outcome.error
        assert billing.stripe_events() == []

        # OpenMeter is back: the usage is reported, once.
        route.side_effect = None
        route.return_value = httpx.Response(200, json={
            "from": billing.hour0.isoformat(), "to": (billing.hour0 + 2 * HOUR).isoformat(),
            "windowSize": None,
            "data": [{"value": 7, "windowStart": billing.hour0.isoformat(),
                      "windowEnd": (billing.hour0 + 2 * HOUR).isoformat(),
                      "subject": billing.customer_id, "groupBy": {}}],
        })
        billing.run(as_of=billing.hour0 + 2 * HOUR)

    assert billing.stripe_total() == Decimal(7)
