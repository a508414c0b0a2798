"""
Benchmark the embedded meter: batch ingest throughput and windowed aggregation.

    .venv/bin/python bench/embedded_meter_bench.py --db postgres --events 1000000
    .venv/bin/python bench/embedded_meter_bench.py --db sqlite --events 1000000

Runs against its own database, never the app's or the tests':
  PostgreSQL  postgres://postgres@127.0.0.1:5432/epsilon_bench (created if missing)
  SQLite      var/bench/embedded_meter.sqlite3
Migrating a fresh database takes ~45 s (dj-stripe): it is done once and reused
(--reuse, the default, only applies missing migrations; --fresh drops the database first).
The events table is truncated and reloaded on every run, unless --keep-events finds
exactly the events this run would load already there.

Steps (see bench/README.md, "Embedded meter"):
  1. load:        --events events (SUBJECTS subjects x events/SUBJECTS) spread over 30 days,
                  through `ingest_events` in batches of --load-batch (measured);
  2. aggregation: EmbeddedUsageSource().totals("m1", "HOUR", ...) for every subject over
                  one shared month and over a distinct period per subject (query counts
                  from CaptureQueriesContext), and GET /api/v1/meters/m1/query?windowSize=HOUR
                  for one subject and for all subjects grouped by subject; each checked
                  against the totals known from generating the events;
  3. ingest:      batches of --batch-size events through POST /api/v1/events (Django's test
                  Client, in-process), through `ingest_events` directly, over real HTTP
                  against `manage.py runserver` (unless --no-http), and the same batches
                  re-sent (the dedupe path). On PostgreSQL inserts go through unnest(arrays);
                  the test Client path is measured again with the ORM's insert for comparison
                  (unless --no-orm-comparison), and with embedded_meter's services.py and
                  validation.py as of a git revision (--before REV, e.g. the commit before a
                  change), in turn with the others in the same sitting.
                  Each ingest run also records CPU seconds per event: this process's
                  (time.process_time) and, on PostgreSQL at 127.0.0.1, the server backend's
                  (/proc/<pg_backend_pid()>/stat): on a machine shared with other work they
                  say what a run costs when wall-clock rates only say how busy the machine was.
Wall times are medians of --runs runs. Results: a table on stdout and
var/bench/embedded_meter-<db>.json.
"""

import argparse
import json
import os
import platform
import random
import secrets
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "var" / "bench"
SQLITE_PATH = RESULTS / "embedded_meter.sqlite3"
PG_DATABASE = "epsilon_bench"
PG_SERVER = "postgres://postgres@127.0.0.1:5432"
TOKEN = "bench-ingest-token"
BATCH = "application/cloudevents-batch+json"

EVENT_TYPE = "epsilon.execution"
LOAD_SOURCE = "bench-load"
INGEST_SOURCE = "bench-ingest"
MONTH_START = datetime(2025, 9, 1, tzinfo=UTC)
HOURS = 30 * 24
MONTH_END = MONTH_START + timedelta(hours=HOURS)
FUNCTIONS = ["resize-image", "send-email", "render-pdf", "score-model", "sync-crm"]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--events", type=int, default=1_000_000, help="events loaded for aggregation")
    parser.add_argument("--subjects", type=int, default=1000)
    parser.add_argument("--load-batch", type=int, default=10_000, help="events per ingest_events call when loading")
    parser.add_argument("--batch-size", type=int, default=1000, help="events per ingest request")
    parser.add_argument("--ingest-batches", type=int, default=20, help="batches per ingest run and path")
    parser.add_argument("--runs", type=int, default=5, help="runs per measurement (the median is reported)")
    parser.add_argument("--seed", type=int, default=1)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--reuse", dest="fresh", action="store_false", default=False,
                       help="reuse the benchmark database, applying missing migrations only (default)")
    group.add_argument("--fresh", dest="fresh", action="store_true", help="drop and re-create the benchmark database")
    parser.add_argument("--keep-events", action="store_true",
                        help="skip truncate and load if exactly the events this run would load are stored")
    parser.add_argument("--no-http", action="store_true", help="skip ingest over real HTTP (runserver)")
    parser.add_argument("--no-orm-comparison", action="store_true",
                        help="PostgreSQL: skip POST /api/v1/events with the ORM insert in place of unnest")
    parser.add_argument("--before", metavar="REV",
                        help="also POST through embedded_meter's services.py and validation.py of git revision REV")
    parser.add_argument("--port", type=int, default=12198, help="runserver port for ingest over real HTTP")
    parser.add_argument("--skip", nargs="*", default=[], choices=["aggregation", "ingest", "query-all"],
                        help="steps to leave out")
    return parser.parse_args()


