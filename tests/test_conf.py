"""The Epsilon options (billing/conf.py): each read once, typed, checked, never silently defaulted."""

import environ
import pytest
from billing.checks import check_epsilon_options
from django.core.exceptions import ImproperlyConfigured

from billing.conf import OPTIONS, conf, from_environment


def test_every_option_reads_its_variable_with_its_type(monkeypatch):
    monkeypatch.setenv("EPSILON_PENDING_LEASE_SECONDS", "42")
    monkeypatch.setenv("EPSILON_WINDOW_SIZE", "DAY")
    values = from_environment(environ.Env())
    assert values["PENDING_LEASE_SECONDS"] == 42 and values["DEFAULT_WINDOW_SIZE"] == "DAY"
    assert set(values) == {option.name for option in OPTIONS}


def test_an_override_is_seen_at_once_and_a_misspelt_option_is_an_error(settings):
    settings.EPSILON = {**settings.EPSILON, "PENDING_LEASE_SECONDS": 7}
    assert conf.PENDING_LEASE_SECONDS == 7 and conf.pending_lease.total_seconds() == 7
    with pytest.raises(AttributeError, match="PENDING_LEASE is not an Epsilon option"):
        conf.PENDING_LEASE


@pytest.mark.parametrize(("name", "value", "says"), [
    ("STRIPE_METER_EVENT_API", "v3", "use one of 'auto', 'v1', 'v2'"),
    ("LATE_USAGE", "bill", "use one of 'carry', 'record'"),
    ("PENDING_LEASE_SECONDS", "300", "it takes int values"),
    ("STRIPE_SEND_CONCURRENCY", 0, "at least 1"),
])
def test_a_wrong_value_is_refused_when_read_and_by_manage_py_check(settings, name, value, says):
    settings.EPSILON = {**settings.EPSILON, name: value}
    with pytest.raises(ImproperlyConfigured, match=says):
        getattr(conf, name)
    errors = [e for e in check_epsilon_options() if e.id == "billing.E001"]
    assert len(errors) == 1 and says in errors[0].msg and f"EPSILON_{name}" in errors[0].msg


def test_an_unknown_option_in_the_settings_is_reported(settings):
    settings.EPSILON = {**settings.EPSILON, "LATE_USGE": "record"}
    [error] = [e for e in check_epsilon_options() if e.id == "billing.E001"]
    assert "LATE_USGE" in error.msg and "misspelt" in error.msg


@pytest.mark.django_db
def test_manage_py_check_fails_on_a_wrong_option(settings):
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    settings.EPSILON = {**settings.EPSILON, "STRIPE_METER_EVENT_API": "v3"}
    with pytest.raises(SystemCheckError, match="billing.E001"):
        call_command("check")
