"""
Stripe's event destination: thin events, signed like webhooks. Only meter error
reports matter here; the handler verifies the signature and queues the work (fetching
the event's data from Stripe) after commit, as the webhook handlers do.
"""

import json
import logging

import stripe
from django.conf import settings
from django.db import transaction
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from django_q.tasks import async_task

from .models import StripeEventDestination
from .services.meter_errors import ERROR_EVENT_TYPES

logger = logging.getLogger(__name__)


def verified(payload: str, signature: str | None, secrets: list[str]) -> str:
    """The payload, if one of the secrets signed it; else SignatureVerificationError."""
    error = None
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(payload, signature, secret, 300)
            return payload
        except stripe.SignatureVerificationError as exc:
            error = exc
    raise error


@csrf_exempt
@require_POST
def event_destination(request):
    secrets = [settings.STRIPE_EVENT_DESTINATION_SECRET] if settings.STRIPE_EVENT_DESTINATION_SECRET else []
    secrets += list(StripeEventDestination.objects.values_list("secret", flat=True))
    if not secrets:
        return JsonResponse({"error": "no event destination is set up (epsilon_setup --webhook-url): no event is trusted"}, status=400)
    try:
        notification = json.loads(verified(request.body.decode(), request.headers.get("Stripe-Signature"), secrets))
    except (stripe.SignatureVerificationError, ValueError) as exc:
        return JsonResponse({"error": f"not a signed Stripe event: {exc}"}, status=400)
    if notification.get("type") in ERROR_EVENT_TYPES:
        event_id = notification["id"]
        transaction.on_commit(lambda: async_task(
            "billing.tasks.apply_meter_error_report", event_id, task_name=f"meter error report {event_id}"
        ))
        logger.warning("Stripe meter error report %s queued", event_id)
    return HttpResponse(status=200)
