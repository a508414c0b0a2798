import re

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from epsilon.timewindows import WindowSize

from . import jsonpath

# OpenMeter's slug and group-by key rules.
SLUG_PATTERN = r"^[a-z0-9]+(?:_[a-z0-9]+)*$"
GROUP_BY_KEY = re.compile(r"^[A-Za-z0-9_]+$")


class Aggregation(models.TextChoices):
    """The OpenMeter aggregations the embedded meter implements."""

    SUM = "SUM", "Sum"
    COUNT = "COUNT", "Count"
    MAX = "MAX", "Max"
    UNIQUE_COUNT = "UNIQUE_COUNT", "Unique count"


#: Aggregations whose value property must hold a number (or a numeric string).
NUMERIC_AGGREGATIONS = {Aggregation.SUM, Aggregation.MAX}

#: Finer to coarser; MONTH is a query window only (meters are defined by MINUTE, HOUR or DAY).
WINDOW_ORDER = {WindowSize.MINUTE: 0, WindowSize.HOUR: 1, WindowSize.DAY: 2, "MONTH": 3}


class MeterDefinition(models.Model):
    """How to match and aggregate events, mirroring OpenMeter's `Meter` schema."""

    slug = models.CharField(
        max_length=64,
        unique=True,
        validators=[RegexValidator(SLUG_PATTERN, "Lowercase letters, digits and single underscores.")],
        help_text="OpenMeter slug, e.g. m1; billing meters refer to it.",
    )
    name = models.CharField(max_length=256, blank=True, help_text="Display name; defaults to the slug.")
    description = models.CharField(max_length=1024, blank=True)
    event_type = models.CharField(
        max_length=255, help_text="The CloudEvents `type` this meter counts, e.g. epsilon.execution."
    )
    aggregation = models.CharField(max_length=16, choices=Aggregation.choices)
    value_property = models.CharField(
        max_length=255,
        blank=True,
        help_text="JSONPath into the event's data, e.g. $.billed_seconds (ignored for COUNT). "
        "SUM and MAX need a number or numeric string there, UNIQUE_COUNT a string.",
    )
    group_by = models.JSONField(
        default=dict,
        blank=True,
        help_text='Named JSONPaths to group by, e.g. {"region": "$.region"}.',
    )
    window_size = models.CharField(
        max_length=8,
        choices=WindowSize.choices,
        default=WindowSize.HOUR,
        help_text="The finest window this meter can be queried by.",
    )
    event_from = models.DateTimeField(
        null=True, blank=True, help_text="Ignore events before this time (OpenMeter's eventFrom)."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]
        constraints = [
            models.CheckConstraint(
                condition=Q(aggregation__in=Aggregation.values),
                name="embedded_meter_aggregation_valid",
            ),
            models.CheckConstraint(
                condition=Q(aggregation=Aggregation.COUNT) | ~Q(value_property=""),
                name="embedded_meter_value_property_required",
            ),
            models.CheckConstraint(
                condition=Q(window_size__in=WindowSize.values),
                name="embedded_meter_window_size_valid",
            ),
        ]

    def __str__(self):
        return self.slug

    def clean(self):
        errors = {}
        if self.aggregation != Aggregation.COUNT:
            if not self.value_property:
                errors["value_property"] = f"{self.aggregation} needs a value property, e.g. $.billed_seconds."
            else:
                try:
                    jsonpath.parse(self.value_property)
                except ValueError as exc:
                    errors["value_property"] = str(exc)
        if not isinstance(self.group_by, dict):
            errors["group_by"] = 'Group by must be an object of names to JSONPaths, e.g. {"region": "$.region"}.'
        else:
            for key, path in self.group_by.items():
                if not GROUP_BY_KEY.match(key) or key == "subject":
                    errors["group_by"] = f"Group by key {key!r} must be letters, digits and underscores, and not 'subject'."
                    break
                try:
                    jsonpath.parse(path)
                except ValueError as exc:
                    errors["group_by"] = f"{key}: {exc}"
                    break
        if errors:
            raise ValidationError(errors)

    @property
    def value_keys(self) -> tuple[str, ...]:
        return jsonpath.parse(self.value_property)

    @property
    def group_by_keys(self) -> dict[str, tuple[str, ...]]:
        return {key: jsonpath.parse(path) for key, path in (self.group_by or {}).items()}

    @classmethod
    def from_openmeter(cls, spec: dict) -> "MeterDefinition":
        """An unsaved definition from OpenMeter-shaped fields (as in EMBEDDED_METERS)."""
        return cls(
            slug=spec["slug"],
            name=spec.get("name", ""),
            description=spec.get("description", ""),
            event_type=spec["eventType"],
            aggregation=spec["aggregation"],
            value_property=spec.get("valueProperty") or "",
            group_by=spec.get("groupBy") or {},
            window_size=spec.get("windowSize", WindowSize.HOUR),
            event_from=spec.get("eventFrom"),
        )

    def to_openmeter(self) -> dict:
        """This definition in OpenMeter's `Meter` JSON shape."""
        body = {
            # No ULIDs here: the slug is the id (OpenMeter accepts either in URLs).
            "id": self.slug,
            "slug": self.slug,
            "name": self.name or self.slug,
            "description": self.description,
            "aggregation": self.aggregation,
            "eventType": self.event_type,
            "groupBy": self.group_by or {},
            "windowSize": self.window_size,
        }
        if self.aggregation != Aggregation.COUNT:
            body["valueProperty"] = self.value_property
        if self.event_from:
            body["eventFrom"] = self.event_from.isoformat().replace("+00:00", "Z")
        if self.created_at:
            body["createdAt"] = self.created_at.isoformat().replace("+00:00", "Z")
            body["updatedAt"] = self.updated_at.isoformat().replace("+00:00", "Z")
        return body


class Event(models.Model):
    """One ingested CloudEvent. Values are extracted from `data` at query time, per meter."""

    event_id = models.CharField("id", max_length=255, help_text="The CloudEvents id.")
    source = models.CharField(max_length=255)
    type = models.CharField(max_length=255)
    subject = models.CharField(max_length=255)
    time = models.DateTimeField(help_text="When the usage happened (UTC).")
    data = models.JSONField(null=True, blank=True)
    ingested_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # CloudEvents identity: a re-sent event is the same event, never counted twice.
            models.UniqueConstraint(fields=["source", "event_id"], name="embedded_meter_event_source_id"),
        ]
        # Every index is paid for by every ingested event (about 5 to 8 us of PostgreSQL CPU
        # each with 1M rows: bench/README.md, "Embedded meter"), so there are as few as the
        # queries need: the primary key, the (source, id) constraint and these two.
        indexes = [
            # Meter queries: one type, some subjects, a time range (totals, queries by subject).
            models.Index(fields=["type", "subject", "time"], name="em_event_type_subject_time"),
            # Time first: meter queries over all subjects (a time range, the type checked in
            # the index), the first event of a type (OpenMeter's default `from`), and the
            # admin's newest-first list and date hierarchy. It replaced (type, time) and (time).
            models.Index(fields=["time", "type"], name="em_event_time_type"),
        ]

    def __str__(self):
        return f"{self.type} {self.subject} {self.time:%Y-%m-%d %H:%M:%S} ({self.source}/{self.event_id})"
