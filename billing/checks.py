"""
System checks of the EPSILON settings (billing/conf.py's options): a wrong or unknown
option would bill wrongly rather than fail loudly, so `manage.py check` (run by every
server and by `migrate`) names each one and what it takes.
"""

from django.conf import settings
from django.core import checks

from .conf import problems


@checks.register(checks.Tags.compatibility)
def check_epsilon_options(app_configs=None, **kwargs):
    return [
        checks.Error(problem, hint="See billing/conf.py (OPTIONS) for every option, its variable and default.", id="billing.E001")
        for problem in problems(getattr(settings, "EPSILON", {}))
    ]
