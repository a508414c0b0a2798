"""
The Stripe webhook endpoint that tells Epsilon when billing periods close.

Created the way dj-stripe's admin creates one: the URL carries a dj-stripe uuid, and
dj-stripe's WebhookEndpoint row keeps the signing secret that Stripe shows only once.
"""

from uuid import uuid4

from django.conf import settings
from django.urls import reverse
from djstripe.models import WebhookEndpoint

from .. import stripe_api
from ..models import StripeEventDestination
from .stripe_setup import EnsuredObject

ENABLED_EVENTS = [
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.created",
    "invoice.finalized",
    "invoice.paid",
    "customer.created",
    "customer.updated",
    "customer.deleted",
    "price.created",
    "price.updated",
    "product.created",
    "product.updated",
]


DESTINATION_NAME = "Epsilon Billing: meter errors"
DESTINATION_EVENTS = ["v1.billing.meter.error_report_triggered", "v1.billing.meter.no_meter_found"]


def ensure_event_destination(base_url: str, *, client=None) -> EnsuredObject:
    """
    Find this site's event destination for Stripe's meter error reports (one Stripe has
    and whose secret we hold) or create it; its secret is shown only on creation.
    """
    client = client or stripe_api.get_client()
    url = base_url.rstrip("/") + reverse("stripe-event-destination")
    known = set(StripeEventDestination.objects.filter(url=url, livemode=settings.STRIPE_LIVE_MODE).values_list("id", flat=True))
    for destination in client.v2.core.event_destinations.list().auto_paging_iter():
        if destination.id in known and destination.status == "enabled":
            return EnsuredObject("event destination", destination.id, False, bool(destination.livemode))
    destination = client.v2.core.event_destinations.create({
        "name": DESTINATION_NAME, "type": "webhook_endpoint", "event_payload": "thin",
        "enabled_events": DESTINATION_EVENTS, "webhook_endpoint": {"url": url},
        "include": ["webhook_endpoint.signing_secret"],
    })
    StripeEventDestination.objects.create(
        id=destination.id, livemode=bool(destination.livemode), url=url,
        secret=destination.webhook_endpoint.signing_secret,
    )
    return EnsuredObject("event destination", destination.id, True, bool(destination.livemode))


def webhook_url(base_url: str, djstripe_uuid) -> str:
    return base_url.rstrip("/") + reverse("djstripe:djstripe_webhook_by_uuid", kwargs={"uuid": djstripe_uuid})


def ensure_webhook_endpoint(base_url: str, *, client=None) -> EnsuredObject:
    """Find this site's endpoint (one Stripe has and whose secret we hold) or create it."""
    client = client or stripe_api.get_client()
    prefix = webhook_url(base_url, uuid4()).rsplit("/webhook/", 1)[0] + "/webhook/"
    known = {
        e.id: e
        for e in WebhookEndpoint.objects.filter(url__startswith=prefix, livemode=settings.STRIPE_LIVE_MODE)
        .exclude(secret="")
    }
    for endpoint in client.v1.webhook_endpoints.list({"limit": 100}).auto_paging_iter():
        if endpoint.id in known and endpoint.status == "enabled":
            return EnsuredObject("webhook endpoint", endpoint.id, False, bool(endpoint.livemode))

    djstripe_uuid = uuid4()
    endpoint = client.v1.webhook_endpoints.create(
        {
            "url": webhook_url(base_url, djstripe_uuid),
            "enabled_events": ENABLED_EVENTS,
            "api_version": settings.STRIPE_API_VERSION,
            "description": "Epsilon Billing: report usage when billing periods close",
            "metadata": {"djstripe_uuid": str(djstripe_uuid)},
        }
    )
    WebhookEndpoint.sync_from_stripe_data(endpoint, api_key=settings.STRIPE_SECRET_KEY)
    return EnsuredObject("webhook endpoint", endpoint.id, True, bool(endpoint.livemode))
