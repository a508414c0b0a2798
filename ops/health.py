"""
Health probes, for a load balancer or Kubernetes. No login; plain HTTP by IP is fine
(ops.middleware.ProbeMiddleware answers them before host validation and the HTTPS
redirect). Both answer `Cache-Control: no-store`: a cached "ok" would hide an outage.

`GET /healthz`, liveness: 200 `{"status": "ok"}` whenever the process can answer a
request, and nothing else. It never touches the database, Stripe or the usage source
on purpose: a liveness failure makes the orchestrator restart the pod, and restarting
every pod because the database (shared by all of them) is down fixes nothing and
turns an outage into a restart storm.

`GET /readyz`, readiness: whether this pod can do its work now, so the load balancer
sends it traffic (or a deploy waits for it). 200 when every check passes, else 503;
the body says which failed and why:

    {"status": "ok" | "fail", "checks": {name: {"ok": bool, "detail": "..."}}}

- `database`: `SELECT 1` on the default database, on a connection of its own in a
  thread given DATABASE_TIMEOUT_SECONDS (so an unreachable host cannot hold the probe
  for the OS's TCP timeout). When it fails, the checks below that read the database
  are reported failed without being run.
- `migrations`: Django's migration plan towards the code's leaf migrations is empty;
  the detail says how many are pending.
- `stripe_key`: settings.STRIPE_SECRET_KEY is set and looks like a Stripe secret or
  restricted key; the detail says test mode, live mode or the local emulator's demo
  key. Never the key, nor any part of it.
- `schedule`: the django-q2 reporting schedule exists and is not overdue: its
  next_run is no older than max(2 x its interval, 10 minutes). Overdue means nothing
  picks schedules up, i.e. no `manage.py qcluster` is running.
- `usage_source`: the configured usage source answers (`UsageSource.check()`: a
  read of the embedded meter's tables, or one listMeters request to OpenMeter with
  its client timeout and no retries).

Each check is time-bounded (database reads run under a statement timeout of
QUERY_TIMEOUT_SECONDS on PostgreSQL, a busy timeout of as much on SQLite) and never
raises out of the view: a failing check is `ok: false` with its error's text, no
traceback, and anything secret (keys, tokens, passwords in URLs) redacted.
"""

import logging
import re
import threading
from collections.abc import Callable
from contextlib import contextmanager
from datetime import UTC, timedelta

from django.conf import settings
from django.db import connection, connections, transaction
from django.db.migrations.executor import MigrationExecutor
from django.http import JsonResponse
from django.utils import timezone

from billing.conf import conf

logger = logging.getLogger("ops.health")

DATABASE_TIMEOUT_SECONDS = 3.0
QUERY_TIMEOUT_SECONDS = 3.0
MAX_DETAIL_CHARS = 300
MIN_SCHEDULE_GRACE = timedelta(minutes=10)


class CheckFailed(Exception):
    """A check's expected failure: its message is the detail shown."""


def healthz(request):
    """Liveness: the process answers. No dependency is touched (see the module docstring)."""
    return _no_store(JsonResponse({"status": "ok"}))


def readyz(request):
    """Readiness: every check passes (200) or not (503), each with its detail."""
    checks = {}
    database = _run("database", lambda: _in_thread(check_database, DATABASE_TIMEOUT_SECONDS))
    checks["database"] = database
    for name, check, reads_database in (
        ("migrations", check_migrations, True),
        ("stripe_key", check_stripe_key, False),
        ("schedule", check_schedule, True),
        ("usage_source", check_usage_source, settings.USAGE_SOURCE == "embedded"),
    ):
        if reads_database and not database["ok"]:
            checks[name] = {"ok": False, "detail": "not checked: the database check failed"}
        else:
            checks[name] = _run(name, _bounded(check) if reads_database else check)
    ready = all(check["ok"] for check in checks.values())
    body = {"status": "ok" if ready else "fail", "checks": checks}
    return _no_store(JsonResponse(body, status=200 if ready else 503))


# --- the checks: each returns its detail, or raises -----------------------------------


def check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return f"{connection.vendor}: SELECT 1 answered"


def check_migrations() -> str:
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        names = ", ".join(f"{migration.app_label}.{migration.name}" for migration, _backwards in plan[:3])
        more = f" and {len(plan) - 3} more" if len(plan) > 3 else ""
        raise CheckFailed(
            f"{len(plan)} migration(s) pending ({names}{more}): run `manage.py migrate`"
        )
    return "no migrations pending"


def check_stripe_key() -> str:
    key = (getattr(settings, "STRIPE_SECRET_KEY", "") or "").strip()
    if not key:
        raise CheckFailed("STRIPE_SECRET_KEY is not set")
    if key == getattr(settings, "STRIPE_EMULATOR_KEY", None):
        return "set: the local emulator's demo key"
    if key.startswith(("sk_test_", "rk_test_")):
        return "set: test mode"
    if key.startswith(("sk_live_", "rk_live_")):
        return "set: live mode"
    raise CheckFailed(
        "STRIPE_SECRET_KEY is set but is not a Stripe secret or restricted key "
        "(sk_test_, sk_live_, rk_test_ or rk_live_)"
    )


