"""
System checks of the EPSILON settings whose wrong value would bill wrongly, not fail
loudly: `manage.py check` (and every command) says what is wrong and what is allowed.
"""

from django.conf import settings
from django.core import checks

LATE_USAGE_MODES = ("carry", "record")


@checks.register(checks.Tags.compatibility)
def check_late_usage(app_configs=None, **kwargs):
    mode = settings.EPSILON.get("LATE_USAGE")
    if mode in LATE_USAGE_MODES:
        return []
    return [checks.Error(
        f"EPSILON['LATE_USAGE'] (EPSILON_LATE_USAGE) is {mode!r}",
        hint="Use 'carry' (bill late usage of a finalized period with the next one) or 'record' (keep it in the ledger, bill it nowhere).",
        id="billing.E001",
    )]
