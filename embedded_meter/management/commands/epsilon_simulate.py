from datetime import UTC

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from ... import selectors, services, simulate
from ...models import Event

BATCH = 5000


class Command(BaseCommand):
    help = (
        "Load sample Epsilon executions (CloudEvents of type epsilon.execution with "
        "data.duration_ms and data.billed_seconds) into the embedded meter, for the customers with an active "
        "subscription (or --subject ids, or synthetic ids if there are none), through "
        "the same ingest path as POST /api/v1/events. Deterministic with --seed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--customers", type=int, help="At most this many customers (default: all; 3 synthetic ones if none exist).")
        parser.add_argument("--hours", type=int, default=72, help="Hours of usage before --until (default 72).")
        parser.add_argument("--seed", type=int, help="Same seed, same events (reruns are deduplicated).")
        parser.add_argument("--until", help="End of the simulated usage, ISO 8601 (default: the start of this hour, UTC).")
        parser.add_argument("--subject", action="append", default=[], help="A subject (Stripe customer id); repeatable.")

    def handle(self, *args, customers, hours, seed, until, subject, **options):
        if hours < 1:
            raise CommandError("--hours must be at least 1.")
        if customers is not None and customers < 1:
            raise CommandError("--customers must be at least 1.")
        end = self._until(until)

        if subject:
            subjects = list(dict.fromkeys(subject))
        else:
            subjects = simulate.subscribed_customer_ids()
            if not subjects:
                subjects = simulate.synthetic_customer_ids(customers or 3)
                self.stdout.write("No customers with an active subscription are mirrored; using synthetic ids.")
        subjects = subjects[:customers] if customers else subjects

        sim = simulate.generate(subjects, hours=hours, until=end, seed=seed)
        before = Event.objects.count()
        for i in range(0, len(sim.events), BATCH):
            try:
                services.ingest_events(sim.events[i : i + BATCH])
            except services.IngestError as exc:
                raise CommandError(f"The embedded meter refused the sample events: {exc}") from exc
        stored = Event.objects.count() - before

        start = end - timezone.timedelta(hours=hours)
        self.stdout.write(
            f"{len(sim.events)} executions for {len(subjects)} subject(s) from "
            f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC "
            f"({stored} new, {len(sim.events) - stored} already stored)."
        )
        width = max(len(s) for s in subjects)
        for s in subjects:
            self.stdout.write(
                f"  {s:<{width}}  {sim.executions[s]:>6} executions  {sim.duration_ms[s]:>10,} ms"
                f"  {sim.billed_seconds[s]:>8,} billed seconds"
            )

    def _until(self, value):
        if value is None:
            return selectors.floor_window(timezone.now(), "HOUR")
        moment = parse_datetime(value)
        if moment is None:
            raise CommandError(f"--until: not an ISO 8601 date-time: {value!r}")
        if timezone.is_naive(moment):
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
