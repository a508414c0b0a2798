from datetime import UTC

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from ...models import UsageReport
from ...services import shards as shard_runs, usage_reporting
from ..stripe_errors import stripe_errors_as_command_errors


def as_of_time(value: str):
    moment = parse_datetime(value)
    if moment is None:
        raise CommandError(f"--until {value!r} is not a date and time, e.g. 2026-11-07T13:00:00Z")
    # A time without an offset is taken as UTC, the zone billing runs in.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Command(BaseCommand):
    help = (
        "Report usage of every active metered subscription item to Stripe, for its "
        "window-aligned billing period up to now; exactly once, whatever runs before or alongside."
    )

    def add_arguments(self, parser):
        parser.add_argument("--customer", help="Only this Stripe customer (cus_...).")
        parser.add_argument("--subscription", help="Only this Stripe subscription (sub_...).")
        parser.add_argument(
            "--dry-run", action="store_true",
            help="Compute and print what would be reported; write and send nothing.",
        )
        parser.add_argument(
            "--shards", type=int, default=0,
            help="Fan the run out over this many django-q2 tasks by customer shard (needs running "
            "`manage.py qcluster` workers), wait for them and print the assembled summary.",
        )
        parser.add_argument(
            "--wait", type=int, default=600, help="Seconds to wait for the shards of --shards (default 600).",
        )
        parser.add_argument(
            "--until", type=str,
            help="Report as of this time instead of now (ISO 8601, UTC if no offset), for back-fills.",
        )

    def handle(self, *args, customer, subscription, dry_run, until, verbosity, shards, wait, **options):
        if shards:
            if customer or subscription or dry_run or until:
                raise CommandError("--shards reports every customer as of now: it takes no --customer, "
                                   "--subscription, --dry-run or --until")
            return self.fan_out(shards, wait)

        def print_line(outcome):  # as the run goes: a large run keeps no list of its reports
            if verbosity >= 1 or outcome.status != UsageReport.Status.SKIPPED:
                self.stdout.write(outcome.line())

        with stripe_errors_as_command_errors():
            result = usage_reporting.report_usage(
                trigger=UsageReport.Trigger.COMMAND,
                as_of=as_of_time(until) if until else None,
                customer_ids=[customer] if customer else None,
                subscription_ids=[subscription] if subscription else None,
                dry_run=dry_run,
                keep_outcomes=False,
                on_outcome=print_line,
            )
        prefix = "Dry run, nothing written or sent: " if dry_run else ""
        self.stdout.write(prefix + result.summary())
        if result.failed:
            raise CommandError(
                f"{len(result.failed)} report(s) did not reach Stripe; see the lines above "
                "and the Usage reports audit in the admin."
            )

    def fan_out(self, shards: int, wait: int) -> None:
        run = shard_runs.fan_out_and_wait(trigger=UsageReport.Trigger.COMMAND, shards=shards, wait=wait)
        self.stdout.write(run.summary())
        for line in run.failed_lines + run.crashed:
            self.stdout.write(line)
        if not run.finished:
            raise CommandError(
                f"only {len(run.done)} of {shards} shard(s) finished within {wait} s: is a `manage.py qcluster` "
                f"running? The rest report when a worker takes them (django-q2 group {run.group})."
            )
        if run.failed_count or run.crashed:
            raise CommandError(f"{run.failed_count} report(s) did not reach Stripe; see the Usage reports audit.")

