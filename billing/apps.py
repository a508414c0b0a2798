from django.apps import AppConfig
from django.core.signals import setting_changed


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Epsilon billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from epsilon import lookups  # noqa: F401 - registers __any_of
        from . import checks, stripe_api, webhooks  # noqa: F401 - registers the checks and webhook handlers

        stripe_api.configure_stripe_module()
        setting_changed.connect(_reconfigure_stripe, dispatch_uid="billing.reconfigure_stripe")


def _reconfigure_stripe(setting, **kwargs):
    # Tests override the Stripe settings (e.g. to point at an emulator on a random port).
    if setting.startswith("STRIPE_"):
        from . import stripe_api, webhooks  # noqa: F401 - registers the webhook handlers

        stripe_api.configure_stripe_module()
