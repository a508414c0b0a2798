"""
The application's errors: every refusal a service makes to an operator is a
BillingError whose message says what happened and what to do, so entry points (admin,
commands, tasks) show it as it is instead of a traceback (after Zulip's BillingError).
`operator_message` turns any error a service may raise (these, Stripe's, a bad
setting) into that sentence, for every entry point alike.
"""

import stripe
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class BillingError(Exception):
    """A request the billing services refuse, with a message meant for an operator."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ReportNotResolvable(BillingError):
    """A report in doubt cannot be settled the way asked (see stale_reports)."""


# What the entry points (commands, admin actions) catch and show as one sentence.
OPERATOR_ERRORS = (BillingError, ImproperlyConfigured, stripe.StripeError)


def operator_message(exc: BaseException) -> str:
    """The sentence an operator reads for an error of a billing service (commands and admin)."""
    from . import stripe_api  # stripe_api's client setup imports the services' metrics: import late

    if isinstance(exc, BillingError):
        return exc.message
    if isinstance(exc, stripe.AuthenticationError):
        return (f"Stripe rejected the API key {stripe_api.redact_key(settings.STRIPE_SECRET_KEY)}: "
                f"{exc.user_message or exc}. Check STRIPE_SECRET_KEY.")
    if isinstance(exc, stripe.PermissionError):
        return f"The Stripe API key lacks a permission: {exc.user_message or exc}"
    if isinstance(exc, stripe.APIConnectionError):
        where = f"the Stripe API at {settings.STRIPE_API_BASE}"
        if stripe_api.uses_emulator():
            where += (" (the local Stripe emulator: start it with `make emulator`, or set STRIPE_SECRET_KEY "
                      "to use real Stripe)")
        return f"Could not reach {where}: {exc.user_message or exc}"
    if isinstance(exc, stripe.StripeError):
        return f"Stripe answered with an error (HTTP {exc.http_status}): {exc.user_message or exc}"
    return str(exc)
