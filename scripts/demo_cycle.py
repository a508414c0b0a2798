"""
A whole billing cycle on the local Stripe emulator, run by `make demo-cycle`:

1. a customer on a Stripe test clock, subscribed 40 days ago at 13:45 UTC;
2. a month of sample executions in the embedded meter;
3. the clock moves past the period end: Stripe rolls the subscription and drafts the
   invoice, and its webhooks reach this app (served here by `runserver`), which
   reports the period's usage up to 13:00, its last whole window;
4. the clock moves past the one-hour grace period: the invoice is finalized.

It prints the invoice's lines with amounts, next to the usage the source holds.
"""

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import django
import httpx

ROOT = Path(__file__).resolve().parent.parent
SERVER = "127.0.0.1:8765"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "epsilon.settings")


def main() -> int:
    if os.environ.get("STRIPE_SECRET_KEY"):
        print("STRIPE_SECRET_KEY is set: this demo only runs against the local Stripe emulator.")
        return 1
    django.setup()
    server = start_app_server()
    try:
        run_cycle()
    finally:
        server.terminate()
        server.wait(timeout=10)
    return 0


def start_app_server() -> subprocess.Popen:
    """The app over HTTP for Stripe's webhooks; queued reports run inline (no qcluster needed)."""
    env = {**os.environ, "Q_SYNC": "true"}
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", "--noreload", SERVER],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            httpx.get(f"http://{SERVER}/admin/login/", timeout=1)
            return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.terminate()
    raise SystemExit("The app server did not start on " + SERVER)


def run_cycle() -> None:
    from billing import stripe_api
    from billing.conf import conf
    from billing.models import UsageReport
    from billing.services import stripe_setup, stripe_sync, webhook_endpoints
    from billing.services.periods import AlignedPeriod
    from billing.usage_sources import UsageRequest, get_usage_source
    from embedded_meter import services as meter_services
    from embedded_meter import simulate

    client = stripe_api.get_client()
    stripe_setup.ensure_epsilon_objects()
    price = client.v1.prices.list({"lookup_keys": [conf.PRICE_LOOKUP_KEY]}).data[0]

    start = (datetime.now(UTC) - timedelta(days=40)).replace(hour=13, minute=45, second=0, microsecond=0)
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": int(start.timestamp()), "name": "Epsilon demo cycle"})
    customer = client.v1.customers.create(
        {"name": "Cycle demo customer", "email": "cycle-demo@epsilon.example", "test_clock": clock.id}
    )
    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    stripe_sync.sync_customer(customer)
    stripe_sync.sync_subscription(subscription)
    webhook_endpoints.ensure_webhook_endpoint(f"http://{SERVER}")
    item = subscription["items"]["data"][0]
    period = AlignedPeriod.of(
        datetime.fromtimestamp(item["current_period_start"], UTC),
        datetime.fromtimestamp(item["current_period_end"], UTC),
        "HOUR",
    )
    step(f"Test clock {clock.id} at {start:%Y-%m-%d %H:%M} UTC; customer {customer.id} subscribed.")
    print(f"  Billing period: {period.billing_start:%Y-%m-%d %H:%M} to {period.billing_end:%Y-%m-%d %H:%M} UTC")
    print(f"  Reported period (hour windows): {period.start:%Y-%m-%d %H:%M} to {period.end:%Y-%m-%d %H:%M} UTC")

    hours = int((period.end - period.start).total_seconds() // 3600) + 1  # and one hour past the aligned end
    sim = simulate.generate([customer.id], hours=hours, until=period.end + timedelta(hours=1), seed=2)
    meter_services.ingest_events(sim.events)
    source = get_usage_source()
    in_period, remainder = (
        source.totals("m1", "HOUR", [UsageRequest(customer.id, a, b)])[UsageRequest(customer.id, a, b)]
        for a, b in ((period.start, period.end), (period.end, period.end + timedelta(hours=1)))
    )
    step(f"{len(sim.events)} sample executions loaded: {in_period} billed seconds up to "
         f"{period.end:%H:%M}, {remainder} more from {period.end:%H:%M} to {period.end + timedelta(hours=1):%H:%M}.")

    advance(client, clock.id, period.billing_end + timedelta(minutes=10))
    step("Clock moved past the period end: Stripe sent customer.subscription.updated and invoice.created.")
    for report in UsageReport.objects.filter(customer_id=customer.id).order_by("sequence"):
        print(f"  usage report #{report.sequence} ({report.trigger}): {report.value_sent:+.0f} units for "
              f"{report.period_start:%Y-%m-%d %H:%M} to {report.usage_until:%Y-%m-%d %H:%M} UTC, {report.status}")

    advance(client, clock.id, period.billing_end + timedelta(hours=2))
    invoices = client.v1.invoices.list({"customer": customer.id}).data
    invoice = next(i for i in invoices if i.period_end == int(period.billing_end.timestamp()))
    step(f"Grace hour over: invoice {invoice.id} is {invoice.status}.")
    for line in invoice.lines.data:
        unit = Decimal(str(line.pricing.price_details.get("unit_amount_decimal") or price.unit_amount_decimal))
        print(f"  {line.description or 'Epsilon'}: {line.quantity} units x ${unit / 100:.2f} = ${Decimal(line.amount) / 100:.2f}")
    print(f"  Total: ${Decimal(invoice.total) / 100:.2f}  (expected {in_period} x $0.10 = ${in_period * Decimal('0.10'):.2f})")
    print(f"  The {remainder} units after {period.end:%H:%M} are billed with the next period.")


def advance(client, clock_id: str, moment: datetime) -> None:
    from django.conf import settings

    client.v1.test_helpers.test_clocks.advance(clock_id, {"frozen_time": int(moment.timestamp())})
    emulator = settings.STRIPE_API_BASE
    httpx.post(f"{emulator}/_emulator/wait", timeout=60).raise_for_status()
    httpx.post(f"{emulator}/_emulator/webhooks/flush", timeout=60).raise_for_status()


def step(text: str) -> None:
    print(f"\n* {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
