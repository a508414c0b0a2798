from django.core.management.base import BaseCommand, CommandError

from ...services import stripe_setup
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

    def handle(self, *args, demo_customer, **options):
        with stripe_errors_as_command_errors():
            try:
                ensured = stripe_setup.ensure_epsilon_objects(demo_customer=demo_customer)
            except stripe_setup.SetupError as exc:
                raise CommandError(str(exc)) from exc
        for obj in ensured:
            self.stdout.write(obj.describe())
