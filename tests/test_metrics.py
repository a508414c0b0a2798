"""
/metrics: who may scrape it, and what a scrape says after real reporting runs against
the Stripe emulator (database counts, and this process's Stripe and source timings).
"""

import math
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import stripe
from django.utils import timezone
from django_q.models import Task
from djstripe.models import WebhookEventTrigger
from prometheus_client.parser import text_string_to_metric_families

from billing import stripe_api
from billing.models import Meter, PeriodReconciliation, UsageReport
from billing.services.schedules import SCHEDULE_FUNC, SCHEDULE_NAME
from ops import metrics
from tests.factories import PERIOD_START, make_meter, make_report

pytestmark = pytest.mark.django_db
OUTSIDE = "203.0.113.9"  # TEST-NET-3: in no allowed network
METER_EVENTS = ("POST", "/v1/billing/meter_events")


class Scrape:
    def __init__(self, body: str):
        self.families = {f.name: f for f in text_string_to_metric_families(body)}
        self.samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value for f in self.families.values() for s in f.samples
        }

    def __call__(self, name, **labels):
        return self.samples.get((name, tuple(sorted(labels.items()))))

    def series(self, name):
        return {tuple(sorted(labels)): value for (n, labels), value in self.samples.items() if n == name}


def scrape(client) -> Scrape:
    response = client.get("/metrics")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return Scrape(response.content.decode())


def stripe_requests(result: Scrape, method, path) -> float:
    return result("epsilon_stripe_request_seconds_count", method=method, path=path) or 0


# --- the guard -------------------------------------------------------------------


def test_refused_without_the_token_from_another_network(client, settings):
    settings.METRICS_TOKEN = "s3cret-token"

    for headers in ({}, {"HTTP_AUTHORIZATION": "Bearer wrong"}, {"HTTP_AUTHORIZATION": "Basic s3cret-token"}):
        response = client.get("/metrics", REMOTE_ADDR=OUTSIDE, **headers)
        assert response.status_code == 403
        text = response.content.decode()
        assert text.count("\n") == 1 and "Authorization: Bearer" in text and "EPSILON_METRICS_ALLOWED_NETWORKS" in text


def test_an_empty_token_grants_nothing(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics", REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION="Bearer ").status_code == 403


def test_the_bearer_token_grants_access_from_anywhere(client, settings):
    settings.METRICS_TOKEN = "s3cret-token"
    settings.METRICS_ALLOWED_NETWORKS = []

    response = client.get("/metrics", REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION="Bearer s3cret-token")

    assert response.status_code == 200
    assert Scrape(response.content.decode())("epsilon_metrics_database_up") == 1


@pytest.mark.parametrize("address", ["10.1.2.3", "127.0.0.1", "::1", "::ffff:10.9.9.9"])
def test_an_allowed_network_grants_access(client, settings, address):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]

    assert client.get("/metrics", REMOTE_ADDR=address).status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="11.0.0.1").status_code == 403


def test_the_default_networks_are_the_loopback_ones(client):
    assert client.get("/metrics").status_code == 200  # the test client's REMOTE_ADDR is 127.0.0.1
    assert client.get("/metrics", REMOTE_ADDR=OUTSIDE).status_code == 403


# --- after a reporting run -------------------------------------------------------------


def test_a_reporting_run_as_scraped(billing, client):
    before = scrape(client)
    billing.source.add(billing.customer_id, billing.hour0 + timedelta(hours=1), 7)

    billing.run(as_of=billing.hour0 + timedelta(hours=2))
    after = scrape(client)

    assert after("epsilon_metrics_database_up") == 1
    reports = after.series("epsilon_usage_reports")
    assert reports[(("status", "sent"), ("trigger", "command"))] == 1
    assert sum(reports.values()) == 1
    assert len(reports) == len(UsageReport.Status.values) * len(UsageReport.Trigger.values)  # zeros too
    assert after("epsilon_units_sent_total") == 7
    assert after("epsilon_reports_in_flight") == 0
    assert after("epsilon_reports_stale") == 0
    assert after.families["epsilon_units_sent"].type == "counter"
    # This process's Stripe calls: the meter event, timed, with no id in the label.
    assert stripe_requests(after, *METER_EVENTS) >= stripe_requests(before, *METER_EVENTS) + 1
    assert after("epsilon_stripe_request_seconds_sum", method="POST", path="/v1/billing/meter_events") > 0
    paths = {dict(labels)["path"] for name, labels in after.samples if name == "epsilon_stripe_request_seconds_count"}
    assert paths and all(re.fullmatch(r"(/(v\d|[a-z_]+|\{id\}))+", path) for path in paths), paths
    # The usage source's totals query, timed.
    source_queries = "epsilon_source_query_seconds_count"
    assert after(source_queries, source="recorded") >= (before(source_queries, source="recorded") or 0) + 1
    assert after.series("epsilon_webhook_deliveries_total") == {
        (("processed", p), ("valid", v)): 0 for p in ("true", "false") for v in ("true", "false")
    }
    assert after.series("epsilon_reconciliation_periods") == {
        (("status", s),): 0 for s in PeriodReconciliation.Status.values
    }
    # The schedule never ran: the family is there, with no sample.
    assert "epsilon_last_successful_run_age_seconds" in after.families
    assert after.series("epsilon_last_successful_run_age_seconds") == {}

    # A pending row is in flight within its lease, and stale past it.
    meter = Meter.objects.get()
    pending = make_report(meter, customer_id=billing.customer_id, identifier="metrics-pending", status="pending")
    fresh = scrape(client)
    assert (fresh("epsilon_reports_in_flight"), fresh("epsilon_reports_stale")) == (1, 0)
    UsageReport.objects.filter(pk=pending.pk).update(updated=timezone.now() - timedelta(hours=1))
    old = scrape(client)
    assert (old("epsilon_reports_in_flight"), old("epsilon_reports_stale")) == (0, 1)
    assert old("epsilon_usage_reports", status="pending", trigger="command") == 1
    assert old("epsilon_units_sent_total") == 7  # a pending row has sent nothing yet


