"""
Benchmark `report_usage` at scale against the local Stripe emulator, with Stripe's live
limits and latency.

    .venv/bin/python bench/report_usage_bench.py --subscriptions 100000 --api v2 --db postgres

Measures one reporting run over N customers, each with a subscription to the metered
price and usage in the embedded meter: wall time, the time spent sending, meter events
per second, SQL queries per item, usage-source queries, and peak memory (the process's
`ru_maxrss`, setup included, and its growth during the run); then checks that Stripe's
meter holds exactly the source's total for every customer. `--workers-processes 2`
shares the run between two processes by customer shard (`report_usage --shards`'s
path, each shard a process here), measured as one run.

The app runs in live mode (an `sk_live_` key) against the emulator in its own process
with Stripe's documented live limits on (v1 meter events 1,000/s, the v2 stream 10,000
events/s, one call per customer and meter at a time) and `--latency-ms` on meter event
calls, so the run sends at the rate Stripe itself allows.

Setup, the fastest honest way: the N customers and subscriptions are created once by
the emulator's own API handlers (`POST /_emulator/bulk_subscriptions`: each customer
by the `POST /v1/customers` handler, its subscription by `POST /v1/subscriptions`'s,
with their events, many per transaction, without HTTP per call; an interrupted making
is finished by API calls), mirrored by `manage.py sync_stripe` (list pages, the app's
own path), and the usage ingested through the
embedded meter's service; then kept as snapshots (the emulator's SQLite state file and
a PostgreSQL template database, or a SQLite file). Every later run starts from copies
of them (a file copy, `CREATE DATABASE ... TEMPLATE`), taking seconds: no meter event,
no ledger row, nothing reported yet. `--fresh` makes the snapshots again.
"""

import argparse
import json
import os
import resource
import secrets
import shutil
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
BENCH_KEY = "sk_live_EpsilonBenchmarkKey000000000000"
PG_DATABASE = "epsilon_bench_reporting"
BULK_CHUNK = 10_000  # customers a bulk_subscriptions call makes


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscriptions", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--senders", type=int, default=16, help="sending threads")
    parser.add_argument("--api", choices=["v1", "v2", "auto"], default="v2",
                        help="v1 meter events, or Stripe's v2 meter event stream (100 events a call)")
    parser.add_argument("--events-per-customer", type=int, default=3)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--batch-size", type=int, default=1000, help="EPSILON_REPORT_BATCH_SIZE")
    parser.add_argument("--worker-processes", type=int, default=1,
                        help="processes sharing the run by customer shard (1: one process)")
    parser.add_argument("--fresh", action="store_true", help="make the snapshots again")
    parser.add_argument("--port", type=int, default=12199)
    parser.add_argument("--profile", action="store_true", help="cProfile the run (var/bench/report_usage.pstats)")
    parser.add_argument("--run-shard", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def snapshot_paths(args) -> dict:
    n = args.subscriptions
    return {
        "emulator": RESULTS / f"report-emulator-{n}.sqlite3",
        "emulator_work": RESULTS / f"report-emulator-{n}-work.sqlite3",
        "sqlite": RESULTS / f"report-{n}.sqlite3",
        "sqlite_work": RESULTS / f"report-{n}-work.sqlite3",
        "pg_template": f"{PG_DATABASE}_{n}",
        "pg_work": f"{PG_DATABASE}_{n}_work",
        "meta": RESULTS / f"report-{n}-{args.db}.json",
    }


def configure_environment(args) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    paths = snapshot_paths(args)
    if args.db == "postgres":
        os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{paths['pg_work']}"
    else:
        os.environ["DATABASE_URL"] = f"sqlite:///{paths['sqlite_work']}"
    os.environ.update({
        "STRIPE_SECRET_KEY": BENCH_KEY,
        "STRIPE_API_BASE": f"http://127.0.0.1:{args.port}",
        "USAGE_SOURCE": "embedded",
        "EPSILON_STRIPE_METER_EVENT_API": args.api,
        "EPSILON_STRIPE_SEND_CONCURRENCY": str(args.senders),
        "EPSILON_REPORT_BATCH_SIZE": str(args.batch_size),
        "DJANGO_SETTINGS_MODULE": "epsilon.settings",
        "DJANGO_DEBUG": "false",  # as in production: no query log
    })
    os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
    sys.path.insert(0, str(ROOT))


def psql(sql: str, *, check=True) -> None:
    psql_on("postgres", sql, check=check)


def psql_on(database: str, sql: str, *, check=True) -> None:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-qc", sql],
                   capture_output=True, check=check)


