from django.core.management.base import BaseCommand, CommandError

from ...alerts import check_and_notify


class Command(BaseCommand):
    help = (
        "Tell DJANGO_ADMINS (and EPSILON_ALERT_WEBHOOK_URL) about new billing problems: failed "
        "reports, reports in flight past their lease, reconciliation disagreements. Each problem "
        "once; the reporting schedule runs this after every run."
    )

    def handle(self, *args, **options):
        result = check_and_notify()
        told = "told" if result.sent else "nothing to tell" if not result.new else "NOT told (see the log)"
        self.stdout.write(f"{len(result.new)} new problem(s), {result.resolved} resolved: {told}.")
        if result.unnotified and not result.sent:
            raise CommandError(
                f"{result.unnotified} problem(s) not told to anyone: set DJANGO_ADMINS (and mail) or "
                "EPSILON_ALERT_WEBHOOK_URL, or see the log for why the message failed."
            )
