"""The embedded meter (the embedded_meter app) as the billing engine's UsageSource, beside OpenMeter's."""

from collections.abc import Sequence
from decimal import Decimal

from django.db import DatabaseError

from embedded_meter import definitions, selectors
from embedded_meter.models import Event, MeterDefinition
from epsilon.timewindows import WindowSize

from .base import UsageRequest, UsageSource, UsageSourceError


class EmbeddedUsageSource(UsageSource):
    name = "embedded"

    def check(self) -> str:
        """Both of the meter's tables answer: two indexed LIMIT 1 reads, whatever their size."""
        try:
            list(MeterDefinition.objects.order_by().values_list("pk", flat=True)[:1])
            list(Event.objects.order_by().values_list("pk", flat=True)[:1])
        except DatabaseError as exc:
            raise UsageSourceError(f"The embedded meter's tables cannot be read: {exc}") from exc
        return "embedded meter: tables readable"

    def totals(
        self, meter_slug: str, window_size: str, requests: Sequence[UsageRequest]
    ) -> dict[UsageRequest, Decimal]:
        meter = definitions.get_meter(meter_slug)
        if meter is None:
            raise UsageSourceError(
                f"Unknown meter slug {meter_slug!r} in the embedded meter: define it in the "
                f"admin (Embedded meter > Meter definitions) or in EMBEDDED_METERS."
            )
        if window_size not in WindowSize.values:
            raise UsageSourceError(f"Unknown window size {window_size!r}: use one of {', '.join(WindowSize.values)}.")
        if selectors.finer_than(window_size, meter.window_size):
            raise UsageSourceError(
                f"Meter {meter_slug!r} is defined with {meter.window_size} windows and cannot be "
                f"read by {window_size}; change one of the two window sizes."
            )
        for request in requests:
            if not (selectors.is_aligned(request.start, window_size) and selectors.is_aligned(request.end, window_size)):
                raise UsageSourceError(
                    f"Usage period {request.start.isoformat()} to {request.end.isoformat()} of "
                    f"{request.subject} is not aligned to {window_size} windows."
                )
        return selectors.totals(meter, requests)