def start_emulator(args, state: Path, *, limits: bool) -> subprocess.Popen:
    try:  # another benchmark's emulator on this port would take this one's calls (and clock)
        httpx.get(f"http://127.0.0.1:{args.port}/_emulator/health", timeout=1)
        raise SystemExit(f"port {args.port} is taken by another emulator: choose one with --port")
    except httpx.HTTPError:
        pass
    command = [sys.executable, "-m", "stripe_emulator", "--port", str(args.port), "--quiet", "--billing-tick", "0",
               "--db", str(state)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            httpx.get(f"http://127.0.0.1:{args.port}/_emulator/health", timeout=1).raise_for_status()
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        raise SystemExit("the emulator did not start")
    control("time", real="true")  # the snapshot was made on a frozen clock two days back
    if limits:  # Stripe's live limits, and latency on meter event calls only
        control("faults", reset="true", latency_ms=str(args.latency_ms),
                paths="/v1/billing/meter_events,/v2/billing/meter_event_stream",
                rate_limit_live="1000", rate_limit_v2_live="10000", concurrency_limit="true")
    return process


def control(path, **data):
    response = httpx.post(f"{os.environ['STRIPE_API_BASE']}/_emulator/{path}", data=data, timeout=600)
    response.raise_for_status()
    return response.json()


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(30)


def make_snapshots(args) -> dict:
    """N customers and subscriptions through the emulator's API, mirrored, with usage; kept."""
    paths = snapshot_paths(args)
    # The emulator's state is kept if a making was interrupted: what it holds is not made again.
    if args.fresh:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{paths['emulator']}{suffix}").unlink(missing_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{paths['sqlite']}{suffix}").unlink(missing_ok=True)
    if args.db == "postgres":
        psql(f"DROP DATABASE IF EXISTS {paths['pg_work']}", check=False)
        psql(f"CREATE DATABASE {paths['pg_work']}")
    else:
        paths["sqlite_work"].unlink(missing_ok=True)
    emulator = start_emulator(args, paths["emulator"], limits=False)
    import django
    from django.conf import settings
    from django.core.management import call_command

    django.setup()
    from billing.services import stripe_setup
    from billing.stripe_api import get_client
    from embedded_meter import services as meter_services

    timings = {}
    t = time.perf_counter()
    call_command("migrate", verbosity=0)
    timings["migrate_seconds"] = round(time.perf_counter() - t, 1)

    t = time.perf_counter()
    started = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    control("time", now=str(int(started.timestamp())), freeze="true")
    stripe_setup.ensure_epsilon_objects()
    client = get_client()
    price = client.v1.prices.list({"lookup_keys": ["epsilon_execution_monthly"]}).data[0]

    made = {c.email: c.id for c in client.v1.customers.list({"limit": 100}).auto_paging_iter()}
    subscribed = {s.customer for s in client.v1.subscriptions.list({"limit": 100, "status": "all"}).auto_paging_iter()}

    def subscribe(n):
        customer_id = made.get(f"bench{n}@example.com")
        if customer_id is None:
            customer_id = client.v1.customers.create({"email": f"bench{n}@example.com"}).id
        if customer_id not in subscribed:
            client.v1.subscriptions.create({"customer": customer_id, "items": [{"price": price.id}]})
        return customer_id

    if not made:  # the API's own handlers, many pairs per transaction (stripe_emulator/README.md)
        customer_ids = []
        for start in range(0, args.subscriptions, BULK_CHUNK):
            customer_ids += control(
                "bulk_subscriptions", count=str(min(BULK_CHUNK, args.subscriptions - start)), price=price.id,
                email_prefix="bench", start=str(start), stripe_version=settings.STRIPE_API_VERSION,
            )["customers"]
    else:  # a making that was interrupted: what is missing, by API calls
        with ThreadPoolExecutor(8) as pool:
            customer_ids = list(pool.map(subscribe, range(args.subscriptions)))
    timings["made_before"] = len(subscribed)
    control("time", real="true")
    timings["stripe_objects_seconds"] = round(time.perf_counter() - t, 1)
    stop(emulator)  # a fresh emulator process for the sync (its code may have changed meanwhile)
    emulator = start_emulator(args, paths["emulator"], limits=False)

    t = time.perf_counter()
    call_command("sync_stripe", verbosity=0)
    timings["sync_stripe_seconds"] = round(time.perf_counter() - t, 1)

    t = time.perf_counter()
    events = [
        {"specversion": "1.0", "id": f"bench-{c}-{k}", "source": "bench", "type": "epsilon.execution",
         "subject": c, "time": (started + timedelta(hours=k + 1)).isoformat(), "data": {"billed_seconds": k + 1}}
        for c in customer_ids for k in range(args.events_per_customer)
    ]
    for i in range(0, len(events), 10000):
        meter_services.ingest_events(events[i:i + 10000])
    timings["usage_events_seconds"] = round(time.perf_counter() - t, 1)
    stop(emulator)

    from django.db import connections

    connections.close_all()
    if args.db == "postgres":
        psql_on(paths["pg_work"], "VACUUM ANALYZE")  # the statistics autovacuum keeps in production
        psql(f"DROP DATABASE IF EXISTS {paths['pg_template']}", check=False)
        psql(f"CREATE DATABASE {paths['pg_template']} TEMPLATE {paths['pg_work']}")
    else:
        copy_sqlite(paths["sqlite_work"], paths["sqlite"])
    meta = {"started": started.isoformat(), "customers": customer_ids, "events": len(events), "timings": timings}
    paths["meta"].write_text(json.dumps(meta))
    print(f"snapshots made: {args.subscriptions} subscriptions, {len(events)} usage events: {timings}", flush=True)
    return meta


