"""
Benchmark `manage.py sync_stripe` against the local Stripe emulator at Stripe's rate
limits with 50 ms latency on every API call.

    .venv/bin/python bench/sync_bench.py --customers 10000 --db postgres

1. Setup (timed, not part of the result): a fresh emulator process (`python -m
   stripe_emulator`, no faults yet), Epsilon's meter, product and price
   (`ensure_epsilon_objects`, through the API), then N customers, each with a
   subscription to the metered price, made by the emulator's control route
   `POST /_emulator/bulk_subscriptions` (count, price, email_prefix=sync, start,
   metadata_n=true, the app's API version): it runs the very handlers of POST
   /v1/customers and POST /v1/subscriptions for each pair (same objects, same events
   and webhooks as the API would make), 200 pairs per store transaction, without the
   HTTP around each call: about 3 ms a pair instead of ~15 ms for two HTTP requests
   (stripe_emulator/README.md). Customer n has email `sync<n>@example.com` and
   `metadata[n]`. The emulator keeps its state in var/bench/sync-emulator-<N>.sqlite3
   (`--db`), so a later run only makes what is missing (`start` = the first n missing).
2. Faults switched on through the emulator's control API (`/_emulator/faults`):
   `latency_ms` on every API call (`paths=all`) and Stripe's documented limits
   (test mode 25 requests/s on every call, live meter event limits, the concurrency rule).
3. The mirror tables emptied, then `call_command("sync_stripe")` timed: wall time, the
   emulator's request log for the run (list pages, anything per object), SQL queries,
   peak RSS (`resource.getrusage`), the CPU time of this process and of the emulator's
   during the run and the load average (others share the machine: CPU time is what a
   loaded machine does not inflate). `--profile` keeps a cProfile of the first run's
   main thread (the writing). Then a second run over the full mirror (every row
   an update). Each run checks that the mirror holds exactly Stripe's customers,
   subscriptions and items.
4. The reference: dj-stripe's per-object sync (`sync_from_stripe_data`, the path before
   the bulk mirror) over the first `--reference-sample` customers and subscriptions, per
   object and projected to N.

Results: stdout and var/bench/sync-<db>-<N>.json.
"""

import argparse
import contextlib
import cProfile
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import time
from collections import Counter
from io import StringIO
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "var" / "bench"
EMULATOR_KEY = "sk_test_EpsilonSyncBenchmarkKey00000000000"
PG_DATABASE = "epsilon_bench_sync"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=10000)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--reference-sample", type=int, default=300,
                        help="customers (and their subscriptions) synced one by one by dj-stripe")
    parser.add_argument("--port", type=int, default=12197)
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the first sync's main thread (the writing) to var/bench/sync-<db>-<N>.pstats")
    parser.add_argument("--emulator-from", type=Path, default=ROOT,
                        help="directory holding the stripe_emulator package to run (default: this checkout)")
    return parser.parse_args()


def configure_environment(args) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.db == "postgres":
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc",
                        f"CREATE DATABASE {PG_DATABASE}"], capture_output=True)
        os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{PG_DATABASE}"
    else:
        os.environ["DATABASE_URL"] = f"sqlite:///{RESULTS / 'sync.sqlite3'}"
    os.environ.update({
        "STRIPE_SECRET_KEY": EMULATOR_KEY,
        "STRIPE_API_BASE": f"http://127.0.0.1:{args.port}",
        "DJANGO_SETTINGS_MODULE": "epsilon.settings",
        "DJANGO_DEBUG": "false",  # as in production: no query log
    })
    os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
    sys.path.insert(0, str(ROOT))


def control(path, **data):
    response = httpx.post(f"{os.environ['STRIPE_API_BASE']}/_emulator/{path}", data=data, timeout=3600)
    response.raise_for_status()
    return response.json()


def emulator_state(args) -> Path:
    """The emulator's objects, kept between runs: setup creates only what is missing."""
    return RESULTS / f"sync-emulator-{args.customers}.sqlite3"


def start_emulator(args) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "stripe_emulator", "--port", str(args.port), "--quiet", "--billing-tick", "0",
         "--db", str(emulator_state(args))],
        cwd=args.emulator_from, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            httpx.get(f"http://127.0.0.1:{args.port}/_emulator/health", timeout=1).raise_for_status()
            return process
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit("the emulator did not start")


