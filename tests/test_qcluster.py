"""
The schedule really runs: a `manage.py qcluster` process picks up the reporting
schedule and reports usage, with the database broker and with Redis.
"""

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.scheduler import scheduler

from billing.models import UsageReport
from billing.services import shards
from billing.services.schedules import ensure_report_schedule
from embedded_meter import services as meter_services
from tests.factories import execution
from tests.test_concurrent_reporters import assert_stripe_matches_the_source, fleet, reporter_env  # noqa: F401 (fleet: a fixture)

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("broker", ["orm", "redis"])
def test_qcluster_runs_the_reporting_schedule(postgres_only, billing, broker, monkeypatch):
    meter_services.ingest_events([execution("scheduled-1", billing.customer_id, billing.hour0 + timedelta(hours=1), 9)])
    schedule, _ = ensure_report_schedule()
    schedule.next_run = timezone.now() - timedelta(seconds=1)
    schedule.save()

    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "STRIPE_SECRET_KEY": billing.emulator.api_key,
        "STRIPE_API_BASE": billing.emulator.url,
        "USAGE_SOURCE": "embedded",
        "Q_WORKERS": "1",
        "Q_REDIS_URL": "redis://127.0.0.1:6379/15" if broker == "redis" else "",
        # Its own queue: another test run beside this one shares the Redis server.
        "Q_CLUSTER_NAME": f"epsilon-test-{os.getpid()}",
    }
    # django-q2's own scheduler loop queues due schedules every 30 s; do its step now,
    # from here, so the worker gets the task through the broker at once.
    for name in ("PREFIX", "CLUSTER_NAME"):
        monkeypatch.setattr(Conf, name, env["Q_CLUSTER_NAME"])
    if broker == "redis":
        monkeypatch.setattr(Conf, "REDIS", env["Q_REDIS_URL"])
        monkeypatch.setattr(Conf, "ORM", None)
    queue = get_broker()
    queue.purge_queue()  # Redis outlives test databases: drop tasks an earlier run left
    scheduler(broker=queue)
    cluster = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not UsageReport.objects.filter(trigger="schedule", status="sent").exists():
        if cluster.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    output = stop(cluster)
    assert UsageReport.objects.filter(trigger="schedule", status="sent").exists(), output

    assert billing.stripe_total() == Decimal(9)


def stop(cluster: subprocess.Popen) -> str:
    os.killpg(cluster.pid, signal.SIGKILL)  # its graceful stop takes 20 s; nothing is left to finish
    out, _ = cluster.communicate()
    return out


def test_a_run_fanned_out_over_two_qcluster_workers_reports_each_customer_once(fleet, monkeypatch):
    """Two `qcluster` processes share one run by customer shard; the summary is assembled from both."""
    emulator, customers, started = fleet
    env = {
        **reporter_env(emulator),
        "EPSILON_PENDING_LEASE_SECONDS": "300",  # nobody's rows are orphans here
        "Q_WORKERS": "1",
        "Q_REDIS_URL": "",
        "Q_CLUSTER_NAME": f"epsilon-shards-{os.getpid()}",
    }
    for name in ("PREFIX", "CLUSTER_NAME"):
        monkeypatch.setattr(Conf, name, env["Q_CLUSTER_NAME"])
    clusters = [
        subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
        for _ in range(2)
    ]
    try:
        run = shards.fan_out_and_wait(trigger=UsageReport.Trigger.COMMAND, shards=2, wait=120)
    finally:
        outputs = [stop(cluster) for cluster in clusters]
    assert run.finished and not run.crashed, outputs
    assert run.done == {0, 1} and run.failed_count == 0
    assert run.run.count(UsageReport.Status.SENT) == len(customers)
    assert_stripe_matches_the_source(emulator, customers, started)
    # Each customer's period was claimed once: one sent row each, by one shard.
    assert UsageReport.objects.filter(status="sent").count() == len(customers)