def copy_sqlite(source: Path, target: Path) -> None:
    """A SQLite database file with its write-ahead log, replacing the target's (and its log)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
        if Path(f"{source}{suffix}").exists() and suffix != "-shm":
            shutil.copyfile(f"{source}{suffix}", f"{target}{suffix}")


def restore_snapshots(args) -> tuple[dict, float]:
    """Fresh copies of the snapshots: the state every measured run starts from."""
    paths = snapshot_paths(args)
    t = time.perf_counter()
    copy_sqlite(paths["emulator"], paths["emulator_work"])
    if args.db == "postgres":
        psql(f"DROP DATABASE IF EXISTS {paths['pg_work']}", check=False)
        psql(f"CREATE DATABASE {paths['pg_work']} TEMPLATE {paths['pg_template']}")
        psql_on(paths["pg_work"], "ANALYZE")  # statistics, as autovacuum keeps them in production
    else:
        copy_sqlite(paths["sqlite"], paths["sqlite_work"])
    return json.loads(paths["meta"].read_text()), round(time.perf_counter() - t, 1)


def has_snapshots(args) -> bool:
    paths = snapshot_paths(args)
    if not (paths["meta"].exists() and paths["emulator"].exists()):
        return False
    if args.db == "sqlite":
        return paths["sqlite"].exists()
    found = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-tAc",
                            f"SELECT 1 FROM pg_database WHERE datname = '{paths['pg_template']}'"],
                           capture_output=True, text=True)
    return found.stdout.strip() == "1"


class CountingSource:
    """The configured source, counting the queries a run makes."""

    def __init__(self, source):
        self.source, self.calls, self.requests = source, 0, 0
        self.name = source.name

    def totals(self, meter_slug, window_size, requests):
        self.calls += 1
        self.requests += len(requests)
        return self.source.totals(meter_slug, window_size, requests)


def run_engine(args, shard=None) -> dict:
    """One reporting run (or one shard of it) in this process, measured."""
    import django

    django.setup()
    from django.db import connection

    from billing.models import UsageReport
    from billing.services import meter_event_sender, usage_reporting
    from billing.services.targets import Shard
    from billing.usage_sources import get_usage_source

    source = CountingSource(get_usage_source())
    send_time = [0.0]  # in the senders only: HTTP, rate limiting and retries, not the ledger
    for cls in (meter_event_sender.MeterEventSender, meter_event_sender.MeterEventStreamSender):
        def timed(self, calls, _original=cls.send_all):
            t = time.perf_counter()
            try:
                return _original(self, calls)
            finally:
                send_time[0] += time.perf_counter() - t

        cls.send_all = timed
    queries = [0]
    by_statement = {}  # seconds per statement shape (its first 70 characters)

    def count(execute, sql, params, many, context):
        queries[0] += 1
        t = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            shape = sql[:70]
            by_statement[shape] = by_statement.get(shape, 0.0) + time.perf_counter() - t

    from django.db.backends.signals import connection_created

    def count_there_too(sender, connection, **kwargs):  # the sending threads settle on their own connections
        if count not in connection.execute_wrappers:
            connection.execute_wrappers.append(count)

    connection_created.connect(count_there_too, weak=False)
    import psycopg

    copy = psycopg.Cursor.copy

    def counted_copy(self, statement, *a, **kw):  # COPY bypasses Django's execute wrapper
        queries[0] += 1
        return copy(self, statement, *a, **kw)

    psycopg.Cursor.copy = counted_copy
    rss_before = _max_rss_mb()
    t = time.perf_counter()
    profile = None
    if args.profile:
        import cProfile

        profile = cProfile.Profile()
        profile.enable()
    with connection.execute_wrapper(count):  # counts, stores nothing
        result = usage_reporting.report_usage(
            trigger=UsageReport.Trigger.COMMAND, source=source, keep_outcomes=False,
            shard=Shard(*shard) if shard else None,
        )
    wall = time.perf_counter() - t
    if profile is not None:
        profile.disable()
        profile.dump_stats(str(RESULTS / "report_usage.pstats"))
    return {
        "reports": result.total, "sent": result.count("sent"), "failed": len(result.failed),
        "wall_seconds": round(wall, 2), "send_seconds": round(send_time[0], 2),
        "database_queries": queries[0], "source_queries": source.calls, "source_requests": source.requests,
        "max_rss_mb": _max_rss_mb(), "rss_growth_during_run_mb": round(_max_rss_mb() - rss_before, 1),
        "slowest_statements": {k: round(v, 2) for k, v in sorted(by_statement.items(), key=lambda kv: -kv[1])[:6]},
    }


def measure(args) -> dict:
    """The run in one process, or shared by `--worker-processes` processes (one shard each)."""
    if args.worker_processes == 1:
        parts = [run_engine(args)]
        wall = parts[0]["wall_seconds"]
    else:
        t = time.perf_counter()
        processes = [
            subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--run-shard", str(i)], stdout=subprocess.PIPE, text=True)
            for i in range(args.worker_processes)
        ]
        outputs = [p.communicate()[0] for p in processes]
        wall = round(time.perf_counter() - t, 2)  # the processes' start (Django setup) included
        parts = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    sent = sum(p["sent"] for p in parts)
    queries = sum(p["database_queries"] for p in parts)
    send = max(p["send_seconds"] for p in parts)
    return {
        "items": args.subscriptions, "reports": sum(p["reports"] for p in parts), "sent": sent,
        "failed": sum(p["failed"] for p in parts), "wall_seconds": wall,
        "send_seconds": send, "meter_events_per_second": round(sent / wall, 1) if wall else None,
        "database_queries": queries, "queries_per_item": round(queries / args.subscriptions, 4),
        "source_queries": sum(p["source_queries"] for p in parts),
        "max_rss_mb": max(p["max_rss_mb"] for p in parts),
        "rss_growth_during_run_mb": max(p["rss_growth_during_run_mb"] for p in parts),
        "processes": parts,
    }


def _max_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def check_totals(customer_ids, started) -> tuple[bool, int]:
    """What Stripe holds per customer equals the source's total, exactly."""
    import django

    django.setup()
    from billing.usage_sources import UsageRequest, get_usage_source

    until = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = started.replace(second=0, microsecond=0)  # usage counts from the minute service began
    requests = [UsageRequest(c, start, until) for c in customer_ids]
    source = get_usage_source().totals("m1", "MINUTE", requests)
    totals = httpx.get(f"{os.environ['STRIPE_API_BASE']}/_emulator/meter_event_totals", timeout=600).json()
    by_customer = {c: Decimal(v["total"]) for c, v in totals["by_customer"].items()}
    wrong = [r.subject for r in requests if by_customer.get(r.subject, Decimal(0)) != source[r]]
    return not wrong, len(wrong)


