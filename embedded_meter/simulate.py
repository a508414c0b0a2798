"""
Sample Epsilon executions for the demo. Deterministic per (seed, subject, hour): the
same hour always yields the same events and ids, so reruns and overlapping ranges
are deduplicated by the meter instead of double counted.
"""

import math
import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

EVENT_TYPE = "epsilon.execution"
SOURCE = "epsilon-simulator"
FUNCTIONS = ["resize-image", "send-email", "render-pdf", "score-model", "sync-crm"]
ACTIVE_STATUSES = ["active", "trialing"]


@dataclass
class Simulation:
    events: list[dict] = field(default_factory=list)
    duration_ms: dict[str, int] = field(default_factory=dict)
    billed_seconds: dict[str, int] = field(default_factory=dict)
    executions: dict[str, int] = field(default_factory=dict)


def subscribed_customer_ids() -> list[str]:
    """Stripe ids of mirrored customers with an active (or trialing) subscription."""
    from djstripe.models import Subscription

    ids = (
        Subscription.objects.filter(stripe_data__status__in=ACTIVE_STATUSES)
        .values_list("customer_id", flat=True)
        .distinct()
    )
    return sorted(i for i in ids if i)


def synthetic_customer_ids(count: int) -> list[str]:
    return [f"cus_Simulated{n:06d}" for n in range(1, count + 1)]


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def generate(subjects: Sequence[str], *, hours: int, until: datetime, seed: int | None) -> Simulation:
    """Executions over the `hours` whole hours before `until` (aligned to the hour)."""
    run = str(seed) if seed is not None else secrets.token_hex(6)
    sim = Simulation()
    first_hour = until - timedelta(hours=hours)
    for subject in subjects:
        # A busy or quiet customer, the same one on every run with this seed.
        busyness = random.Random(f"{run}:{subject}").uniform(0.3, 1.0)
        sim.duration_ms[subject] = sim.billed_seconds[subject] = sim.executions[subject] = 0
        for h in range(hours):
            hour = first_hour + timedelta(hours=h)
            rng = random.Random(f"{run}:{subject}:{hour.isoformat()}")
            for n in range(rng.randint(0, round(12 * busyness))):
                duration = max(1, round(rng.lognormvariate(5.0, 1.0)))  # ~150 ms median, long tail
                # Epsilon bills whole seconds, each execution rounded up (the meter sums these).
                billed = math.ceil(duration / 1000)
                sim.events.append(
                    {
                        "specversion": "1.0",
                        "id": f"sim-{run}-{subject}-{hour:%Y%m%dT%H}-{n}",
                        "source": SOURCE,
                        "type": EVENT_TYPE,
                        "subject": subject,
                        "time": _rfc3339(hour + timedelta(milliseconds=rng.randrange(3_600_000))),
                        "datacontenttype": "application/json",
                        "data": {
                            "duration_ms": duration,
                            "billed_seconds": billed,
                            "function": rng.choice(FUNCTIONS),
                        },
                    }
                )
                sim.duration_ms[subject] += duration
                sim.billed_seconds[subject] += billed
                sim.executions[subject] += 1
    return sim
