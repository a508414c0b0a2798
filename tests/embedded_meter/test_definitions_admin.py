import importlib

import pytest
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.urls import reverse

from embedded_meter import definitions
from embedded_meter.models import Event, MeterDefinition

from .conftest import make_meter

pytestmark = pytest.mark.django_db


def test_default_meter_comes_from_the_code_until_the_database_defines_it():
    assert definitions.get_meter("m1").event_type == "epsilon.execution"
    make_meter(slug="m1", event_type="renamed")
    assert definitions.get_meter("m1").event_type == "renamed"
    assert definitions.all_meters()["m1"].event_type == "renamed"


def test_meters_from_the_setting_replace_the_default(settings):
    settings.EMBEDDED_METERS = [{"slug": "calls", "eventType": "call", "aggregation": "COUNT"}]
    assert set(definitions.all_meters()) == {"calls"}
    assert definitions.get_meter("m1") is None


def test_an_invalid_meter_setting_fails_loudly(settings):
    settings.EMBEDDED_METERS = [{"slug": "bad", "eventType": "x", "aggregation": "SUM"}]
    with pytest.raises(ImproperlyConfigured, match="value_property"):
        definitions.all_meters()


@pytest.mark.parametrize(
    "fields, error_field",
    [
        ({"aggregation": "SUM", "value_property": ""}, "value_property"),
        ({"value_property": "billed_seconds"}, "value_property"),
        ({"value_property": "$.items[0]"}, "value_property"),
        ({"slug": "Bad-Slug"}, "slug"),
        ({"group_by": {"subject": "$.x"}}, "group_by"),
        ({"aggregation": "AVG"}, "aggregation"),
    ],
)
def test_definition_validation(fields, error_field):
    meter = MeterDefinition(**{"slug": "ok", "event_type": "t", "aggregation": "SUM", "value_property": "$.v", **fields})
    with pytest.raises(ValidationError) as exc:
        meter.full_clean()
    assert error_field in exc.value.message_dict


def test_seed_migration_creates_m1_once():
    seed = importlib.import_module("embedded_meter.migrations.0002_seed_default_meter").seed
    seed(apps, None)
    seed(apps, None)
    m1 = MeterDefinition.objects.get()
    assert (m1.slug, m1.event_type, m1.aggregation, m1.value_property, m1.window_size) == (
        "m1", "epsilon.execution", "SUM", "$.billed_seconds", "HOUR",
    )


def test_admin_edits_definitions(admin_client):
    meter = make_meter()
    assert admin_client.get(reverse("admin:embedded_meter_meterdefinition_change", args=[meter.pk])).status_code == 200
    response = admin_client.post(
        reverse("admin:embedded_meter_meterdefinition_add"),
        {"slug": "calls", "name": "", "description": "", "event_type": "call", "aggregation": "COUNT",
         "value_property": "", "group_by": "{}", "window_size": "HOUR", "event_from": ""},
    )
    assert response.status_code == 302, response.content
    assert MeterDefinition.objects.filter(slug="calls").exists()


def test_admin_events_are_read_only_with_filters_search_and_dates(admin_client):
    from datetime import UTC, datetime

    event = Event.objects.create(event_id="e1", source="s", type="epsilon.execution", subject="cus_Find", time=datetime(2026, 11, 1, tzinfo=UTC), data={})
    changelist = reverse("admin:embedded_meter_event_changelist")
    for params in ({}, {"q": "cus_Find"}, {"type": "epsilon.execution"}, {"subject": "cus_Find"}, {"time__year": "2026"}):
        response = admin_client.get(changelist, params)
        assert response.status_code == 200
        assert "cus_Find" in response.content.decode()
    assert admin_client.get(reverse("admin:embedded_meter_event_add")).status_code == 403
    detail = admin_client.get(reverse("admin:embedded_meter_event_change", args=[event.pk]))
    assert detail.status_code == 200 and "Save" not in detail.content.decode()
    assert admin_client.post(reverse("admin:embedded_meter_event_delete", args=[event.pk]), {"post": "yes"}).status_code == 403
    assert Event.objects.filter(pk=event.pk).exists()
