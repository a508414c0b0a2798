"""
Benchmark `report_usage` against the local Stripe emulator with Stripe-like latency.

    .venv/bin/python bench/report_usage_bench.py --subscriptions 1000 --latency-ms 50 --limit 1000 --db postgres

Measures, for N subscriptions with usage: the wall time of one reporting run, the
meter events per second it sustained against the configured limit, the number of
usage-source queries, and peak memory; then the naive approach of the original
example (one source query and one Stripe call at a time) on the same data.

The emulator runs in its own process (bench/emulator_process.py), so the two don't
share a GIL; its latency applies to meter event calls only, so setup stays fast.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "var" / "bench"
EMULATOR_KEY = "sk_test_EpsilonBenchmarkKey000000000000"
PG_DATABASE = "epsilon_bench_reporting"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscriptions", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--limit", type=float, default=1000, help="meter events/s the app may send")
    parser.add_argument("--workers", type=int, default=64, help="sending threads")
    parser.add_argument("--api", choices=["v1", "v2", "auto"], default="v1",
                        help="v1 meter events, or Stripe's v2 meter event stream (100 events a call)")
    parser.add_argument("--events-per-customer", type=int, default=3)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--naive-sample", type=int, default=200,
                        help="items the naive baseline reports (it is slow: one at a time)")
    parser.add_argument("--port", type=int, default=12199)
    return parser.parse_args()


def configure_environment(args) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.db == "postgres":
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc",
                        f"CREATE DATABASE {PG_DATABASE}"], capture_output=True)
        os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{PG_DATABASE}"
    else:
        os.environ["DATABASE_URL"] = f"sqlite:///{RESULTS / 'reporting.sqlite3'}"
    os.environ.update({
        "STRIPE_SECRET_KEY": EMULATOR_KEY,
        "STRIPE_API_BASE": f"http://127.0.0.1:{args.port}",
        "USAGE_SOURCE": "embedded",
        "EPSILON_STRIPE_METER_EVENTS_PER_SECOND": str(args.limit),
        "EPSILON_STRIPE_STREAM_EVENTS_PER_SECOND": str(args.limit),
        "EPSILON_STRIPE_METER_EVENT_API": args.api,
        "EPSILON_STRIPE_SEND_CONCURRENCY": str(args.workers),
        "DJANGO_SETTINGS_MODULE": "epsilon.settings",
        "DJANGO_DEBUG": "false",  # as in production: no query log
    })
    sys.path.insert(0, str(ROOT))


def start_emulator(args) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "emulator_process.py"), "--port", str(args.port),
         "--latency-ms", str(args.latency_ms)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            httpx.get(f"http://127.0.0.1:{args.port}/_emulator/health", timeout=1).raise_for_status()
            return process
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit("the emulator did not start")


def set_up(args):
    """Fresh tables, N subscriptions created two days ago, and usage for each."""
    import django
    from django.core.management import call_command

    django.setup()
    from billing.models import PeriodReconciliation, UsageReport
    from billing.services import stripe_setup, stripe_sync
    from billing.stripe_api import get_client
    from djstripe.models import Customer, Subscription, SubscriptionItem
    from embedded_meter import services as meter_services
    from embedded_meter.models import Event

    t = time.perf_counter()
    call_command("migrate", verbosity=0)
    for model in (PeriodReconciliation, UsageReport, SubscriptionItem, Subscription, Customer, Event):
        model.objects.all().delete()
    httpx.post(f"{os.environ['STRIPE_API_BASE']}/_emulator/reset", timeout=10)

    started = datetime.now(UTC) - timedelta(days=2)
    httpx.post(f"{os.environ['STRIPE_API_BASE']}/_emulator/time", data={"now": int(started.timestamp())}, timeout=10)
    stripe_setup.ensure_epsilon_objects()
    client = get_client()
    price = client.v1.prices.list({"lookup_keys": ["epsilon_execution_monthly"]}).data[0]

    def subscribe(n):
        customer = client.v1.customers.create({"email": f"bench{n}@example.com"})
        return customer, client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})

    with ThreadPoolExecutor(16) as pool:
        pairs = list(pool.map(subscribe, range(args.subscriptions)))
    httpx.post(f"{os.environ['STRIPE_API_BASE']}/_emulator/time", data={"real": "true"}, timeout=10)
    for customer, subscription in pairs:
        stripe_sync.sync_customer(customer)
        stripe_sync.sync_subscription(subscription)

    events = [
        {"specversion": "1.0", "id": f"bench-{c.id}-{k}", "source": "bench", "type": "epsilon.execution",
         "subject": c.id, "time": (started + timedelta(hours=k + 1)).isoformat(), "data": {"billed_seconds": k + 1}}
        for c, _ in pairs for k in range(args.events_per_customer)
    ]
    for i in range(0, len(events), 5000):
        meter_services.ingest_events(events[i:i + 5000])
    print(f"setup: {args.subscriptions} subscriptions, {len(events)} usage events in {time.perf_counter() - t:.1f} s")
    return [c.id for c, _ in pairs], started


class CountingSource:
    """The configured source, counting the queries a run makes."""

    def __init__(self, source):
        self.source, self.calls, self.requests = source, 0, 0
        self.name = source.name

    def totals(self, meter_slug, window_size, requests):
        self.calls += 1
        self.requests += len(requests)
        return self.source.totals(meter_slug, window_size, requests)


def measure_engine(args):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from billing.models import UsageReport
    from billing.services import usage_reporting
    from billing.usage_sources import get_usage_source

    from billing.services import meter_event_sender

    source = CountingSource(get_usage_source())
    send_time = [0.0]  # in the senders only: HTTP, rate limiting and retries, not the ledger
    originals = {}
    for cls in (meter_event_sender.MeterEventSender, meter_event_sender.MeterEventStreamSender):
        originals[cls] = cls.send_all

        def timed(self, calls, _original=cls.send_all):
            t = time.perf_counter()
            try:
                return _original(self, calls)
            finally:
                send_time[0] += time.perf_counter() - t

        cls.send_all = timed
    rss_before = _max_rss_mb()
    t = time.perf_counter()
    with CaptureQueriesContext(connection) as queries:  # forces the query log on, for counting
        result = usage_reporting.report_usage(trigger=UsageReport.Trigger.COMMAND, source=source)
    wall = time.perf_counter() - t
    for cls, original in originals.items():
        cls.send_all = original
    sent = result.count("sent")
    return {
        "reports": len(result.outcomes),
        "sent": sent,
        "failed": len(result.failed),
        "wall_seconds": round(wall, 2),
        "send_seconds": round(send_time[0], 2),
        "meter_events_per_second": round(sent / send_time[0], 1) if send_time[0] else None,
        "of_limit": round(sent / send_time[0] / args.limit, 3) if send_time[0] else None,
        "source_queries": source.calls,
        "source_requests": source.requests,
        "database_queries": len(queries),
        # Peak resident memory of the process (setup included), and its growth during the run.
        "max_rss_mb": _max_rss_mb(),
        "rss_growth_during_run_mb": round(_max_rss_mb() - rss_before, 1),
    }


def _max_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def measure_naive(args, customer_ids, started):
    """The original example: per customer, one source query, then one Stripe call."""
    from billing import selectors
    from billing.stripe_api import get_client
    from billing.usage_sources import UsageRequest, get_usage_source

    client, source = get_client(), get_usage_source()
    targets = selectors.current_targets(customer_ids=customer_ids[: args.naive_sample])
    until = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    t = time.perf_counter()
    for target in targets:
        request = UsageRequest(target.subject, target.period.start, until)
        total = source.totals("m1", "MINUTE", [request])[request]  # from the minute service began
        client.v1.billing.meter_events.create({
            "event_name": target.meter.event_name,
            "payload": {"stripe_customer_id": target.customer_id, "value": str(int(total))},
            "timestamp": int(until.timestamp()) - 1,
        })
    wall = time.perf_counter() - t
    return {
        "items": len(targets),
        "wall_seconds": round(wall, 2),
        "meter_events_per_second": round(len(targets) / wall, 1),
        "source_queries": len(targets),
        "projected_wall_seconds_for_all": round(wall / len(targets) * args.subscriptions, 1),
    }


def check_totals(customer_ids, started):
    """What Stripe holds per customer equals the source's total, exactly."""
    from billing.usage_sources import UsageRequest, get_usage_source

    until = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    # Usage counts from the minute each subscription began.
    start = started.replace(second=0, microsecond=0)
    requests = [UsageRequest(c, start, until) for c in customer_ids]
    source = get_usage_source().totals("m1", "MINUTE", requests)
    totals = httpx.get(f"{os.environ['STRIPE_API_BASE']}/_emulator/meter_event_totals", timeout=60).json()
    by_customer = {c: Decimal(v["total"]) for c, v in totals["by_customer"].items()}
    wrong = [r.subject for r in requests if by_customer.get(r.subject, Decimal(0)) != source[r]]
    return not wrong, len(wrong)


def main():
    args = parse_args()
    configure_environment(args)
    emulator = start_emulator(args)
    try:
        customer_ids, started = set_up(args)
        engine = measure_engine(args)
        exact, wrong = check_totals(customer_ids, started)
        engine["stripe_equals_source"] = exact
        naive = measure_naive(args, customer_ids, started)
    finally:
        emulator.terminate()
    results = {"args": vars(args), "engine": engine, "naive": naive,
               "cpus": os.cpu_count(), "python": sys.version.split()[0]}
    out = RESULTS / f"report_usage-{args.db}-{args.subscriptions}-{args.api}-{int(args.limit)}.json"
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    if not exact:
        raise SystemExit(f"{wrong} customer(s) differ between Stripe and the source")


if __name__ == "__main__":
    main()
