from django.db import migrations


def minutes(apps, schema_editor):
    # The seeded m1 kept HOUR windows: billing reads partial windows where service began or
    # ended by the minute, so the meter must keep minutes (coarser queries still work).
    MeterDefinition = apps.get_model("embedded_meter", "MeterDefinition")
    MeterDefinition.objects.filter(slug="m1", window_size="HOUR").update(window_size="MINUTE")


class Migration(migrations.Migration):
    dependencies = [("embedded_meter", "0002_seed_default_meter")]

    operations = [migrations.RunPython(minutes, migrations.RunPython.noop)]
