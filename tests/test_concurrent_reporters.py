"""
Real `report_usage` processes against the real PostgreSQL and the emulator over HTTP:
concurrent runs and runs killed with SIGKILL at exact points of their send (held there
by the emulator's gate, whatever the machine's speed) still leave Stripe with exactly
the source's usage for every customer and period.
"""

import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import connection

from billing.models import UsageReport
from billing.usage_sources import UsageRequest
from embedded_meter import services as meter_services
from billing.usage_sources.embedded import EmbeddedUsageSource
from tests.billing_fixtures import subscribed_customers
from tests.factories import execution

ROOT = Path(__file__).resolve().parent.parent
CUSTOMERS = 12
HOUR = timedelta(hours=1)

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def fleet(postgres_only, stripe_emulated):
    """Customers subscribed two days ago, each with usage in the embedded meter."""
    emulator = stripe_emulated
    started = datetime.fromtimestamp(int(time.time()), UTC) - timedelta(days=2)
    made = subscribed_customers(emulator, CUSTOMERS, started=started, email="load{n}@example.com")
    customers = [customer.id for customer, _subscription in made]

    rng = random.Random(7)
    events = [
        execution(f"load-{c}-{h}-{k}", c, started + timedelta(hours=h, minutes=rng.randrange(60)), rng.randint(1, 9))
        for c in customers for h in range(40) for k in range(3)
    ]
    meter_services.ingest_events(events)
    return emulator, customers, started


def late_usage(event_id, customer_id, started, rng) -> dict:
    """Usage in a random hour of the period so far, often one already reported."""
    return execution(event_id, customer_id, started + timedelta(hours=rng.randrange(40), minutes=5), rng.randint(1, 5))


def reporter_env(emulator) -> dict:
    db = connection.settings_dict
    return {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "STRIPE_SECRET_KEY": emulator.api_key,
        "STRIPE_API_BASE": emulator.url,
        "USAGE_SOURCE": "embedded",
        # Any pending row counts as orphaned at once: runs also race to resend each
        # other's in-flight events, which only the identifiers keep from counting twice.
        "EPSILON_PENDING_LEASE_SECONDS": "0",
        "EPSILON_STRIPE_BACKOFF_SECONDS": "0.01",
        "EPSILON_STRIPE_METER_EVENTS_PER_SECOND": "2000",
    }


