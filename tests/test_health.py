"""/healthz (liveness: never touches a dependency) and /readyz (readiness: every check, 503 naming the failed one)."""

import json
import threading
from datetime import timedelta
from types import SimpleNamespace
from unittest import mock

import httpx
import pytest
import respx
from django.db import OperationalError, connections
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone
from django_q.models import Schedule

from billing.services.schedules import SCHEDULE_NAME, ensure_report_schedule
from billing.usage_sources import UsageSourceError
from billing.usage_sources.embedded import EmbeddedUsageSource
from ops import health

SECRET = "sk_test_51HealthProbeSecretMustNeverLeak0000"
DSN_PASSWORD = "hunter2-db-password"
OPENMETER_URL = "http://openmeter.test"
OPENMETER_TOKEN = "om_token_must_never_leak"
CHECKS = {"database", "migrations", "stripe_key", "schedule", "usage_source"}

# components.schemas.Meter.example (shared/openmeter/openapi.yaml): listMeters answers an array of these.
SPEC_METERS = """[
  {
    "id": "01G65Z755AFWAKHE12NY0CQ9FH",
    "slug": "tokens_total",
    "name": "Tokens Total",
    "description": "AI Token Usage",
    "aggregation": "SUM",
    "eventType": "prompt",
    "valueProperty": "$.tokens",
    "groupBy": {"model": "$.model", "type": "$.type"},
    "createdAt": "2024-01-01T01:01:01.001Z",
    "updatedAt": "2024-01-01T01:01:01.001Z"
  }
]"""


@pytest.fixture
def ready(settings):
    """Every check passes: a test-mode key, the embedded source, a schedule due soon."""
    settings.STRIPE_SECRET_KEY = SECRET
    settings.USAGE_SOURCE = "embedded"
    set_next_run(timedelta(minutes=5))


def set_next_run(from_now: timedelta, minutes: int | None = None) -> None:
    schedule, _ = ensure_report_schedule(minutes)
    Schedule.objects.filter(pk=schedule.pk).update(next_run=timezone.now() + from_now)


def readyz(client, expected_status: int) -> dict:
    response = client.get("/readyz")
    assert response.status_code == expected_status, response.content
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    text = response.content.decode()
    for secret in (SECRET, SECRET[len("sk_test_"):], DSN_PASSWORD, OPENMETER_TOKEN):
        assert secret not in text
    assert "Traceback" not in text
    body = json.loads(text)
    assert set(body["checks"]) == CHECKS
    assert all(set(check) == {"ok", "detail"} and isinstance(check["detail"], str) for check in body["checks"].values())
    assert body["status"] == ("ok" if expected_status == 200 else "fail")
    return body


def failed(body: dict) -> set[str]:
    return {name for name, check in body["checks"].items() if not check["ok"]}


def database_wrapper_class():
    return type(connections["default"])


# --- /healthz ---------------------------------------------------------------------------


def test_healthz_answers_ok_without_touching_the_unreachable_database(client):
    # No django_db mark either: pytest-django would fail any database access.
    down = OperationalError("could not connect to server")
    with (
        mock.patch.object(database_wrapper_class(), "ensure_connection", side_effect=down) as connect,
        mock.patch.object(database_wrapper_class(), "cursor", side_effect=down) as cursor,
    ):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["Cache-Control"] == "no-store"
    assert (connect.call_count, cursor.call_count) == (0, 0)


# --- /readyz: all well ------------------------------------------------------------------


@pytest.mark.django_db
def test_readyz_is_ok_when_every_check_passes(client, ready):
    body = readyz(client, 200)
    assert failed(body) == set()
    assert body["checks"]["stripe_key"]["detail"] == "set: test mode"
    assert "next run due at" in body["checks"]["schedule"]["detail"]
    assert body["checks"]["usage_source"]["detail"] == "embedded meter: tables readable"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "key, detail",
    [
        ("sk_live_51LiveSecretMustNeverLeak", "set: live mode"),
        ("rk_test_51RestrictedSecretMustNeverLeak", "set: test mode"),
        ("sk_test_EpsilonLocalEmulator0000000000", "set: the local emulator's demo key"),
    ],
)
def test_the_stripe_key_check_names_the_mode_never_the_key(client, ready, settings, key, detail):
    settings.STRIPE_SECRET_KEY = key
    body = readyz(client, 200)
    assert body["checks"]["stripe_key"] == {"ok": True, "detail": detail}
    assert key[8:] not in json.dumps(body)


# --- /readyz: each cause fails it, and it recovers ---------------------------------------