def test_stripe_errors_are_counted_by_stripe_code(stripe_emulated, client):
    path = ("GET", "/v1/customers/{id}")
    before = scrape(client)

    with pytest.raises(stripe.InvalidRequestError):
        stripe_api.get_client().v1.customers.retrieve("cus_NoSuchCustomer0001")
    after = scrape(client)

    assert stripe_requests(after, *path) == stripe_requests(before, *path) + 1
    missing = "epsilon_stripe_errors_total"
    assert after(missing, code="resource_missing") == (before(missing, code="resource_missing") or 0) + 1


def test_error_codes_fall_back_to_the_status():
    def count(code):
        return metrics.REGISTRY.get_sample_value("epsilon_stripe_errors_total", {"code": code}) or 0

    before = count("503"), count("connection_error")
    metrics.observe_stripe_request("post", "https://api.stripe.com/v1/billing/meter_events", 0.1, 503, b"<html>")
    metrics.observe_stripe_request("post", "https://api.stripe.com/v1/billing/meter_events", 0.1, None)
    metrics.observe_stripe_request("get", "not a url \x00", "not seconds", 200)  # never raises

    assert (count("503"), count("connection_error")) == (before[0] + 1, before[1] + 1)


def test_stripe_paths_keep_ids_out_of_labels():
    assert metrics.stripe_path("https://api.stripe.com/v1/customers/cus_Q1w2E3r4T5y6U7?expand[]=x") == "/v1/customers/{id}"
    assert metrics.stripe_path("http://127.0.0.1:12111/v1/billing/meters/mtr_test_61Tx00/event_summaries") == (
        "/v1/billing/meters/{id}/event_summaries"
    )
    assert metrics.stripe_path("https://meter-events.stripe.com/v2/billing/meter_event_stream") == (
        "/v2/billing/meter_event_stream"
    )
    assert metrics.stripe_path("https://api.stripe.com/v1/subscription_items/si_ABC123/usage_record_summaries") == (
        "/v1/subscription_items/{id}/usage_record_summaries"
    )


def test_database_counts_of_reconciliation_runs_and_webhooks(client):
    meter = make_meter()
    for n, status in enumerate(["drift", "drift", "ok"]):
        PeriodReconciliation.objects.create(
            customer_id=f"cus_{n}", meter=meter, period_start=PERIOD_START, period_end=PERIOD_START + timedelta(hours=1),
            usage_until=PERIOD_START + timedelta(hours=1), ledger_units=5, stripe_units=7, drift=2, status=status,
        )
    now = timezone.now()
    Task.objects.create(id="ok", name="ok", func=SCHEDULE_FUNC, group=SCHEDULE_NAME, started=now - timedelta(hours=2),
                        stopped=now - timedelta(hours=1), success=True)
    Task.objects.create(id="failed", name="failed", func=SCHEDULE_FUNC, group=SCHEDULE_NAME,
                        started=now - timedelta(minutes=5), stopped=now - timedelta(minutes=4), success=False)
    WebhookEventTrigger.objects.create(remote_ip="127.0.0.1", headers={}, body="{}", valid=True, processed=True)
    WebhookEventTrigger.objects.create(remote_ip="127.0.0.1", headers={}, body="{}", valid=False, processed=False)
    make_report(meter, status="sent", sent_at=now, value_sent=5, identifier="a")
    make_report(meter, status="sent", sent_at=now, value_sent=-2, sequence=2, identifier="b", trigger="reconcile")

    result = scrape(client)

    assert result("epsilon_reconciliation_periods", status="drift") == 2
    assert result("epsilon_reconciliation_periods", status="ok") == 1
    assert 3600 <= result("epsilon_last_successful_run_age_seconds") < 3700
    assert result("epsilon_webhook_deliveries_total", processed="true", valid="true") == 1
    assert result("epsilon_webhook_deliveries_total", processed="false", valid="false") == 1
    assert result("epsilon_webhook_deliveries_total", processed="true", valid="false") == 0
    assert result("epsilon_units_sent_total") == 5  # the correction is not counted
    assert result("epsilon_usage_reports", status="sent", trigger="reconcile") == 1


# --- multiprocess mode -------------------------------------------------------------

OBSERVE_AND_SCRAPE = """
import django, sys
django.setup()
from prometheus_client import generate_latest
from ops import metrics
metrics.observe_source_query("recorded", 0.2)
if sys.argv[1] == "scrape":
    registry = metrics.scrape_registry()
    registry.unregister(metrics.DATABASE_COLLECTOR)
    sys.stdout.write(generate_latest(registry).decode())
"""


def test_multiprocess_mode_sums_every_process(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "epsilon.settings"}
    cwd = Path(__file__).resolve().parent.parent

    def run(mode):
        return subprocess.run([sys.executable, "-c", OBSERVE_AND_SCRAPE, mode], env=env, cwd=cwd,
                              capture_output=True, text=True, check=True, timeout=60).stdout

    run("observe")
    result = Scrape(run("scrape"))

    assert result("epsilon_source_query_seconds_count", source="recorded") == 2
    assert math.isclose(result("epsilon_source_query_seconds_sum", source="recorded"), 0.4)