def start_reporter(env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "report_usage", "--verbosity", "0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def add_latency(emulator, seconds):
    def slow(ctx, call_next):
        if ctx.path == "/v1/billing/meter_events":
            time.sleep(seconds)
        return call_next()

    emulator.app.use(slow, name="latency")


def assert_stripe_matches_the_source(emulator, customers, started):
    """For each customer: Stripe's events for the period equal the source up to the last whole hour."""
    until = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    period_start = started.replace(minute=0, second=0, microsecond=0)
    requests = [UsageRequest(c, period_start, until) for c in customers]
    source = EmbeddedUsageSource().totals("m1", "HOUR", requests)
    for request in requests:
        stripe_total = Decimal(emulator.meter_event_totals(customer=request.subject)["total"])
        assert stripe_total == source[request], request.subject
    assert sum(source.values()) > 0
    assert not UsageReport.objects.filter(status="pending").exists()


def test_four_concurrent_reporters_report_each_period_exactly_once(fleet):
    emulator, customers, started = fleet
    add_latency(emulator, 0.02)
    env = reporter_env(emulator)

    for _round in range(2):
        runs = [start_reporter(env) for _ in range(4)]
        outputs = [run.communicate(timeout=120) for run in runs]
        for run, (out, err) in zip(runs, outputs):
            assert run.returncode == 0, err

    assert_stripe_matches_the_source(emulator, customers, started)
    sent = UsageReport.objects.filter(status="sent", trigger="command")
    assert sent.count() == CUSTOMERS  # one meter event per customer, not four


# Where a SIGKILL lands, by the emulator's gate on the meter event endpoint (no sleeps):
# - "before the send landed": ledger rows committed, the meter event held before Stripe
#   ran it, then dropped unrecorded;
# - "sent, answer lost": Stripe recorded the event, the reporter died before hearing so;
# - "some sent, none settled": a reporter alone, its first sends answered, the rest held,
#   killed before the one commit that settles them.
KILL_POINTS = [
    ("before the send landed", {"hold": "before"}, 2),
    ("sent, answer lost", {"hold": "after"}, 2),
    ("some sent, none settled", {"hold": "before", "let_through": 3}, 1),
]
GATE_TIMEOUT = 90  # seconds for a reporter to start and reach its first meter event


def kill_running(runs, limit=None) -> int:
    """SIGKILL up to `limit` reporters that are still running; how many were killed."""
    killed = 0
    for run in runs:
        if run.poll() is None and (limit is None or killed < limit):
            run.send_signal(signal.SIGKILL)
            killed += 1
    return killed


def pending_identifiers() -> set[str]:
    return set(UsageReport.objects.filter(status="pending").values_list("identifier", flat=True))


def test_reporters_killed_at_exact_points_lose_and_double_nothing(fleet):
    emulator, customers, started = fleet
    env = {**reporter_env(emulator), "EPSILON_STRIPE_SEND_CONCURRENCY": "2"}
    rng = random.Random(11)

    landed = defaultdict(int)
    for round_number in range(9):
        name, gate_options, reporters = KILL_POINTS[round_number % len(KILL_POINTS)]
        # New usage for everyone, some of it late for hours already reported.
        meter_services.ingest_events([late_usage(f"round-{round_number}-{c}", c, started, rng) for c in customers])
        gate = emulator.gate(**gate_options)
        runs = [start_reporter(env) for _ in range(reporters)]
        assert gate.wait_held(timeout=GATE_TIMEOUT), f"{name}: no reporter reached a meter event"
        killed = kill_running(runs)
        gate.release(run=False)
        for run in runs:
            run.communicate(timeout=60)

        # The kill landed between the ledger's commit and its settlement: every held
        # event's row is still in flight, and what Stripe answered was never settled.
        assert killed >= 1, name
        pending = pending_identifiers()
        assert set(gate.held) <= pending, name
        recorded = {e["identifier"] for e in emulator.meter_events()}
        if gate_options["hold"] == "after":
            assert set(gate.held) <= recorded, name
        if gate_options.get("let_through"):
            assert reporters == 1 and set(gate.passed) <= pending & recorded, name
        landed[name] += 1

    final = start_reporter(env)
    out, err = final.communicate(timeout=120)
    assert final.returncode == 0, err
    assert landed == {name: 3 for name, _, _ in KILL_POINTS}
    assert_stripe_matches_the_source(emulator, customers, started)


def test_faults_kills_and_concurrent_reporters_together_still_add_up_exactly(fleet):
    """The issue's bar: 20% 429s, 5% 500s, 2% lost answers, SIGKILLs and four reporters at once."""
    emulator, customers, started = fleet
    # Seed 13: the very first meter event call's answer is lost (its first draw falls in
    # the 2% band), so every kind of fault happens however the runs interleave.
    emulator.set_faults(rate_429=0.20, rate_500=0.05, rate_lost=0.02, latency_ms=20, seed=13)
    env = {**reporter_env(emulator), "EPSILON_STRIPE_SEND_CONCURRENCY": "2"}
    rng = random.Random(3)

    kills = 0
    for round_number in range(4):
        meter_services.ingest_events([late_usage(f"chaos-{round_number}-{c}", c, started, rng) for c in customers])
        # A few events through, then the next one Stripe records is held unanswered
        # while two of the four reporters die; the others then go on.
        gate = emulator.gate(let_through=4, hold="after")
        runs = [start_reporter(env) for _ in range(4)]
        assert gate.wait_held(timeout=GATE_TIMEOUT), "no reporter reached a meter event"
        kills += kill_running(runs, limit=2)
        gate.release()
        for run in runs:
            run.communicate(timeout=120)

    # Faults go on; reporters keep running until nothing is left in flight.
    for _ in range(5):
        final = start_reporter(env)
        final.communicate(timeout=120)
        if not UsageReport.objects.filter(status="pending").exists():
            break
    injected = emulator.stats()["faults_injected"]
    assert kills >= 4, "a round's kills missed its reporters"
    assert set(injected) >= {"429", "500", "lost"}, f"not every fault was injected: {injected}"
    assert_stripe_matches_the_source(emulator, customers, started)


def test_a_closing_run_killed_mid_send_leaves_each_period_exactly_its_usage(postgres_only, stripe_emulated):
    """
    Subscriptions whose period ended a day ago: the closing run reports the old period
    up to its end and the new one from there. Killed after Stripe recorded a few of its
    events, the next run finishes both periods, each with exactly its own usage.
    """
    emulator = stripe_emulated
    started = datetime.fromtimestamp(int(time.time()), UTC).replace(minute=45, second=0, microsecond=0) - timedelta(days=31)
    # The mirror still shows each subscription's first period.
    made = subscribed_customers(emulator, 6, started=started, email="close{n}@example.com")
    customers = [customer.id for customer, _subscription in made]
    ends = {customer.id: datetime.fromtimestamp(subscription["items"]["data"][0]["current_period_end"], UTC)
            for customer, subscription in made}
    rng = random.Random(5)
    end = next(iter(ends.values()))
    meter_services.ingest_events([
        execution(f"close-{c}-{k}", c, moment, rng.randint(1, 9))
        for c in customers for k, moment in enumerate(
            [started + timedelta(days=3), end - timedelta(minutes=30), end - timedelta(minutes=10), end + timedelta(hours=2)]
        )
    ])

    gate = emulator.gate(let_through=3, hold="after")
    run = start_reporter(reporter_env(emulator))
    assert gate.wait_held(timeout=GATE_TIMEOUT), "the closing run reached no meter event"
    assert kill_running([run]) == 1
    gate.release()
    run.communicate(timeout=60)
    assert set(gate.held) <= pending_identifiers()  # killed between Stripe's answer and the settle

    final = start_reporter(reporter_env(emulator))
    out, err = final.communicate(timeout=120)
    assert final.returncode == 0, err
    source = EmbeddedUsageSource()
    aligned_end = end.replace(minute=0)
    until = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    old = source.totals("m1", "MINUTE", [UsageRequest(c, started, aligned_end) for c in customers])
    new = source.totals("m1", "HOUR", [UsageRequest(c, aligned_end, until) for c in customers])
    for c in customers:
        # Stripe's clock is real time: the old period's invoice finalized a day ago. The
        # closing run reads Stripe's invoices before sending into an ended period, so it
        # sends nothing into that invoice and carries the old period's usage to the new
        # one: the invoices bill the sum once.
        in_old = Decimal(emulator.meter_event_totals(customer=c, end=int(ends[c].timestamp()))["total"])
        in_new = Decimal(emulator.meter_event_totals(customer=c, start=int(ends[c].timestamp()))["total"])
        [invoice] = [i for i in emulator.invoices(customer=c) if i["period_end"] == int(ends[c].timestamp())]
        billed_old = Decimal(sum(line["quantity"] for line in invoice["lines"]["data"]))
        used_old, used_new = old[UsageRequest(c, started, aligned_end)], new[UsageRequest(c, aligned_end, until)]
        assert (in_old, billed_old) == (0, 0), c
        assert billed_old + in_new == used_old + used_new, (c, billed_old, in_new)
        carried = UsageReport.objects.get(customer_id=c, billing_end=ends[c], status="carried")
        assert carried.usage_total == used_old, c
    assert sum(old.values()) > 0 and sum(new.values()) > 0
    assert not UsageReport.objects.filter(status="pending").exists()
