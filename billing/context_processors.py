"""What every admin page shows about where Stripe is: the real API, or the local emulator."""

from django.conf import settings

from . import stripe_api


def stripe_mode(request) -> dict:
    return {"epsilon_stripe": {"emulator": stripe_api.uses_emulator(), "api_base": settings.STRIPE_API_BASE}}