@pytest.mark.django_db
def test_readyz_fails_on_a_database_error_and_recovers(client, ready):
    down = OperationalError(f"connection to postgres://epsilon:{DSN_PASSWORD}@db.internal:5432/epsilon failed")
    with mock.patch.object(database_wrapper_class(), "ensure_connection", side_effect=down):
        body = readyz(client, 503)
    assert failed(body) == {"database", "migrations", "schedule", "usage_source"}  # the key needs no database
    assert "OperationalError" in body["checks"]["database"]["detail"]
    assert "postgres://[redacted]@db.internal" in body["checks"]["database"]["detail"]
    assert body["checks"]["schedule"]["detail"] == "not checked: the database check failed"

    assert failed(readyz(client, 200)) == set()


@pytest.mark.django_db
def test_readyz_gives_up_on_a_database_that_does_not_answer(client, ready, monkeypatch):
    monkeypatch.setattr(health, "DATABASE_TIMEOUT_SECONDS", 0.2)
    release = threading.Event()

    def hang():
        release.wait(10)
        raise OperationalError("timed out")

    try:
        with mock.patch.object(database_wrapper_class(), "ensure_connection", side_effect=hang):
            body = readyz(client, 503)
    finally:
        release.set()
    assert body["checks"]["database"] == {"ok": False, "detail": "no answer within 0.2s"}
    assert failed(readyz(client, 200)) == set()


@pytest.mark.django_db
def test_readyz_fails_while_migrations_are_pending_and_recovers(client, ready):
    pending = [(SimpleNamespace(app_label="billing", name="0099_pending"), False)]
    with mock.patch.object(MigrationExecutor, "migration_plan", return_value=pending):
        body = readyz(client, 503)
    assert failed(body) == {"migrations"}
    assert body["checks"]["migrations"]["detail"].startswith("1 migration(s) pending (billing.0099_pending)")

    assert readyz(client, 200)["checks"]["migrations"] == {"ok": True, "detail": "no migrations pending"}


@pytest.mark.django_db
def test_readyz_fails_without_a_stripe_key_and_recovers(client, ready, settings):
    settings.STRIPE_SECRET_KEY = ""
    body = readyz(client, 503)
    assert failed(body) == {"stripe_key"}
    assert body["checks"]["stripe_key"]["detail"] == "STRIPE_SECRET_KEY is not set"

    settings.STRIPE_SECRET_KEY = SECRET
    assert failed(readyz(client, 200)) == set()


@pytest.mark.django_db
def test_readyz_fails_without_the_schedule_and_recovers(client, ready):
    Schedule.objects.filter(name=SCHEDULE_NAME).delete()
    body = readyz(client, 503)
    assert failed(body) == {"schedule"}
    assert "does not exist" in body["checks"]["schedule"]["detail"]
    assert "epsilon_setup" in body["checks"]["schedule"]["detail"]

    set_next_run(timedelta(minutes=5))
    assert failed(readyz(client, 200)) == set()


@pytest.mark.django_db
def test_readyz_fails_when_the_schedule_is_overdue_and_recovers(client, ready):
    set_next_run(-timedelta(hours=2), minutes=30)  # grace: 2 x 30 min
    body = readyz(client, 503)
    assert failed(body) == {"schedule"}
    detail = body["checks"]["schedule"]["detail"]
    assert detail.startswith("overdue:") and "manage.py qcluster" in detail

    set_next_run(timedelta(minutes=5))
    assert failed(readyz(client, 200)) == set()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "minutes, late_minutes, ok",
    [(60, 119, True), (60, 121, False), (1, 9, True), (1, 11, False)],  # grace: max(2 x interval, 10 min)
)
def test_the_schedule_grace_is_twice_its_interval_and_at_least_ten_minutes(client, ready, minutes, late_minutes, ok):
    set_next_run(-timedelta(minutes=late_minutes), minutes=minutes)
    body = readyz(client, 200 if ok else 503)
    assert body["checks"]["schedule"]["ok"] is ok


@pytest.mark.django_db
def test_readyz_fails_when_the_embedded_source_is_unreachable_and_recovers(client, ready):
    broken = UsageSourceError("The embedded meter's tables cannot be read: no such table: embedded_meter_event")
    with mock.patch.object(EmbeddedUsageSource, "check", side_effect=broken):
        body = readyz(client, 503)
    assert failed(body) == {"usage_source"}
    assert body["checks"]["usage_source"]["detail"] == str(broken)

    with mock.patch.object(EmbeddedUsageSource, "check", side_effect=RuntimeError(f"boom {SECRET}")):
        body = readyz(client, 503)
    assert body["checks"]["usage_source"] == {"ok": False, "detail": "RuntimeError: boom [redacted]"}

    assert failed(readyz(client, 200)) == set()


