"""
The interface every usage source implements: the embedded meter and OpenMeter.

The reporting engine asks for many (subject, period) totals of one meter at once, so
a source can answer them with a constant number of queries (grouped by subject),
never one request per customer.
"""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from decimal import Decimal

from epsilon.usage import UsageRequest

from ..errors import BillingError

__all__ = ["UsageRequest", "UsageSource", "UsageSourceError"]


class UsageSourceError(BillingError):
    """The source could not answer; the message is shown to operators as is."""


class UsageSource(ABC):
    #: Shown in command output and the audit, e.g. "embedded" or "openmeter".
    name: str

    @abstractmethod
    def totals(
        self, meter_slug: str, window_size: str, requests: Sequence[UsageRequest]
    ) -> dict[UsageRequest, Decimal]:
        """
        The exact total of `meter_slug` for each request, as Decimal (0 when there was
        no usage). `window_size` is MINUTE, HOUR or DAY; every start and end is aligned
        to it. Raises UsageSourceError when the source is unreachable or refuses.
        """

    def check(self) -> str | None:
        """
        Whether the source can answer at all, cheaply and quickly (for /readyz): raises
        UsageSourceError when it cannot. May return a short description of what was
        checked. The default checks nothing.
        """
        return None