# --- environment and database --------------------------------------------------


def database_url(args) -> str:
    return f"{PG_SERVER}/{PG_DATABASE}" if args.db == "postgres" else f"sqlite:///{SQLITE_PATH}"


def bench_environment(args) -> dict:
    return {
        "DATABASE_URL": database_url(args),
        "DJANGO_SETTINGS_MODULE": "epsilon.settings",
        "DJANGO_DEBUG": "false",  # as in production: no query log (CaptureQueriesContext turns it on)
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
        "EMBEDDED_METER_INGEST_TOKEN": TOKEN,
        "USAGE_SOURCE": "embedded",
        # Required without DEBUG; any value will do for a benchmark.
        "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY") or secrets.token_urlsafe(50),
        "STRIPE_SECRET_KEY": "sk_test_EmbeddedMeterBenchNeverCalled0000",  # Stripe is not called
        "DJANGO_SECURE_SSL_REDIRECT": "false",  # in-process plain HTTP, as the test Client sends it
    }


def prepare_database(args) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.db == "postgres":
        import psycopg

        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
            if args.fresh:
                conn.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [PG_DATABASE]).fetchone():
                conn.execute(f"CREATE DATABASE {PG_DATABASE}")
    elif args.fresh:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{SQLITE_PATH}{suffix}").unlink(missing_ok=True)
    os.environ.update(bench_environment(args))
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def migrate() -> float:
    """Apply missing migrations (all of them on a fresh database); seconds taken."""
    from django.core.management import call_command
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    t = time.perf_counter()
    executor = MigrationExecutor(connection)
    if executor.migration_plan(executor.loader.graph.leaf_nodes()):
        call_command("migrate", verbosity=0)
    return time.perf_counter() - t


def truncate_events() -> None:
    from django.db import connection

    from embedded_meter.models import Event

    table = Event._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {table} RESTART IDENTITY")
        else:
            cursor.execute(f"DELETE FROM {table}")  # SQLite's truncate optimization
            cursor.execute("DELETE FROM sqlite_sequence WHERE name = %s", [table])
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("VACUUM")


def analyze() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        # VACUUM too on PostgreSQL: otherwise autovacuum visits the million new rows in the
        # middle of the measurements.
        cursor.execute("VACUUM ANALYZE embedded_meter_event" if connection.vendor == "postgresql" else "ANALYZE")


def database_version() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SHOW server_version")
        else:
            cursor.execute("SELECT sqlite_version()")
        return cursor.fetchone()[0]


# --- data -----------------------------------------------------------------------