@pytest.mark.django_db
def test_readyz_fails_while_openmeter_is_unreachable_and_recovers(client, ready, settings):
    settings.USAGE_SOURCE = "openmeter"
    settings.OPENMETER_URL = OPENMETER_URL
    settings.OPENMETER_TOKEN = OPENMETER_TOKEN
    settings.OPENMETER_MAX_RETRIES = 3  # the probe's ping never retries
    with respx.mock(assert_all_called=False) as openmeter:
        meters = openmeter.get(f"{OPENMETER_URL}/api/v1/meters")

        meters.side_effect = httpx.ConnectError("[Errno 111] Connection refused")
        body = readyz(client, 503)
        assert failed(body) == {"usage_source"}
        assert body["checks"]["usage_source"]["detail"] == (
            "Could not reach OpenMeter at http://openmeter.test: [Errno 111] Connection refused"
        )
        assert meters.call_count == 1

        meters.side_effect = None
        meters.return_value = httpx.Response(
            503,
            json={"type": "about:blank", "title": "Service Unavailable", "status": 503, "detail": "try later"},
            headers={"Content-Type": "application/problem+json"},
        )
        body = readyz(client, 503)
        assert failed(body) == {"usage_source"}
        assert body["checks"]["usage_source"]["detail"] == (
            "OpenMeter failed listing meters: 503 Service Unavailable: try later"
        )
        assert meters.call_count == 2

        meters.return_value = httpx.Response(200, content=SPEC_METERS.encode(), headers={"Content-Type": "application/json"})
        body = readyz(client, 200)
        assert body["checks"]["usage_source"] == {
            "ok": True,
            "detail": "openmeter at http://openmeter.test: reachable, 1 meter(s)",
        }
        assert meters.call_count == 3
        sent = meters.calls.last.request
        assert sent.headers["Authorization"] == f"Bearer {OPENMETER_TOKEN}"
        assert sent.url.path == "/api/v1/meters"


@pytest.mark.django_db
def test_readyz_fails_when_openmeter_answers_something_else_than_a_meter_list(client, ready, settings):
    settings.USAGE_SOURCE = "openmeter"
    settings.OPENMETER_URL = OPENMETER_URL
    with respx.mock(assert_all_called=False) as openmeter:
        openmeter.get(f"{OPENMETER_URL}/api/v1/meters").mock(
            return_value=httpx.Response(200, text="<html>proxy login</html>")
        )
        body = readyz(client, 503)
    assert failed(body) == {"usage_source"}
    assert "not a JSON array of meters" in body["checks"]["usage_source"]["detail"]


@pytest.mark.django_db
def test_readyz_fails_when_openmeter_is_not_configured(client, ready, settings):
    settings.USAGE_SOURCE = "openmeter"
    settings.OPENMETER_URL = ""
    body = readyz(client, 503)
    assert failed(body) == {"usage_source"}
    assert body["checks"]["usage_source"]["detail"].startswith("OPENMETER_URL is not set")


# --- probes by IP over plain HTTP -------------------------------------------------------


@pytest.mark.django_db
def test_probes_answer_any_host_over_plain_http_when_the_site_redirects_to_https(client, ready, settings):
    settings.ALLOWED_HOSTS = ["billing.example.com"]
    settings.SECURE_SSL_REDIRECT = True
    for path in ("/healthz", "/readyz"):
        response = client.get(path, HTTP_HOST="10.0.3.7:8000")
        assert response.status_code in (200, 503), (path, response.status_code)
        assert response.status_code == 200
    # The rest of the site is still guarded: an unknown host is refused, plain HTTP redirected.
    assert client.get("/admin/", HTTP_HOST="10.0.3.7:8000").status_code == 400
    assert client.get("/admin/", HTTP_HOST="billing.example.com").status_code == 301


@pytest.mark.django_db
def test_database_reads_give_up_after_the_query_timeout_on_postgresql(client, ready, monkeypatch, postgres_only):
    from django.db import connection

    def slow_schedule_check():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(5)")
        return "never"

    monkeypatch.setattr(health, "QUERY_TIMEOUT_SECONDS", 0.2)
    monkeypatch.setattr(health, "check_schedule", slow_schedule_check)
    body = readyz(client, 503)
    assert failed(body) == {"schedule"}
    assert "statement timeout" in body["checks"]["schedule"]["detail"]
