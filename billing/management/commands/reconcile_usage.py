from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from ...models import PeriodReconciliation
from ...services import reconciliation
from ..stripe_errors import stripe_errors_as_command_errors


class Command(BaseCommand):
    help = (
        "Compare, per customer, meter and period, the usage source's total, what the ledger "
        "sent and Stripe's meter event summaries; with --correct, send a compensating event "
        "for each drift. One summary request per period: Stripe's read allocation is limited."
    )

    def add_arguments(self, parser):
        parser.add_argument("--customer", action="append", help="Only this customer (repeatable).")
        parser.add_argument("--correct", action="store_true", help="Correct drift with compensating events.")
        parser.add_argument(
            "--settle-minutes", type=int, default=30,
            help="Skip periods reported less than this long ago: Stripe's summaries lag (default 30).",
        )

    def handle(self, *args, customer, correct, settle_minutes, **options):
        with stripe_errors_as_command_errors():
            results = reconciliation.reconcile(
                customer_ids=customer, correct=correct, settle_delay=timedelta(minutes=settle_minutes)
            )
        for result in results:
            self.stdout.write(describe(result))
        drifting = [r for r in results if r.status in (
            PeriodReconciliation.Status.DRIFT, PeriodReconciliation.Status.UNKNOWN, PeriodReconciliation.Status.UNREPORTED,
            PeriodReconciliation.Status.INVOICE,
        )]
        counts = {s.label: sum(r.status == s for r in results) for s in PeriodReconciliation.Status}
        self.stdout.write(f"{len(results)} period(s) checked: " + ", ".join(f"{n} {label.lower()}" for label, n in counts.items() if n))
        if drifting:
            hint = "" if correct else " Run with --correct to send compensating events."
            raise CommandError(f"{len(drifting)} period(s) disagree with Stripe or could not be checked.{hint}")


def describe(result: PeriodReconciliation) -> str:
    source = "unknown" if result.source_total is None else f"{result.source_total:.6f}"
    stripe_units = "unknown" if result.stripe_units is None else f"{result.stripe_units.normalize():f}"
    drift = "unknown" if result.drift is None else f"{result.drift.normalize():+f}"
    line = (
        f"customer: {result.customer_id}, meter: {result.meter.source_meter_slug}, "
        f"period: {result.period_start:%Y-%m-%d %H:%M} to {result.usage_until:%Y-%m-%d %H:%M} UTC, "
        f"source: {source}, ledger: {result.ledger_units.normalize():f}, stripe: {stripe_units}, "
        f"drift: {drift}, status: {result.status}"
    )
    return f"{line}, error: {result.error}" if result.error else line
