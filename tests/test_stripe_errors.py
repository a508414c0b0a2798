"""A bad key or an unreachable Stripe gives one clear message and a non-zero exit."""

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import respx
from django.core.management import CommandError, call_command

ROOT = Path(__file__).resolve().parent.parent
VALID_LOOKING_KEY = "sk_test_" + "a1B2c3D4" * 4

pytestmark = pytest.mark.django_db


@pytest.fixture
def real_stripe_settings(settings):
    settings.STRIPE_SECRET_KEY = VALID_LOOKING_KEY
    settings.STRIPE_API_BASE = "https://api.stripe.com"
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    return settings


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "No Stripe secret key: set STRIPE_SECRET_KEY"),
        ("sk_test_tooShort", "is not a Stripe secret key"),
        ("pk_test_" + "a" * 30, "is not a Stripe secret key"),  # a publishable key
    ],
)
def test_a_missing_or_malformed_key_is_refused_before_calling_stripe(real_stripe_settings, key, message):
    real_stripe_settings.STRIPE_SECRET_KEY = key
    with respx.mock(assert_all_called=False) as stripe_http:
        with pytest.raises(CommandError, match=message):
            call_command("epsilon_setup")
    assert not stripe_http.calls


def test_a_key_stripe_rejects_is_named_redacted(real_stripe_settings):
    with respx.mock(base_url="https://api.stripe.com") as stripe_http:
        stripe_http.get("/v1/billing/meters").mock(
            return_value=httpx.Response(
                401,
                json={
                    "error": {
                        "type": "invalid_request_error",
                        "message": "Invalid API Key provided: sk_test_****a1B2",
                    }
                },
            )
        )
        with pytest.raises(CommandError) as raised:
            call_command("epsilon_setup")
    message = str(raised.value)
    assert "Stripe rejected the API key sk_test_...c3D4" in message
    assert "Invalid API Key provided" in message
    assert VALID_LOOKING_KEY not in message  # never print the secret


def test_unreachable_stripe_is_one_line_and_exit_code_1(tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "STRIPE_API_BASE": "http://127.0.0.1:9",  # the discard port: nothing listens
        "STRIPE_MAX_NETWORK_RETRIES": "0",
    }
    env.pop("STRIPE_SECRET_KEY", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "epsilon_setup"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "CommandError: Could not reach the Stripe API at http://127.0.0.1:9" in result.stderr
    assert "make emulator" in result.stderr
