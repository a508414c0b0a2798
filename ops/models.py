from django.db import models


class Alert(models.Model):
    """
    A problem the people in ADMINS (or the alert webhook) were told about: told once when
    it appears, kept open while it lasts, resolved when it is gone (told again only if it
    comes back). `key` names the problem itself (a period, a report), so the same failure
    seen by every hourly run is one alert, not one a run.
    """

    class Kind(models.TextChoices):
        FAILED = "failed", "Report failed"
        STALE = "stale", "Report in flight past its lease"
        RECONCILIATION = "reconciliation", "Reconciliation found a disagreement"

    key = models.CharField(max_length=255, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    summary = models.TextField()
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    notified_at = models.DateTimeField(null=True, blank=True, help_text="Empty until someone was told.")
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-first_seen"]

    def __str__(self):
        return f"{self.get_kind_display()}: {self.summary[:80]}"
