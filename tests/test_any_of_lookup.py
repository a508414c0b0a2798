"""`__any_of` (epsilon/lookups.py): the rows of `__in`, with one array parameter on PostgreSQL."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from djstripe.models import Customer

from billing.models import SubscriptionItemChange

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def changes():
    return [
        SubscriptionItemChange.objects.create(item_id=f"si_{n}", subscription_id="sub_1", kind="removed", at=T0 + timedelta(hours=n))
        for n in range(6)
    ]


def _ids(queryset):
    return sorted(queryset.values_list("pk", flat=True))


def test_any_of_matches_the_rows_of_in(changes):
    cases = [
        {"item_id": ["si_1", "si_3", "si_3", "si_9"]},  # duplicates and a value matching nothing
        {"pk": [changes[0].pk, changes[5].pk]},
        {"at": [T0 + timedelta(hours=2), T0 + timedelta(hours=4)]},  # aware datetimes
        {"item_id": ["si_2", None]},  # NULL is dropped, as __in drops it
    ]
    for case in cases:
        (field, values), = case.items()
        expected = _ids(SubscriptionItemChange.objects.filter(**{f"{field}__in": values}))
        assert expected, case
        assert _ids(SubscriptionItemChange.objects.filter(**{f"{field}__any_of": values})) == expected


def test_an_empty_list_matches_nothing(changes):
    assert not SubscriptionItemChange.objects.filter(item_id__any_of=[]).exists()
    assert SubscriptionItemChange.objects.exclude(item_id__any_of=[]).count() == len(changes)


def test_a_foreign_key_and_a_related_field_take_it():
    from billing.models import UsageReport

    customer_ids = ["cus_a", "cus_b"]
    assert list(UsageReport.objects.filter(customer_id__any_of=customer_ids)) == []
    assert list(Customer.objects.filter(id__any_of=customer_ids)) == []


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the array form is PostgreSQL's")
def test_on_postgresql_a_thousand_values_are_one_parameter(changes):
    values = [f"si_{n}" for n in range(1000)]
    with CaptureQueriesContext(connection) as captured:
        found = _ids(SubscriptionItemChange.objects.filter(item_id__any_of=values))
    assert found == _ids(SubscriptionItemChange.objects.all())
    sql = captured.captured_queries[0]["sql"]
    assert "= ANY(" in sql and " IN (" not in sql
