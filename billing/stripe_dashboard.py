"""Links to the Stripe dashboard page of an object, in test or live mode."""

DASHBOARD_BASE = "https://dashboard.stripe.com/"

# Stripe id prefix -> dashboard path segment.
PATHS_BY_PREFIX = {
    "prod_": "products",
    "price_": "prices",
    "cus_": "customers",
    "sub_": "subscriptions",
    "in_": "invoices",
    "mtr_": "billing/meters",
    "meter_": "billing/meters",
    "evt_": "events",
    "we_": "webhooks",
}


def url_for(stripe_id: str, livemode: bool) -> str:
    """The dashboard URL of a Stripe object, or "" for ids without a page of their own."""
    if not stripe_id:
        return ""
    for prefix, path in PATHS_BY_PREFIX.items():
        if stripe_id.startswith(prefix):
            mode = "" if livemode else "test/"
            return f"{DASHBOARD_BASE}{mode}{path}/{stripe_id}"
    return ""
