"""JSON out, with Decimals written as exact numbers (never through float)."""

from __future__ import annotations

import json
import re
import secrets
from decimal import Decimal

from .store import format_decimal

# Decimals travel through json.dumps as tagged strings and are unquoted after.
_TAG = "dec" + secrets.token_hex(6)
_TAGGED = re.compile('"' + _TAG + r':(-?[0-9]+(?:\.[0-9]+)?)"')


def _tag(value):
    """json's `default` hook: a Decimal becomes a tagged string, unquoted after."""
    if isinstance(value, Decimal):
        return f"{_TAG}:{format_decimal(value)}"
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dumps(value, indent=2) -> str:
    """`indent=None`: compact, by json's C encoder (large control API answers)."""
    return _TAGGED.sub(r"\1", json.dumps(value, indent=indent, default=_tag))