def set_up(args):
    import django
    from django.conf import settings
    from django.core.management import call_command

    django.setup()
    from billing.services import stripe_setup
    from billing.stripe_api import get_client

    t = time.perf_counter()
    call_command("migrate", verbosity=0)
    empty_mirror()
    stripe_setup.ensure_epsilon_objects()
    client = get_client()
    price = client.v1.prices.list({"lookup_keys": ["epsilon_execution_monthly"]}).data[0]

    # What exists: the emulator's store through the control API (no limits, no paging).
    response = httpx.get(f"{os.environ['STRIPE_API_BASE']}/_emulator/objects", params={"type": "customer"},
                         timeout=300)
    existing = {int(c["metadata"]["n"]) for c in response.json()["data"] if (c.get("metadata") or {}).get("n")}
    missing = [n for n in range(args.customers) if n not in existing]
    for start, count in runs(missing):
        control("bulk_subscriptions", count=str(count), price=price.id, email_prefix="sync", start=str(start),
                metadata_n="true", stripe_version=settings.STRIPE_API_VERSION, ids="false")
    seconds = time.perf_counter() - t
    print(f"setup: {args.customers} customers with a subscription each ({len(missing)} created now) "
          f"in {seconds:.1f} s", flush=True)
    return round(seconds, 1)


def runs(numbers: list[int]):
    """(start, count) of each run of consecutive numbers: [0, 1, 2, 7, 8] -> (0, 3), (7, 2)."""
    start = previous = None
    for n in numbers:
        if start is not None and n == previous + 1:
            previous = n
            continue
        if start is not None:
            yield start, previous - start + 1
        start = previous = n
    if start is not None:
        yield start, previous - start + 1


def empty_mirror():
    from billing.models import PeriodReconciliation, SubscriptionItemChange, UsageReport
    from djstripe.models import Customer, Subscription, SubscriptionItem

    for model in (PeriodReconciliation, UsageReport, SubscriptionItemChange, SubscriptionItem, Subscription, Customer):
        model.objects.all().delete()


def switch_faults_on(args):
    control("faults", reset="true", latency_ms=str(args.latency_ms), paths="all",
            rate_limit_test="25", rate_limit_live="1000", rate_limit_v2_live="10000", concurrency_limit="true")


def api_requests_since(started: float) -> list[dict]:
    response = httpx.get(f"{os.environ['STRIPE_API_BASE']}/_emulator/requests", params={"method": "GET"}, timeout=60)
    return [r for r in response.json()["data"] if r["time"] >= started and r["path"].startswith("/v1/")]


def _route(path: str) -> str:
    parts = path.split("/")
    return "/".join(parts[:3]) + ("/{id}" if len(parts) > 3 else "") if not path.startswith("/v1/billing") else path


def measure_sync(args, *, label):
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    started_at = time.time() - 1  # the log's clock is the emulator's, in seconds
    rss_before = _max_rss_mb()
    out = StringIO()
    writing = [0.0]
    load_before = _loadavg()
    cpu, emulator_cpu = _cpu_seconds(), _process_cpu_seconds(args.emulator_pid)
    t = time.perf_counter()
    profile = cProfile.Profile() if args.profile and label == "empty mirror" else None
    with CaptureQueriesContext(connection) as queries, timing_writes(writing):
        if profile:
            profile.enable()
        call_command("sync_stripe", stdout=out)
        if profile:
            profile.disable()
            profile.dump_stats(RESULTS / f"sync-{args.db}-{args.customers}.pstats")
    wall = time.perf_counter() - t
    cpu, emulator_cpu = _cpu_seconds() - cpu, _process_cpu_seconds(args.emulator_pid) - emulator_cpu
    requests = api_requests_since(started_at)
    answered_ms = sum(r["duration_ms"] or 0 for r in requests)
    result = {
        "run": label,
        "wall_seconds": round(wall, 2),
        # The app's own work (building rows, SQL), and the rest: waiting for Stripe's pages.
        "writing_seconds": round(writing[0], 2),
        "waiting_for_stripe_seconds": round(wall - writing[0], 2),
        # CPU time (user + system) of this process (all its threads: the writing and the
        # list fetching) and of the emulator's process during the run; the machine's load.
        "app_cpu_seconds": round(cpu, 2),
        "emulator_cpu_seconds": round(emulator_cpu, 2),
        "loadavg_before_after": [load_before, _loadavg()],
        # What the emulator took to answer, beyond the injected latency: its own cost.
        "emulator_seconds_beyond_latency": round((answered_ms - len(requests) * args.latency_ms) / 1000, 2),
        "emulator_ms_per_list_page": {
            route: round(statistics.median(
                r["duration_ms"] for r in requests if r["path"] == route), 1)
            for route in ("/v1/customers", "/v1/subscriptions")
        },
        "summary": out.getvalue().strip(),
        "stripe_requests": len(requests),
        "stripe_requests_by_route": dict(Counter(_route(r["path"]) for r in requests)),
        "stripe_429s": sum(1 for r in requests if r["status"] == 429),
        "sql_queries": len(queries),
        "sql_queries_per_customer": round(len(queries) / args.customers, 3),
        "max_rss_mb": _max_rss_mb(),
        "rss_growth_mb": round(_max_rss_mb() - rss_before, 1),
        "mirror_equals_stripe": mirror_equals_stripe(args),
    }
    print(json.dumps(result, indent=2), flush=True)
    return result


