from django.db import migrations

# A snapshot of definitions.DEFAULT_METERS at the time: the meter Epsilon's Stripe
# meter reads by default (EPSILON["SOURCE_METER_SLUG"] = "m1"), editable in the admin.
DEFAULT_METER = {
    "slug": "m1",
    "name": "Epsilon execution duration",
    "description": "Billed execution time of Epsilon functions: whole seconds, each execution rounded up.",
    "event_type": "epsilon.execution",
    "aggregation": "SUM",
    "value_property": "$.billed_seconds",
    "group_by": {},
    "window_size": "HOUR",
}


def seed(apps, schema_editor):
    MeterDefinition = apps.get_model("embedded_meter", "MeterDefinition")
    fields = dict(DEFAULT_METER)
    MeterDefinition.objects.get_or_create(slug=fields.pop("slug"), defaults=fields)


class Migration(migrations.Migration):
    dependencies = [("embedded_meter", "0001_initial")]

    # Reversing leaves the row: it may have been edited since.
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
