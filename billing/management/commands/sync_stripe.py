from django.core.management.base import BaseCommand

from ...services import stripe_sync
from ..stripe_errors import stripe_errors_as_command_errors


class Command(BaseCommand):
    help = (
        "Pull billing meters, products, prices, customers and subscriptions from Stripe "
        "into the database (the admin shows what is mirrored)."
    )

    def handle(self, *args, verbosity, **options):
        def show(kind, stripe_id):
            if verbosity >= 2:
                self.stdout.write(f"synced {kind} {stripe_id}")

        with stripe_errors_as_command_errors():
            result = stripe_sync.sync_all(on_synced=show)
        summary = ", ".join(f"{n} {kind}(s)" for kind, n in result.counts.items()) or "nothing"
        self.stdout.write(self.style.SUCCESS(f"Synced from Stripe: {summary}."))