@contextlib.contextmanager
def timing_writes(total):
    """Adds to total[0] the time spent in the functions that write the mirror."""
    from billing.services import stripe_mirror, stripe_sync

    targets = [(stripe_mirror, "mirror_customers"), (stripe_mirror, "mirror_subscriptions"),
               (stripe_sync, "sync_meter"), (stripe_sync, "sync_product"), (stripe_sync, "sync_price")]
    originals = [(module, name, getattr(module, name)) for module, name in targets]

    def timed(fn):
        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                total[0] += time.perf_counter() - t
        return wrapper

    for module, name, fn in originals:
        setattr(module, name, timed(fn))
    try:
        yield
    finally:
        for module, name, fn in originals:
            setattr(module, name, fn)


def mirror_equals_stripe(args) -> bool:
    """The mirror holds every customer, subscription and item the emulator holds, with its data."""
    from djstripe.models import Customer, Subscription, SubscriptionItem

    def objects(kind):  # the emulator's store (control API: no latency, no limits)
        response = httpx.get(f"{os.environ['STRIPE_API_BASE']}/_emulator/objects", params={"type": kind}, timeout=300)
        return response.json()["data"]

    customers = {c["id"]: c["email"] for c in objects("customer") if not c.get("deleted")}
    subscriptions = {s["id"] for s in objects("subscription")}
    items = {i["id"]: i["price"] for i in objects("subscription_item") if i["subscription"] in subscriptions}
    return (
        len(customers) == args.customers
        and dict(Customer.objects.values_list("id", "email")) == customers
        and set(Subscription.objects.values_list("id", flat=True)) == subscriptions
        and dict(SubscriptionItem.objects.values_list("id", "price__id")) == items
    )


def measure_reference(args):
    """dj-stripe's own per-object sync of a sample, as sync_stripe did before the bulk mirror."""
    from billing.services import stripe_sync
    from billing.stripe_api import get_client

    empty_mirror()
    v1 = get_client().v1
    sample = args.reference_sample
    customers = v1.customers.list({"limit": 100}).auto_paging_iter()
    t = time.perf_counter()
    customer_ids = set()
    for customer in customers:
        stripe_sync.sync_customer(customer)
        customer_ids.add(customer.id)
        if len(customer_ids) == sample:
            break
    subscriptions = 0
    for subscription in v1.subscriptions.list({"limit": 100, "status": "all"}).auto_paging_iter():
        if subscription.customer in customer_ids:
            stripe_sync.sync_subscription(subscription)
            subscriptions += 1
            if subscriptions == sample:
                break
    wall = time.perf_counter() - t
    result = {
        "customers_and_subscriptions": sample,
        "wall_seconds": round(wall, 2),
        "ms_per_customer_with_subscription": round(wall / sample * 1000, 1),
        "projected_seconds_for_all": round(wall / sample * args.customers, 1),
    }
    print(json.dumps({"reference_dj_stripe_per_object": result}, indent=2), flush=True)
    return result


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of another process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _max_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main():
    args = parse_args()
    configure_environment(args)
    emulator = start_emulator(args)
    args.emulator_pid = emulator.pid
    try:
        setup_seconds = set_up(args)
        switch_faults_on(args)
        empty_mirror()
        fresh = measure_sync(args, label="empty mirror")
        again = measure_sync(args, label="full mirror (every row an update)")
        reference = measure_reference(args) if args.reference_sample else None
    finally:
        emulator.terminate()
    results = {
        "args": vars(args), "setup_seconds": setup_seconds, "runs": [fresh, again],
        "reference_dj_stripe_per_object": reference, "cpus": os.cpu_count(), "python": sys.version.split()[0],
    }
    (RESULTS / f"sync-{args.db}-{args.customers}.json").write_text(json.dumps(results, indent=2, default=str))
    if not (fresh["mirror_equals_stripe"] and again["mirror_equals_stripe"]):
        raise SystemExit("the mirror differs from Stripe")


if __name__ == "__main__":
    main()
