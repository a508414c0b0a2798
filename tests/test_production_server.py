"""
The app under its production server, as the deploy guide runs it: the Procfile's (and
the systemd units') own command lines, started for real with production settings from
the environment (DEBUG off, HTTPS behind a proxy, a real secret key, WhiteNoise), on a
database of their own. Judged over HTTP: the admin login, static files, a signed
Stripe event, an ingest call, probes by IP over plain HTTP, and `check --deploy`.
"""

import json
import os
import re
import shlex
import signal
import socket
import sqlite3
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import stripe

# Its database is its own (SQLite, migrated by the Procfile's release step, which takes
# most of this module's time): run once, in the SQLite pass of `make test`.
pytestmark = pytest.mark.skipif(
    os.environ.get("DATABASE_URL", "").startswith("postgres"),
    reason="the production server test runs once, in the SQLite pass (its database is its own)",
)
ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
HOST = "billing.example.com"
INGEST_TOKEN = "production-test-ingest-token"
DESTINATION_SECRET = "whsec_production_test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {name.strip(): command.strip() for name, _, command in (line.partition(":") for line in lines if line.strip())}


def unit_commands(unit: str) -> list[str]:
    """A systemd unit's ExecStartPre and ExecStart lines, run from this checkout instead of /srv/epsilon."""
    text = (ROOT / "deploy" / "systemd" / unit).read_text().replace("/srv/epsilon", str(ROOT))
    return re.findall(r"^ExecStart(?:Pre)?=(.+)$", text, flags=re.M)