def main():
    args = parse_args()
    configure_environment(args)
    if args.run_shard is not None:  # one shard of a run shared by processes (see measure)
        print(json.dumps(run_engine(args, shard=(args.run_shard, args.worker_processes))))
        return
    made = None
    if args.fresh or not has_snapshots(args):
        made = make_snapshots(args)
    meta, restore_seconds = restore_snapshots(args)
    emulator = start_emulator(args, snapshot_paths(args)["emulator_work"], limits=True)
    try:
        engine = measure(args)
        exact, wrong = check_totals(meta["customers"], datetime.fromisoformat(meta["started"]))
        engine["stripe_equals_source"] = exact
    finally:
        stop(emulator)
    results = {
        "args": vars(args), "engine": engine,
        "setup": {"restore_seconds": restore_seconds, "snapshots_made_now": made is not None,
                  "making_snapshots": meta["timings"], "usage_events": meta["events"]},
        "cpus": os.cpu_count(), "python": sys.version.split()[0],
    }
    out = RESULTS / (f"report_usage-{args.db}-{args.subscriptions}-{args.api}-{args.worker_processes}p.json")
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items()}, indent=2))
    if not exact:
        raise SystemExit(f"{wrong} customer(s) differ between Stripe and the source")


if __name__ == "__main__":
    main()
