from django.core.management.base import BaseCommand, CommandError

from ...services import schedules, stripe_setup, webhook_endpoints
from ..stripe_errors import stripe_errors_as_command_errors


class Command(BaseCommand):
    help = (
        "Create, or find on a rerun, the Stripe objects Epsilon needs: the execution "
        "duration meter, the Epsilon product and its monthly metered price "
        "(and with --demo-customer, a customer with an active subscription). "
        "Mirrors them into the database and prints their Stripe dashboard URLs."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--demo-customer",
            action="store_true",
            help="Also create a demo customer subscribed to the metered price.",
        )
        parser.add_argument(
            "--webhook-url",
            metavar="BASE_URL",
            help="This site's public base URL (e.g. https://billing.example.com): creates the "
            "Stripe webhook endpoint that reports usage when billing periods close.",
        )
        parser.add_argument(
            "--no-schedule", action="store_true",
            help="Do not create the periodic reporting schedule (django-q2).",
        )

    def handle(self, *args, demo_customer, webhook_url, no_schedule, **options):
        with stripe_errors_as_command_errors():
            try:
                ensured = stripe_setup.ensure_epsilon_objects(demo_customer=demo_customer)
                if webhook_url:
                    ensured.append(webhook_endpoints.ensure_webhook_endpoint(webhook_url))
                    ensured.append(webhook_endpoints.ensure_event_destination(webhook_url))
            except stripe_setup.SetupError as exc:
                raise CommandError(str(exc)) from exc
        for obj in ensured:
            self.stdout.write(obj.describe())
        if not no_schedule:
            schedule, created = schedules.ensure_report_schedule()
            verb = "created" if created else "already exists"
            self.stdout.write(
                f"Report schedule {verb}: every {schedule.minutes} minutes "
                "(run it with `python manage.py qcluster`)"
            )