@pytest.fixture(scope="module")
def production_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("production")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "DJANGO_", "STRIPE_"))},
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        "DATABASE_URL": f"sqlite:///{tmp / 'production.sqlite3'}",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": "production-test-" + "x" * 50,
        "DJANGO_ALLOWED_HOSTS": HOST,
        "DJANGO_CSRF_TRUSTED_ORIGINS": f"https://{HOST}",
        "DJANGO_STATIC_ROOT": str(tmp / "static"),
        "STRIPE_SECRET_KEY": "sk_test_production_test_key",
        "STRIPE_EVENT_DESTINATION_SECRET": DESTINATION_SECRET,
        "EMBEDDED_METER_INGEST_TOKEN": INGEST_TOKEN,
        "Q_CLUSTER_NAME": f"production-test-{os.getpid()}",
        "HOST": "127.0.0.1",
        "WEB_CONCURRENCY": "2",
    }
    release = subprocess.run(["bash", "-c", procfile()["release"]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert release.returncode == 0, release.stderr
    return env, tmp / "production.sqlite3"


def start(command: str, env: dict, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        ["bash", "-c", f"exec {command}"], cwd=ROOT, env={**env, "PORT": str(port)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )


def wait_until_serving(process, base: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("the production server did not answer /healthz within 60 s")


def stop(process, *, group=True) -> str:
    """SIGTERM to the process group (gunicorn), or to the main process only (systemd's KillMode=mixed)."""
    if group:
        os.killpg(process.pid, signal.SIGTERM)
    else:
        process.send_signal(signal.SIGTERM)
    try:
        out, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, _ = process.communicate()
    return out


@pytest.fixture(scope="module")
def web(production_env):
    """The Procfile's web process: gunicorn with deploy/gunicorn.conf.py."""
    env, _db = production_env
    port = free_port()
    process = start(procfile()["web"], env, port)
    base = f"http://127.0.0.1:{port}"
    wait_until_serving(process, base)
    yield base
    stop(process)


def through_proxy(**headers) -> dict:
    """What the TLS-terminating proxy forwards."""
    return {"Host": HOST, "X-Forwarded-Proto": "https", **headers}


def test_production_settings_pass_check_deploy(production_env):
    env, _db = production_env
    check = subprocess.run(
        [str(VENV_BIN / "python"), "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "System check identified no issues" in check.stdout


@pytest.mark.parametrize(("change", "says"), [
    ({"DJANGO_SECRET_KEY": None}, "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off"),
    ({"STRIPE_SECRET_KEY": None}, "STRIPE_SECRET_KEY must be set when DJANGO_DEBUG is off"),
    ({"EMBEDDED_METER_INGEST_TOKEN": "epsilon-demo-ingest-token"}, "the public demo token"),
], ids=["no-secret-key", "no-stripe-key", "demo-ingest-token"])
def test_debug_off_refuses_to_start_with_a_demo_value(production_env, change, says):
    env, _db = production_env
    env = {k: v for k, v in {**env, **change}.items() if v is not None}
    check = subprocess.run([str(VENV_BIN / "python"), "manage.py", "check"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode != 0 and says in check.stderr


def test_the_admin_login_and_its_static_files_are_served_over_https_only(web):
    login = httpx.get(f"{web}/admin/login/", headers=through_proxy())
    assert login.status_code == 200 and "Log in" in login.text
    assert "Secure" in login.headers["set-cookie"]  # the CSRF cookie never travels over plain HTTP
    assert login.headers["strict-transport-security"].startswith("max-age=31536000")
    css = re.search(r'href="(/static/admin/css/base[^"]*\.css)"', login.text).group(1)
    static = httpx.get(f"{web}{css}", headers=through_proxy())
    assert static.status_code == 200 and "text/css" in static.headers["content-type"]  # WhiteNoise

    relayed = httpx.get(f"{web}/metrics", headers={"Host": HOST, "X-Forwarded-For": "203.0.113.9"})
    assert relayed.status_code == 403  # through the proxy, loopback is not the scraper's address

    plain = httpx.get(f"{web}/admin/login/", headers={"Host": HOST})
    assert plain.status_code == 301 and plain.headers["location"] == f"https://{HOST}/admin/login/"
    assert httpx.get(f"{web}/admin/login/", headers=through_proxy(Host="evil.example.com")).status_code == 400


def test_a_signed_stripe_event_and_an_ingest_call_are_taken(web, production_env):
    _env, db = production_env
    body = json.dumps({"id": "evt_prod_1", "object": "v2.core.event", "type": "v1.billing.meter.error_report_triggered",
                       "related_object": {"id": "mtr_1", "type": "billing.meter"}})
    stamp = int(time.time())
    signature = stripe.WebhookSignature._compute_signature(f"{stamp}.{body}", DESTINATION_SECRET)
    signed = httpx.post(f"{web}/stripe/events/", content=body, headers=through_proxy(**{
        "Content-Type": "application/json", "Stripe-Signature": f"t={stamp},v1={signature}",
    }))
    assert signed.status_code == 200, signed.text
    forged = httpx.post(f"{web}/stripe/events/", content=body, headers=through_proxy(**{
        "Content-Type": "application/json", "Stripe-Signature": f"t={stamp},v1={'0' * 64}",
    }))
    assert forged.status_code == 400

    event = {"specversion": "1.0", "id": "prod-exec-1", "source": "production-test", "type": "epsilon.execution",
             "subject": "cus_production", "time": datetime.now(UTC).isoformat(), "data": {"billed_seconds": 3}}
    ingest = httpx.post(f"{web}/api/v1/events", json=event,
                        headers=through_proxy(Authorization=f"Bearer {INGEST_TOKEN}"))
    assert ingest.status_code == 204, ingest.text
    with sqlite3.connect(db) as connection:
        queued = connection.execute("SELECT count(*) FROM django_q_ormq").fetchone()[0]
        stored = connection.execute("SELECT count(*) FROM embedded_meter_event WHERE event_id = 'prod-exec-1'").fetchone()[0]
    assert (queued, stored) == (1, 1)  # the error report waits for a worker; the execution is metered


def test_a_client_not_behind_the_trusted_proxy_cannot_claim_https(production_env):
    env, _db = production_env
    port = free_port()
    process = start(procfile()["web"], {**env, "FORWARDED_ALLOW_IPS": "10.9.9.9"}, port)
    try:
        wait_until_serving(process, f"http://127.0.0.1:{port}")
        claimed = httpx.get(f"http://127.0.0.1:{port}/admin/login/", headers=through_proxy())
        assert claimed.status_code == 301 and claimed.headers["location"].startswith("https://")
    finally:
        stop(process)


def test_probes_answer_by_ip_over_plain_http(web):
    live = httpx.get(f"{web}/healthz", headers={"Host": "10.1.2.3:8000"})
    assert live.status_code == 200 and live.json()["status"] == "ok"
    ready = httpx.get(f"{web}/readyz", headers={"Host": "10.1.2.3:8000"})
    checks = ready.json()["checks"]
    assert checks["database"]["ok"] and checks["migrations"]["ok"]  # the release step migrated
    assert ready.status_code == 503 and not checks["schedule"]["ok"]  # epsilon_setup never ran here


def test_prometheus_scrapes_from_the_local_network(web):
    from prometheus_client.parser import text_string_to_metric_families

    scrape = httpx.get(f"{web}/metrics", headers={"Host": "10.1.2.3:8000"})
    assert scrape.status_code == 200
    names = {family.name for family in text_string_to_metric_families(scrape.text)}
    assert {"epsilon_usage_reports", "epsilon_reports_stale", "epsilon_stripe_request_seconds"} <= names


def test_the_systemd_web_unit_starts_the_same_server(production_env):
    env, _db = production_env
    *before, command = unit_commands("epsilon-web.service")
    for pre in before:
        assert subprocess.run(shlex.split(pre), cwd=ROOT, env=env, capture_output=True, timeout=180).returncode == 0, pre
    port = free_port()
    process = start(command, env, port)
    try:
        wait_until_serving(process, f"http://127.0.0.1:{port}")
    finally:
        stop(process)


@pytest.mark.parametrize("command", [procfile()["worker"], unit_commands("epsilon-worker.service")[-1]], ids=["procfile", "systemd"])
def test_the_worker_process_starts_a_cluster_and_stops_cleanly(production_env, command):
    env, _db = production_env
    process = start(command, env, free_port())
    lines, deadline = [], time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if "running." in line or process.poll() is not None:
                break
        assert any("Q Cluster" in line and "running." in line for line in lines), "".join(lines)
    finally:
        out = stop(process, group=False)  # as systemd's KillMode=mixed and a Procfile runner do
    assert "has stopped" in out, out
