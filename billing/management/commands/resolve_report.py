import getpass

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from ...models import ReportDecision, UsageReport
from ...services import stale_reports
from ..stripe_errors import stripe_errors_as_command_errors

WAYS = [stale_reports.AUTO, *(value.replace("_", "-") for value in ReportDecision.Action.values)]


class Command(BaseCommand):
    help = (
        "List or settle usage reports in doubt: pending, with no run sending them, because "
        "a send was interrupted. 'auto' resends within Stripe's 24-hour dedupe window and "
        "decides by Stripe's meter summary after it; 'cancel' cancels the event at Stripe and "
        "reports the customer again; 'mark-sent'/'mark-failed' record what you checked in "
        "Stripe (--reason required). Each decision is kept as an audit row."
    )

    def add_arguments(self, parser):
        parser.add_argument("identifiers", nargs="*", help="Meter event identifiers of the reports to settle.")
        parser.add_argument("--all", action="store_true", help="Settle every report in doubt.")
        parser.add_argument("--action", choices=WAYS, default=stale_reports.AUTO, help="How to settle them (default auto).")
        parser.add_argument("--reason", default="", help="Why: required to mark a report sent or failed.")
        parser.add_argument("--by", default="", help="Who decides (default: command:<your OS user>).")

    def handle(self, *args, identifiers, all, action, reason, by, **options):
        doubtful = stale_reports.in_doubt()
        if not identifiers and not all:
            self._list(doubtful)
            return
        reports = list(doubtful) if all else self._named(identifiers)
        decided_by = by or f"command:{getpass.getuser()}"
        refused = 0
        for report in reports:
            try:
                with stripe_errors_as_command_errors():
                    decision = stale_reports.resolve(
                        report, action=action.replace("-", "_"), decided_by=decided_by, reason=reason,
                        trigger=UsageReport.Trigger.COMMAND,
                    )
            except CommandError as exc:  # a refusal, or Stripe's error, as one sentence
                refused += 1
                self.stderr.write(f"{report.identifier}: not settled: {exc}")
                continue
            self.stdout.write(
                f"{report.identifier}: {decision.action} -> {decision.status_after}: {decision.outcome}"
            )
        if refused:
            raise CommandError(f"{refused} of {len(reports)} report(s) not settled.")

    def _named(self, identifiers):
        found = {r.identifier: r for r in UsageReport.objects.filter(identifier__in=identifiers).select_related("meter")}
        missing = [i for i in identifiers if i not in found]
        if missing:
            raise CommandError(f"no usage report has the identifier {', '.join(missing)}")
        return [found[i] for i in identifiers]

    def _list(self, doubtful):
        now = timezone.now()
        rows = list(doubtful)
        for report in rows:
            window = "within" if stale_reports.within_dedupe_window(report, now) else "past"
            age_hours = (now - report.created).total_seconds() / 3600
            self.stdout.write(
                f"{report.identifier}: customer {report.customer_id}, value {report.value_sent.normalize():f}, "
                f"pending {age_hours:.1f} h ({window} Stripe's dedupe window), attempts {report.attempts}: {report.error}"
            )
        self.stdout.write(f"{len(rows)} report(s) in doubt." + (" Settle them: resolve_report --all (or name them)." if rows else ""))
