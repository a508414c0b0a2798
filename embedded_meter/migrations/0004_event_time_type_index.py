"""
One (time, type) index in place of (type, time) and (time): it serves the queries both
served (see Event.Meta), and each index costs every ingested event PostgreSQL CPU
(bench/README.md, "Embedded meter", 2026-12-07). On PostgreSQL, CREATE INDEX blocks
writes to the events table while it builds (about a second per million events here).
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("embedded_meter", "0003_default_meter_in_minutes"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="event",
            index=models.Index(fields=["time", "type"], name="em_event_time_type"),
        ),
        migrations.RemoveIndex(model_name="event", name="em_event_type_time"),
        migrations.RemoveIndex(model_name="event", name="em_event_time"),
    ]
