"""
One place that turns settings into a configured Stripe client.

dj-stripe calls stripe-python's module-level API, and our services use a
`StripeClient`; both must agree on key, API base, version, retries and the
HTTP client (httpx, so respx can stub Stripe at the HTTP level in tests).
"""

import functools
import re
import time

import stripe
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from ops.metrics import observe_stripe_request  # never raises

# The format dj-stripe accepts (djstripe.models.api.API_KEY_REGEX), checked
# here first so a typo gives our message instead of a Stripe 401.
SECRET_KEY_RE = re.compile(r"^(sk|rk)_(test|live)_[A-Za-z0-9]{24,}$")
DEFAULT_API_BASE = "https://api.stripe.com"


def redact_key(key: str) -> str:
    prefix, _, secret = key.rpartition("_")
    return f"{prefix}_...{secret[-4:]}" if prefix else "(not a Stripe key)"


def check_secret_key(key: str) -> None:
    if not key:
        raise ImproperlyConfigured(
            "No Stripe secret key: set STRIPE_SECRET_KEY (sk_test_... or sk_live_...), "
            "or leave it unset to use the local Stripe emulator."
        )
    if not SECRET_KEY_RE.match(key):
        raise ImproperlyConfigured(
            f"STRIPE_SECRET_KEY {redact_key(key)!s} is not a Stripe secret key: it must "
            "look like sk_test_... or sk_live_... (or rk_ for a restricted key)."
        )


def is_live_mode() -> bool:
    return settings.STRIPE_LIVE_MODE


def uses_emulator() -> bool:
    return settings.STRIPE_API_BASE != DEFAULT_API_BASE


class MeasuredHTTPXClient(stripe.HTTPXClient):
    """stripe-python's httpx client, timing each request (retries too) for /metrics."""

    def request(self, method, url, headers, post_data=None):
        started = time.perf_counter()
        try:
            content, status, response_headers = super().request(method, url, headers, post_data)
        except Exception:
            observe_stripe_request(method, url, time.perf_counter() - started, None)
            raise
        observe_stripe_request(method, url, time.perf_counter() - started, status, content)
        return content, status, response_headers


@functools.lru_cache(maxsize=4)
def _http_client() -> stripe.HTTPXClient:
    return MeasuredHTTPXClient(allow_sync_methods=True, timeout=30)


def configure_stripe_module() -> None:
    """Point stripe-python's module-level API (used by dj-stripe) at our settings."""
    stripe.api_key = settings.STRIPE_SECRET_KEY
    stripe.api_base = settings.STRIPE_API_BASE
    stripe.api_version = settings.STRIPE_API_VERSION
    stripe.max_network_retries = settings.STRIPE_MAX_NETWORK_RETRIES
    stripe.default_http_client = _http_client()


def get_client() -> stripe.StripeClient:
    """A StripeClient for the configured account; raises ImproperlyConfigured on a bad key."""
    check_secret_key(settings.STRIPE_SECRET_KEY)
    return _client(
        settings.STRIPE_SECRET_KEY,
        settings.STRIPE_API_BASE,
        settings.STRIPE_METER_EVENTS_API_BASE,
        settings.STRIPE_API_VERSION,
        settings.STRIPE_MAX_NETWORK_RETRIES,
    )


def get_stream_client(session_token: str) -> stripe.StripeClient:
    """A client for Stripe's v2 meter event stream, authenticated by a session token."""
    return stripe.StripeClient(
        session_token,
        stripe_version=settings.STRIPE_API_VERSION,
        base_addresses={"api": settings.STRIPE_API_BASE, "meter_events": settings.STRIPE_METER_EVENTS_API_BASE},
        max_network_retries=0,
        http_client=_http_client(),
    )


@functools.lru_cache(maxsize=8)
def _client(api_key, api_base, meter_events_base, api_version, max_network_retries) -> stripe.StripeClient:
    return stripe.StripeClient(
        api_key,
        stripe_version=api_version,
        base_addresses={"api": api_base, "meter_events": meter_events_base},
        max_network_retries=max_network_retries,
        http_client=_http_client(),
    )
