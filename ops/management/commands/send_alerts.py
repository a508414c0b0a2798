from django.core.management.base import BaseCommand

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
