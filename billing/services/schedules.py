"""The periodic usage report, as a django-q2 schedule run by `manage.py qcluster`."""

from django.db import transaction
from django_q.models import Schedule

from ..conf import conf

SCHEDULE_NAME = "Epsilon: report usage to Stripe"
SCHEDULE_FUNC = "billing.tasks.report_usage_on_schedule"


@transaction.atomic
def ensure_report_schedule(minutes: int | None = None) -> tuple[Schedule, bool]:
    """
    Create or update the one reporting schedule. django-q2 does not make schedule
    names unique, so extra copies (from older setups) are removed rather than run twice.
    """
    minutes = minutes or conf.REPORT_INTERVAL_MINUTES
    copies = Schedule.objects.select_for_update().filter(name=SCHEDULE_NAME).order_by("id")
    keep = copies.first()
    if keep:
        copies.exclude(pk=keep.pk).delete()
    schedule, created = Schedule.objects.update_or_create(
        name=SCHEDULE_NAME,
        defaults={
            "func": SCHEDULE_FUNC,
            "schedule_type": Schedule.MINUTES,
            "minutes": minutes,
            "repeats": -1,
        },
    )
    return schedule, created
