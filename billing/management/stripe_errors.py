"""Every error a billing service raises becomes one clear CommandError line (errors.operator_message)."""

import contextlib

from django.core.management.base import CommandError

from ..errors import OPERATOR_ERRORS, operator_message


@contextlib.contextmanager
def stripe_errors_as_command_errors():
    try:
        yield
    except OPERATOR_ERRORS as exc:
        raise CommandError(operator_message(exc)) from exc