def subject_name(i: int) -> str:
    return f"cus_Bench{i:06d}"


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Workload:
    """`events` deterministic events over `subjects` subjects in the 30 days from MONTH_START,
    generated in batches; `hourly[s][h]` is subject s's billed seconds in hour h."""

    def __init__(self, events: int, subjects: int, seed: int):
        self.events, self.subjects, self.seed = events, subjects, seed
        self.per_subject = [events // subjects + (1 if i < events % subjects else 0) for i in range(subjects)]
        self.hourly = [[0] * HOURS for _ in range(subjects)]

    def batches(self, size: int):
        batch = []
        for i in range(self.subjects):
            subject = subject_name(i)
            rng = random.Random(f"{self.seed}:{subject}")
            hourly = self.hourly[i]
            for n in range(self.per_subject[i]):
                ms = rng.randrange(HOURS * 3_600_000)
                duration = max(1, round(rng.lognormvariate(7.0, 1.0)))  # ~1.1 s median, long tail
                billed = -(-duration // 1000)  # whole seconds, rounded up
                hourly[ms // 3_600_000] += billed
                batch.append({
                    "specversion": "1.0",
                    "id": f"bench-{self.seed}-{subject}-{n}",
                    "source": LOAD_SOURCE,
                    "type": EVENT_TYPE,
                    "subject": subject,
                    "time": _rfc3339(MONTH_START + timedelta(milliseconds=ms)),
                    "datacontenttype": "application/json",
                    "data": {"duration_ms": duration, "billed_seconds": billed, "function": rng.choice(FUNCTIONS)},
                })
                if len(batch) == size:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def expected(self, i: int, start: datetime, end: datetime) -> int:
        a = int((start - MONTH_START).total_seconds() // 3600)
        b = int((end - MONTH_START).total_seconds() // 3600)
        return sum(self.hourly[i][max(a, 0):max(b, 0)])


def load(args, workload: Workload) -> dict:
    """Truncate and load the workload through ingest_events (or keep what's there)."""
    from django.db.models import Count

    from embedded_meter.models import Event
    from embedded_meter.services import ingest_events

    if args.keep_events:
        stored = Event.objects.filter(source=LOAD_SOURCE).aggregate(n=Count("pk"))["n"]
        if stored == args.events and Event.objects.count() == args.events:
            for _ in workload.batches(args.load_batch):  # fills workload.hourly
                pass
            sample = Event.objects.filter(source=LOAD_SOURCE, event_id=f"bench-{args.seed}-{subject_name(0)}-0")
            if sample.exists():
                print(f"load: kept the {stored} events already stored")
                return {"kept": True, "events": stored}
    truncate_events()
    generate = ingest = 0.0
    t = time.perf_counter()
    batches = workload.batches(args.load_batch)
    loaded = 0
    while True:
        g = time.perf_counter()
        batch = next(batches, None)
        generate += time.perf_counter() - g
        if batch is None:
            break
        i = time.perf_counter()
        loaded += ingest_events(batch)
        ingest += time.perf_counter() - i
        if loaded % 100_000 < args.load_batch:
            print(f"  loaded {loaded} events, {loaded / ingest:,.0f} events/s", flush=True)
    a = time.perf_counter()
    analyze()
    analyze_s = time.perf_counter() - a
    total = time.perf_counter() - t
    stored = Event.objects.count()
    assert stored == args.events, f"stored {stored} events, expected {args.events}"
    return {
        "kept": False,
        "events": loaded,
        "path": f"ingest_events, {args.load_batch} events per call (validation, bulk insert, dedupe)",
        "ingest_seconds": round(ingest, 2),
        "events_per_second": round(loaded / ingest),
        "generate_seconds": round(generate, 2),
        "analyze_seconds": round(analyze_s, 2),
        "total_seconds": round(total, 2),
    }


# --- measuring ------------------------------------------------------------------


def timed(fn, runs: int):
    """(median seconds, all seconds, last result) of `runs` calls."""
    seconds, result = [], None
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - t)
    return statistics.median(seconds), seconds, result


def count_queries(fn) -> tuple[int, list[str]]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        fn()
    return len(captured), [q["sql"][:160] for q in captured.captured_queries]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def measure_totals(args, workload: Workload) -> dict:
    from billing.usage_sources.base import UsageRequest
    from billing.usage_sources.embedded import EmbeddedUsageSource

    source = EmbeddedUsageSource()
    subjects = [subject_name(i) for i in range(args.subjects)]
    results = {}

    shared = [UsageRequest(s, MONTH_START, MONTH_END) for s in subjects]
    # Each subject its own period: a start hour and an end hour of its own (all distinct).
    distinct = [
        UsageRequest(s, MONTH_START + timedelta(hours=i % (HOURS // 2)),
                     MONTH_END - timedelta(hours=(i // (HOURS // 2)) % (HOURS // 2)))
        for i, s in enumerate(subjects)
    ]
    for name, requests in (("shared_month", shared), ("distinct_periods", distinct)):
        call = lambda: source.totals("m1", "HOUR", requests)  # noqa: E731
        call()  # warm-up (caches, connection)
        median, all_seconds, got = timed(call, args.runs)
        queries, sql = count_queries(call)
        wrong = sum(
            1 for i, r in enumerate(requests) if got[r] != Decimal(workload.expected(i, r.start, r.end))
        )
        results[name] = {
            "requests": len(requests),
            "distinct_periods": len({(r.start, r.end) for r in requests}),
            "median_ms": ms(median),
            "runs_ms": [ms(s) for s in all_seconds],
            "sql_queries": queries,
            "sql": sql,
            "nonzero_totals": sum(1 for v in got.values() if v),
            "wrong_totals": wrong,
        }
        print(f"totals {name}: {ms(median)} ms, {queries} queries, {wrong} wrong", flush=True)
        assert wrong == 0, f"totals {name}: {wrong} totals differ from the generated events"
    return results


def measure_query_endpoint(args, workload: Workload) -> dict:
    from django.test import Client

    from embedded_meter import definitions, selectors

    client = Client()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}
    window = {"windowSize": "HOUR", "from": _rfc3339(MONTH_START), "to": _rfc3339(MONTH_END)}
    meter = definitions.get_meter("m1")
    results = {}
    cases = [("one_subject", {**window, "subject": subject_name(0)}, 0)]
    if "query-all" not in args.skip:
        cases.append(("all_subjects_by_subject", {**window, "groupBy": "subject"}, None))
    for name, params, index in cases:
        def call():
            response = client.get("/api/v1/meters/m1/query", params, **headers)
            assert response.status_code == 200, response.content[:500]
            return response

        call()
        runs = args.runs if index is not None else max(3, args.runs // 2 + 1)
        median, all_seconds, response = timed(call, runs)
        queries, _ = count_queries(call)
        body = json.loads(response.content)
        rows = body["data"]
        total = sum(Decimal(str(r["value"])) for r in rows)
        expected = workload.expected(index, MONTH_START, MONTH_END) if index is not None else sum(
            workload.expected(i, MONTH_START, MONTH_END) for i in range(args.subjects)
        )
        # The same query without HTTP and JSON: selectors.query alone.
        subjects = [params["subject"]] if "subject" in params else []
        sel_median, _, _ = timed(
            lambda: selectors.query(meter, start=MONTH_START, end=MONTH_END, window_size="HOUR",
                                    subjects=subjects, group_by_subject=True), runs)
        results[name] = {
            "median_ms": ms(median),
            "runs_ms": [ms(s) for s in all_seconds],
            "selector_only_median_ms": ms(sel_median),
            "rows": len(rows),
            "response_bytes": len(response.content),
            "sql_queries": queries,
            "sum_equals_generated": total == expected,
        }
        print(f"query {name}: {ms(median)} ms ({ms(sel_median)} ms in selectors.query), {len(rows)} rows", flush=True)
        assert total == expected, f"query {name}: sum {total} != {expected}"
    return results


def ingest_batches(run: str, count: int, size: int) -> list[list[dict]]:
    """Fresh events (new ids) for one ingest run, for subjects not in the workload."""
    batches = []
    for b in range(count):
        batch = []
        for k in range(size):
            n = b * size + k
            batch.append({
                "specversion": "1.0",
                "id": f"{run}-{n}",
                "source": INGEST_SOURCE,
                "type": EVENT_TYPE,
                "subject": f"cus_Ingest{n % 500:04d}",
                "time": _rfc3339(MONTH_START + timedelta(seconds=(n * 7919) % (HOURS * 3600))),
                "datacontenttype": "application/json",
                "data": {"duration_ms": 1000 + n % 4000, "billed_seconds": 1 + n % 5, "function": FUNCTIONS[n % 5]},
            })
        batches.append(batch)
    return batches


def services_at(rev: str):
    """embedded_meter's services module (and its validation) as of git revision `rev`,
    importing everything else (models, definitions, jsonpath) from the working tree."""
    import types

    import embedded_meter
    from embedded_meter import definitions, jsonpath, models

    name = "embedded_meter_at_" + rev.replace("~", "_").replace("^", "_").replace("-", "_")
    package = types.ModuleType(name)
    package.__path__ = []
    sys.modules[name] = package
    for module in (definitions, jsonpath, models):
        short = module.__name__.rsplit(".", 1)[1]
        sys.modules[f"{name}.{short}"] = module
        setattr(package, short, module)
    for short in ("validation", "services"):
        source = subprocess.check_output(["git", "show", f"{rev}:embedded_meter/{short}.py"], cwd=ROOT, text=True)
        module = types.ModuleType(f"{name}.{short}")
        module.__package__ = name
        module.__file__ = f"{embedded_meter.__path__[0]}/{short}.py@{rev}"
        sys.modules[module.__name__] = module
        setattr(package, short, module)
        exec(compile(source, module.__file__, "exec"), module.__dict__)
    return package.services


class CpuMeter:
    """CPU seconds of this process and, on a local PostgreSQL, of this connection's server backend."""

    def __init__(self):
        from django.db import connection

        self.backend_stat = None
        if connection.vendor == "postgresql" and connection.settings_dict.get("HOST") in ("127.0.0.1", "localhost", ""):
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                path = Path(f"/proc/{cursor.fetchone()[0]}/stat")
            if path.exists():
                self.backend_stat = path
        self.tick = os.sysconf("SC_CLK_TCK")

    def backend(self) -> float | None:
        if self.backend_stat is None:
            return None
        fields = self.backend_stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.tick  # utime + stime

    def read(self) -> tuple[float, float | None]:
        return time.process_time(), self.backend()


def measure_ingest(args) -> dict:
    from django.test import Client

    from embedded_meter.models import Event
    from embedded_meter.services import ingest_events

    client = Client()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}

    def post_client(bodies):
        for body in bodies:
            response = client.generic("POST", "/api/v1/events", body, content_type=BATCH, **headers)
            assert response.status_code == 204, response.content[:500]

    def direct(batches):
        for batch in batches:
            ingest_events(batch)

    def orm_insert(send):
        """The same sender with the ORM's multi-row insert instead of unnest (PostgreSQL)."""
        from embedded_meter import services

        def sender(payload):
            vendors, services.BULK_VENDORS = services.BULK_VENDORS, ()
            try:
                send(payload)
            finally:
                services.BULK_VENDORS = vendors

        return sender

    def with_services(module, send):
        """The same sender with the view calling `module` (services.py of another revision)."""
        from embedded_meter import views

        def sender(payload):
            current, views.services = views.services, module
            try:
                send(payload)
            finally:
                views.services = current

        return sender

    paths = {
        # (sender, whether it takes serialized bodies)
        "http_test_client": (post_client, True),
        "ingest_events": (direct, False),
    }
    if args.db == "postgres" and not args.no_orm_comparison:
        paths["http_test_client_orm_insert"] = (orm_insert(post_client), True)
    if args.before:
        paths[f"http_test_client_at_{args.before}"] = (with_services(services_at(args.before), post_client), True)
    server = None
    if not args.no_http:
        server = start_runserver(args)
        if server:
            paths["http_runserver"] = (server.post_all, True)
    per = args.batch_size * args.ingest_batches
    results = {}
    rates = {path: ([], []) for path in paths}
    cpu = {path: ([], []) for path in paths}  # per new event: this process, the database backend
    meter = CpuMeter()
    try:
        # Paths take turns, run by run, so a slow moment of the machine hits them alike.
        for run in range(args.runs):
            for path, (send, serialized) in paths.items():
                new_rates, dup_rates = rates[path]
                batches = ingest_batches(f"{path}-{run}", args.ingest_batches, args.batch_size)
                payload = [json.dumps(b).encode() for b in batches] if serialized else batches
                before = Event.objects.filter(source=INGEST_SOURCE).count()
                cpu_client, cpu_backend = meter.read()
                t = time.perf_counter()
                send(payload)
                new_rates.append(per / (time.perf_counter() - t))
                client_after, backend_after = meter.read()
                cpu[path][0].append((client_after - cpu_client) / per)
                if cpu_backend is not None:
                    cpu[path][1].append((backend_after - cpu_backend) / per)
                t = time.perf_counter()
                send(payload)  # the same batches again: every event is a duplicate
                dup_rates.append(per / (time.perf_counter() - t))
                stored = Event.objects.filter(source=INGEST_SOURCE).count() - before
                assert stored == per, f"{path}: stored {stored} new events, expected {per} (dedupe broken?)"
        for path, (new_rates, dup_rates) in rates.items():
            results[path] = {
                "events_per_run": per,
                "batch_size": args.batch_size,
                "new_events_per_second": round(statistics.median(new_rates)),
                "new_runs": [round(r) for r in new_rates],
                "resent_events_per_second": round(statistics.median(dup_rates)),
                "resent_runs": [round(r) for r in dup_rates],
            }
            client_cpu, backend_cpu = cpu[path]
            r = results[path]
            r["client_cpu_us_per_event"] = round(statistics.median(client_cpu) * 1e6, 1)
            r["client_cpu_runs"] = [round(c * 1e6, 1) for c in client_cpu]
            cpu_note = f"; CPU per new event {r['client_cpu_us_per_event']} us here"
            if backend_cpu:
                r["db_backend_cpu_us_per_event"] = round(statistics.median(backend_cpu) * 1e6, 1)
                r["db_backend_cpu_runs"] = [round(c * 1e6, 1) for c in backend_cpu]
                cpu_note += f" + {r['db_backend_cpu_us_per_event']} us in the PostgreSQL backend"
                total = r["client_cpu_us_per_event"] + r["db_backend_cpu_us_per_event"]
            else:
                total = r["client_cpu_us_per_event"]
            # If nothing else ran and nothing waited (commits do wait): one event after another.
            r["cpu_bound_events_per_second"] = round(1e6 / total) if total else None
            print(f"ingest {path}: {r['new_events_per_second']:,} new events/s, "
                  f"{r['resent_events_per_second']:,} re-sent events/s{cpu_note}", flush=True)
    finally:
        if server:
            server.stop()
        Event.objects.filter(source=INGEST_SOURCE).delete()
    return results


class Runserver:
    def __init__(self, args):
        import httpx

        env = {**os.environ, **bench_environment(args)}
        self.url = f"http://127.0.0.1:{args.port}"
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "runserver", "--noreload", "--skip-checks",
             f"127.0.0.1:{args.port}"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.http = httpx.Client(base_url=self.url, timeout=120,
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": BATCH})

    def wait(self) -> bool:
        for _ in range(300):
            if self.process.poll() is not None:
                return False
            try:
                socket.create_connection(("127.0.0.1", int(self.url.rsplit(":", 1)[1])), timeout=0.2).close()
                return True
            except OSError:
                time.sleep(0.1)
        return False

    def post_all(self, bodies):
        for body in bodies:
            response = self.http.post("/api/v1/events", content=body)
            assert response.status_code == 204, response.text[:500]

    def stop(self):
        self.http.close()
        self.process.terminate()
        self.process.wait(10)


def start_runserver(args):
    server = Runserver(args)
    if server.wait():
        return server
    server.stop()
    print("runserver did not start: skipping ingest over real HTTP")
    return None


# --- report ---------------------------------------------------------------------


def machine(db_version: str, args) -> dict:
    import django

    return {
        "cpus": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "database": f"{'PostgreSQL' if args.db == 'postgres' else 'SQLite'} {db_version}",
        # The machine may be shared: a load above the CPU count means other work competed.
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def print_table(results: dict) -> None:
    rows = []
    load = results.get("load", {})
    if not load.get("kept"):
        rows.append(("load: ingest_events, %d/call" % results["args"]["load_batch"],
                     f"{load['events_per_second']:,} events/s", f"{load['events']:,} events in {load['ingest_seconds']} s"))
    for path, r in results.get("ingest", {}).items():
        cpu = f"CPU {r['client_cpu_us_per_event']} us/event" + (
            f" + {r['db_backend_cpu_us_per_event']} us/event in PostgreSQL" if "db_backend_cpu_us_per_event" in r else "")
        rows.append((f"ingest {path}, {r['batch_size']}/batch", f"{r['new_events_per_second']:,} events/s",
                     f"runs {r['new_runs']}; {cpu} (1 / CPU: {r['cpu_bound_events_per_second']:,} events/s)"))
        rows.append((f"ingest {path}, re-sent (dedupe)", f"{r['resent_events_per_second']:,} events/s",
                     f"runs {r['resent_runs']}"))
    for name, r in results.get("totals", {}).items():
        rows.append((f"totals m1 HOUR, {r['requests']} subjects, {name}", f"{r['median_ms']:,} ms",
                     f"{r['sql_queries']} SQL queries, {r['distinct_periods']} periods"))
    for name, r in results.get("query_endpoint", {}).items():
        rows.append((f"GET query windowSize=HOUR, {name}", f"{r['median_ms']:,} ms",
                     f"{r['rows']:,} rows, {r['response_bytes']:,} B, selectors.query {r['selector_only_median_ms']:,} ms"))
    width = max(len(r[0]) for r in rows)
    print()
    print(f"Embedded meter on {results['machine']['database']}, {results['args']['events']:,} events "
          f"({results['machine']['cpus']} CPUs, Python {results['machine']['python']}); medians of {results['args']['runs']} runs")
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>18}  {note}")


def main():
    args = parse_args()
    prepare_database(args)
    results = {"args": vars(args), "database": database_url(args)}
    results["migrate_seconds"] = round(migrate(), 1)
    print(f"migrate: {results['migrate_seconds']} s", flush=True)
    results["machine"] = machine(database_version(), args)

    from embedded_meter.models import Event

    Event.objects.filter(source=INGEST_SOURCE).delete()  # left by an interrupted run
    workload = Workload(args.events, args.subjects, args.seed)
    results["load"] = load(args, workload)
    if "aggregation" not in args.skip:
        results["totals"] = measure_totals(args, workload)
        results["query_endpoint"] = measure_query_endpoint(args, workload)
    if "ingest" not in args.skip:
        results["ingest"] = measure_ingest(args)
    results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out = RESULTS / f"embedded_meter-{args.db}.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    print_table(results)
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
