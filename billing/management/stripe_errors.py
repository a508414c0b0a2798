"""Turn Stripe and configuration errors into one clear CommandError line."""

import contextlib

import stripe
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError

from .. import stripe_api


def _where() -> str:
    if stripe_api.uses_emulator():
        return (
            f"the Stripe API at {settings.STRIPE_API_BASE} (the local Stripe emulator: "
            "start it with `make emulator`, or set STRIPE_SECRET_KEY to use real Stripe)"
        )
    return f"the Stripe API at {settings.STRIPE_API_BASE}"


@contextlib.contextmanager
def stripe_errors_as_command_errors():
    try:
        yield
    except ImproperlyConfigured as exc:
        raise CommandError(str(exc)) from exc
    except stripe.AuthenticationError as exc:
        raise CommandError(
            f"Stripe rejected the API key {stripe_api.redact_key(settings.STRIPE_SECRET_KEY)}: "
            f"{exc.user_message or exc}. Check STRIPE_SECRET_KEY."
        ) from exc
    except stripe.PermissionError as exc:
        raise CommandError(
            f"The Stripe API key lacks a permission: {exc.user_message or exc}"
        ) from exc
    except stripe.APIConnectionError as exc:
        raise CommandError(f"Could not reach {_where()}: {exc.user_message or exc}") from exc
    except stripe.StripeError as exc:
        raise CommandError(
            f"Stripe answered with an error (HTTP {exc.http_status}): {exc.user_message or exc}"
        ) from exc
