"""Deliver a stored Stripe event to the running app again, signed as Stripe signs it."""

import json
import time

import httpx
import stripe
from djstripe.models import WebhookEndpoint


def replay(event: dict) -> int:
    """Deliver a stored Stripe event again, signed as Stripe signs it, over HTTP."""
    endpoint = WebhookEndpoint.objects.get()
    body = json.dumps(event)
    timestamp = int(time.time())
    signature = stripe.WebhookSignature._compute_signature(f"{timestamp}.{body}", endpoint.secret)
    response = httpx.post(
        endpoint.url, content=body, timeout=30,
        headers={"Content-Type": "application/json", "Stripe-Signature": f"t={timestamp},v1={signature}"},
    )
    return response.status_code
