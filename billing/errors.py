"""
The application's errors: every refusal a service makes to an operator is a
BillingError whose message says what happened and what to do, so entry points (admin,
commands, tasks) show it as it is instead of a traceback (after Zulip's BillingError).
"""


class BillingError(Exception):
    """A request the billing services refuse, with a message meant for an operator."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ReportNotResolvable(BillingError):
    """A report in doubt cannot be settled the way asked (see stale_reports)."""