def check_schedule() -> str:
    from django_q.models import Schedule

    from billing.services.schedules import SCHEDULE_NAME

    schedule = Schedule.objects.filter(name=SCHEDULE_NAME).order_by("id").first()
    if schedule is None:
        raise CheckFailed(
            f'the reporting schedule "{SCHEDULE_NAME}" does not exist: run `manage.py epsilon_setup`'
        )
    if schedule.repeats == 0:
        raise CheckFailed("the reporting schedule has no runs left (repeats=0): run `manage.py epsilon_setup`")
    if schedule.next_run is None:
        raise CheckFailed("the reporting schedule has no next run: run `manage.py epsilon_setup`")
    interval = _schedule_interval(schedule)
    grace = max(2 * interval, MIN_SCHEDULE_GRACE)
    now = timezone.now()
    due = f"{schedule.next_run.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
    if schedule.next_run < now - grace:
        late = int((now - schedule.next_run).total_seconds() // 60)
        raise CheckFailed(
            f"overdue: its next run was due at {due}, {late} min ago (grace {_minutes(grace)} min): "
            "no scheduler picks it up; is `manage.py qcluster` running?"
        )
    return f"every {_minutes(interval)} min; next run due at {due}"


def check_usage_source() -> str:
    from billing.usage_sources import get_usage_source

    source = get_usage_source()
    try:
        return source.check() or f"{source.name}: reachable"
    finally:
        close = getattr(source, "close", None)
        if close:
            close()


# --- helpers ----------------------------------------------------------------------------


def _schedule_interval(schedule) -> timedelta:
    from django_q.models import Schedule

    if schedule.schedule_type == Schedule.MINUTES:
        return timedelta(minutes=schedule.minutes or conf.REPORT_INTERVAL_MINUTES)
    fixed = {
        Schedule.HOURLY: timedelta(hours=1),
        Schedule.DAILY: timedelta(days=1),
        Schedule.WEEKLY: timedelta(weeks=1),
        Schedule.BIWEEKLY: timedelta(weeks=2),
        Schedule.MONTHLY: timedelta(days=31),
        Schedule.QUARTERLY: timedelta(days=92),
        Schedule.YEARLY: timedelta(days=366),
    }
    return fixed.get(schedule.schedule_type, timedelta(minutes=conf.REPORT_INTERVAL_MINUTES))


def _minutes(delta: timedelta) -> int:
    return int(delta.total_seconds() // 60)


def _run(name: str, check: Callable[[], str]) -> dict:
    """{"ok": True, "detail": ...}, or ok False with the error's text: never raises."""
    try:
        return {"ok": True, "detail": redacted(check())}
    except CheckFailed as exc:
        detail = redacted(str(exc))
    except Exception as exc:  # a probe reports failures, it does not raise them
        detail = redacted(_describe(exc))
    logger.warning("readyz: %s check failed: %s", name, detail)
    return {"ok": False, "detail": detail}


def _describe(exc: BaseException) -> str:
    from billing.usage_sources import UsageSourceError

    if isinstance(exc, UsageSourceError):
        return str(exc)  # written for operators already
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _in_thread(check: Callable[[], str], timeout: float) -> str:
    """Runs `check` in a daemon thread, on its own connections (closed after), for at most `timeout`s."""
    outcome: dict = {}

    def target():
        try:
            outcome["detail"] = check()
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            connections.close_all()  # this thread's connections only

    thread = threading.Thread(target=target, name="readyz-database", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise CheckFailed(f"no answer within {timeout:g}s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["detail"]


def _bounded(check: Callable[[], str]) -> Callable[[], str]:
    def run() -> str:
        with _query_timeout(QUERY_TIMEOUT_SECONDS):
            return check()

    return run


@contextmanager
def _query_timeout(seconds: float):
    """Database reads inside give up after `seconds`, on the request's own connection."""
    milliseconds = int(seconds * 1000)
    if connection.vendor == "postgresql":
        with transaction.atomic():  # SET LOCAL ends with this transaction (or savepoint's outer one)
            with connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL statement_timeout = {milliseconds}")
            yield
    elif connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA busy_timeout")
            previous = cursor.fetchone()[0]
            cursor.execute(f"PRAGMA busy_timeout = {milliseconds}")
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute(f"PRAGMA busy_timeout = {int(previous)}")
    else:
        yield


_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")
_STRIPE_KEY = re.compile(r"\b(?:sk|rk|pk|whsec)_[A-Za-z0-9_]+")
_CREDENTIAL = re.compile(r"(?i)\b(bearer\s+|token=|password=|api_?key=)[^\s&\"']+")


def _secrets() -> list[str]:
    values = [
        getattr(settings, name, "")
        for name in (
            "STRIPE_SECRET_KEY",
            "STRIPE_TEST_SECRET_KEY",
            "STRIPE_LIVE_SECRET_KEY",
            "DJSTRIPE_WEBHOOK_SECRET",
            "OPENMETER_TOKEN",
            "EMBEDDED_METER_INGEST_TOKEN",
            "METRICS_TOKEN",
            "SECRET_KEY",
        )
    ]
    values += [db.get("PASSWORD", "") for db in settings.DATABASES.values()]
    return sorted({v for v in values if isinstance(v, str) and len(v) >= 4}, key=len, reverse=True)


def redacted(text: str) -> str:
    """One line, short, with secrets redacted (probe details, alert messages)."""
    text = " ".join(str(text).split())
    for secret in _secrets():
        text = text.replace(secret, "[redacted]")
    text = _URL_CREDENTIALS.sub(r"\g<scheme>[redacted]@", text)
    text = _STRIPE_KEY.sub("[redacted]", text)
    text = _CREDENTIAL.sub(r"\1[redacted]", text)
    if len(text) > MAX_DETAIL_CHARS:
        text = text[: MAX_DETAIL_CHARS - 1] + "…"
    return text


def _no_store(response):
    response["Cache-Control"] = "no-store"
    return response
