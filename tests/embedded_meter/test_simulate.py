from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from djstripe.models import Customer, Subscription

from billing.usage_sources import UsageRequest
from embedded_meter import simulate
from embedded_meter.models import Event
from billing.usage_sources.embedded import EmbeddedUsageSource

pytestmark = pytest.mark.django_db

UNTIL = datetime(2026, 11, 25, tzinfo=UTC)


def run(*args) -> str:
    out = StringIO()
    call_command("epsilon_simulate", *args, stdout=out)
    return out.getvalue()


def test_same_seed_same_events_and_a_rerun_is_deduplicated():
    args = ["--customers", "3", "--hours", "24", "--seed", "7", "--until", "2026-11-25T00:00:00Z"]
    first = run(*args)
    stored = list(Event.objects.order_by("source", "event_id").values_list("event_id", "subject", "time", "data"))
    second = run(*args)
    assert "already stored" in second
    assert first.replace(f"({len(stored)} new, 0 already", "") == second.replace(f"(0 new, {len(stored)} already", "")
    assert list(Event.objects.order_by("source", "event_id").values_list("event_id", "subject", "time", "data")) == stored
    assert len(stored) > 0


def test_generation_is_deterministic_per_seed_and_hour():
    subjects = ["cus_A", "cus_B"]
    a = simulate.generate(subjects, hours=48, until=UNTIL, seed=1)
    assert a.events == simulate.generate(subjects, hours=48, until=UNTIL, seed=1).events
    assert a.events != simulate.generate(subjects, hours=48, until=UNTIL, seed=2).events
    # An overlapping range yields the same events for the shared hours, so they dedupe.
    later = simulate.generate(subjects, hours=48, until=UNTIL + timedelta(hours=24), seed=1)
    shared = {e["id"]: e for e in later.events}
    overlap = [e for e in a.events if e["time"] >= "2026-11-24"]
    assert overlap and all(shared[e["id"]] == e for e in overlap)
    assert all(UNTIL - timedelta(hours=48) <= datetime.fromisoformat(e["time"]) < UNTIL for e in a.events)


def test_summary_matches_what_the_meter_reports():
    out = run("--subject", "cus_X", "--subject", "cus_Y", "--hours", "5", "--seed", "3", "--until", "2026-11-25T00:00:00Z")
    sim = simulate.generate(["cus_X", "cus_Y"], hours=5, until=UNTIL, seed=3)
    requests = [UsageRequest(s, UNTIL - timedelta(hours=5), UNTIL) for s in ("cus_X", "cus_Y")]
    totals = EmbeddedUsageSource().totals("m1", "HOUR", requests)
    for request in requests:
        assert totals[request] == sim.billed_seconds[request.subject]
        assert f"{sim.billed_seconds[request.subject]:,} billed seconds" in out
        assert f"{sim.duration_ms[request.subject]:,} ms" in out
    assert f"{len(sim.events)} executions for 2 subject(s)" in out


def test_defaults_to_customers_with_an_active_subscription():
    for n, status in [(1, "active"), (2, "canceled"), (3, "trialing")]:
        customer = Customer.objects.create(id=f"cus_Real{n}", livemode=False, stripe_data={"id": f"cus_Real{n}"})
        Subscription.objects.create(id=f"sub_{n}", customer=customer, livemode=False, stripe_data={"status": status})
    run("--hours", "48", "--seed", "1")
    assert set(Event.objects.values_list("subject", flat=True)) == {"cus_Real1", "cus_Real3"}


def test_synthetic_customers_when_none_are_mirrored():
    out = run("--customers", "2", "--hours", "48", "--seed", "1")
    assert "synthetic" in out
    assert set(Event.objects.values_list("subject", flat=True)) == {"cus_Simulated000001", "cus_Simulated000002"}
