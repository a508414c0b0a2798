"""
`make demo` ends with an admin login: a superuser with a password printed once, made
only for the local demo (DEBUG on, the emulator's key, a database on this machine).
"""

import importlib.util
from pathlib import Path
from unittest import mock

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import authenticate, get_user_model

from billing.errors import BillingError

pytestmark = pytest.mark.django_db
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "demo.py"


@pytest.fixture
def demo():
    spec = importlib.util.spec_from_file_location("demo_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def local_demo(settings):
    settings.DEBUG = True
    settings.STRIPE_SECRET_KEY = settings.STRIPE_EMULATOR_KEY
    settings.STRIPE_API_BASE = settings.STRIPE_EMULATOR_URL
    return settings


def test_the_local_demo_gets_a_working_superuser_once(demo, local_demo):
    password = demo.create_demo_login()

    user = authenticate(username="demo", password=password)
    assert user is not None and user.is_superuser and user.is_staff
    assert len(password) >= 16
    assert demo.create_demo_login() is None  # a rerun keeps it and prints no password
    assert get_user_model().objects.filter(username="demo").count() == 1


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"DEBUG": False}, "DJANGO_DEBUG is off"),
        ({"STRIPE_SECRET_KEY": "sk_test_" + "a" * 24, "STRIPE_API_BASE": "https://api.stripe.com"}, "real Stripe"),
        ({"STRIPE_API_BASE": "https://api.stripe.com"}, "real Stripe"),
    ],
    ids=["debug-off", "real-key", "real-api"],
)
def test_no_demo_login_next_to_anything_real(demo, local_demo, change, reason):
    for name, value in change.items():
        setattr(local_demo, name, value)
    with pytest.raises(BillingError, match=reason):
        demo.create_demo_login()
    assert not get_user_model().objects.filter(username="demo").exists()


def test_no_demo_login_on_a_remote_database(demo, local_demo):
    remote = {**django_settings.DATABASES["default"], "ENGINE": "django.db.backends.postgresql", "HOST": "db.example.com"}
    with mock.patch.dict(django_settings.DATABASES, {"default": remote}):
        assert "db.example.com" in demo.demo_login_refusal()
    assert demo.demo_login_refusal() == ""
